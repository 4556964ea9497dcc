"""benchmarks/stats_tiles.py: every candidate tile of the CUDA statistics kernel runs on the sites
of a real forward (slices of the fused projections included) and computes the tile in use's
statistics, so a GPU session's search spends its minutes on timing, not on a candidate that fails.
Here in Triton's interpreter, where the times mean nothing. The tile a search finds fastest is the
one benchmarks/trace_overhead.py --tile then traces in, which only CUDA runs."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

import pytest
import torch

from benchmarks import trace_overhead
from benchmarks.stats_tiles import (
    CANDIDATES,
    RECORD_PREFIX,
    TILES,
    fastest_in,
    fastest_tile,
    forward_sites,
    main,
    search,
)
from contracts.evidence import file_record, new_record
from contracts.spec import load_spec
from stack.kernels.site_stats import TILE, Tile
from stack.model import GPT, ModelConfig
from stack.train.presets import PRESETS

pytestmark = pytest.mark.triton  # the statistics kernels run here, interpreted on a CPU


def test_a_forward_shows_its_sites_as_the_tracer_sees_them_without_a_copy() -> None:
    """The sites kept are the forward's own tensors: the fused projection's q, k and v are views of
    one product (not contiguous), as the statistics kernel reads them in a trace."""
    config = ModelConfig(vocab=256, **PRESETS["smoke"]["model"])
    sites = forward_sites(GPT(config, seed=0).eval(), torch.randint(256, (1, 16)))
    assert len(sites) > 10
    assert any(not site.is_contiguous() for site in sites), "a fused projection's slice"


def test_every_candidate_tile_computes_the_statistics_of_the_tile_in_use() -> None:
    """Under bf16 autocast, whose sites mix bf16 products and float32 norms (each dtype's kernels:
    tests/kernels/test_kernel_compile.py compiles every one for Hopper)."""
    found = search("smoke", 256, 1, torch.device("cpu"), repeats=1, tokens=8, precisions=("bf16",))
    rows = found["bf16"]["site_stats"]["candidates"]
    assert len(rows) == 1 + len(CANDIDATES)
    assert max(row["relative_difference"] for row in rows) < 1e-9, rows
    assert found["bf16"]["site_stats"]["best"] in rows


def test_a_count_that_is_not_positive_is_refused_in_one_line(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as refused:
        main(["--repeats", "0"])
    assert refused.value.code == 2
    assert "must be at least 1" in capsys.readouterr().err


def _searched(ms: dict[str, dict[Tile, float]], off: dict[Tile, float] | None = None) -> dict:
    """A search as its record keeps it: per precision, each tile's milliseconds and its statistics'
    relative difference from the tile in use's (`off`, 0 where not named)."""
    return {
        precision: {
            "site_stats": {
                "candidates": [
                    {
                        "tile": dataclasses.asdict(tile),
                        "ms": time,
                        "relative_difference": (off or {}).get(tile, 0.0),
                    }
                    for tile, time in times.items()
                ]
            }
        }
        for precision, times in ms.items()
    }


def test_the_fastest_tile_is_the_least_time_over_both_precisions_of_one_that_computes_the_same() -> None:
    """One tile serves every dtype: the fastest under fp32 alone is not the pick when bf16 makes it
    the slower in all, and a faster tile whose statistics are statistics_rtol x 1.01 off is never
    picked (at 0.99 x it is)."""
    quick, steady, wrong = CANDIDATES[0], CANDIDATES[1], CANDIDATES[2]
    ms = {
        "fp32": {TILE: 9.0, quick: 4.0, steady: 5.0, wrong: 1.0},
        "bf16": {TILE: 10.0, quick: 8.0, steady: 6.0, wrong: 1.0},
    }
    rtol = load_spec().threshold("GATE-TRACE-002", "statistics_rtol")
    assert fastest_tile(_searched(ms, {wrong: 1.01 * rtol})) == steady
    assert fastest_tile(_searched(ms, {wrong: 0.99 * rtol})) == wrong
    every_one_off = {tile: 2 * rtol for tile in TILES.values()}
    with pytest.raises(ValueError, match="no candidate"):
        fastest_tile(_searched(ms, every_one_off))


def test_the_newest_search_filed_in_a_ledger_decides(tmp_path: Path) -> None:
    ledger = tmp_path / "ledger"
    with pytest.raises(FileNotFoundError, match=RECORD_PREFIX):
        fastest_in(ledger)
    for fastest, stamp in ((CANDIDATES[0], "20261201T000000"), (CANDIDATES[3], "20261201T000001")):
        record = new_record(
            "benchmark", f"{RECORD_PREFIX}-{stamp}", ["benchmarks/stats_tiles.py"], "an H200", "13.0"
        )
        record.metrics = {"search": _searched({"fp32": {TILE: 2.0, fastest: 1.0}})}
        file_record(ledger, record)
    assert fastest_in(ledger) == CANDIDATES[3]


def test_a_trace_benchmark_cut_in_a_tile_is_refused_where_it_cannot_run(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """--tile cuts the CUDA kernel's sites: on a CPU it is refused in one line (exit 2) before anything
    is timed or filed; a tile that is not ELEMENTSxPER_PROGRAM is refused by the parser."""
    ledger = tmp_path / "ledger"
    line = ["benchmarks/trace_overhead.py", "--device", "cpu", "--ledger", str(ledger), "--tile"]
    monkeypatch.setattr(sys, "argv", [*line, "2048x16"])
    assert trace_overhead.main() == 2
    said = capsys.readouterr().err
    assert said.count("\n") == 1 and "--tile cuts the CUDA statistics kernel's sites" in said
    assert not ledger.exists()
    monkeypatch.setattr(sys, "argv", [*line, "2048"])
    with pytest.raises(SystemExit) as refused:
        trace_overhead.main()
    assert refused.value.code == 2
    said = capsys.readouterr().err
    assert "argument --tile: '2048' is not ELEMENTSxPER_PROGRAM (2048x16) or ELEMENTS/PROGRAMS" in said
