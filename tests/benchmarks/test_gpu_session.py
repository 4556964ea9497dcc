"""benchmarks/gpu_session.py: the GPU measurements in one sitting, on a CPU machine.

Without CUDA every benchmark refuses at once (exit 2), which is enough to see the session's own
behaviour: a failed step is named and the next one runs; a step still running at the deadline is
stopped and no later step starts; the corpus is prepared first only when a step reads it.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy
import pytest
import torch

from benchmarks import gpu_session
from benchmarks.stats_tiles import CANDIDATES, RECORD_PREFIX
from contracts.evidence import file_record, new_record
from stack.kernels.site_stats import TILE
from stack.train.config import resolve

needs_no_gpu = pytest.mark.skipif(torch.cuda.is_available(), reason="on a GPU the steps would really run")


def _log(out: Path) -> str:
    return (out / "session.log").read_text(encoding="utf-8")


@needs_no_gpu
def test_a_failed_step_is_named_and_the_next_one_still_runs(tmp_path: Path) -> None:
    out = tmp_path / "session"
    assert gpu_session.main(["model", "gpu-check", "--out", str(out), "--seconds", "300"]) == 1
    log = _log(out)
    assert "model: exit 2" in log and "gpu-check: exit 2" in log
    assert "needs a CUDA GPU" in (out / "logs" / "model.log").read_text(encoding="utf-8")


@needs_no_gpu
def test_a_step_at_the_deadline_is_stopped_and_no_later_step_starts(tmp_path: Path) -> None:
    out = tmp_path / "session"
    # No Python that imports torch is done within 0.2 s, so the first step meets the deadline.
    assert gpu_session.main(["model", "trace", "--out", str(out), "--seconds", "0.2"]) == 1
    log = _log(out)
    assert "model: out of time" in log and "trace: not started" in log


def test_the_corpus_is_prepared_first_only_when_a_step_reads_it(capsys: pytest.CaptureFixture[str]) -> None:
    assert gpu_session.main(["trace", "repeat", "--out", "/tmp/unused", "--dry-run"]) == 0
    names = [line.split(":")[0] for line in capsys.readouterr().out.splitlines()]
    assert names == ["prepare", "trace", "repeat"]
    assert gpu_session.main(["trace", "model", "--out", "/tmp/unused", "--dry-run"]) == 0
    assert [line.split(":")[0] for line in capsys.readouterr().out.splitlines()] == ["trace", "model"]
    given = ["repeat", "--out", "/tmp/unused", "--data", "/tmp/data", "--dry-run"]
    assert gpu_session.main(given) == 0
    assert "--data /tmp/data" in capsys.readouterr().out


def test_a_used_out_folder_or_a_file_is_refused(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    kept = tmp_path / "kept.txt"
    kept.write_text("the user's", encoding="utf-8")
    for out in (tmp_path, kept):
        assert gpu_session.main(["model", "--out", str(out)]) == 2
        assert "is not an empty folder" in capsys.readouterr().err
    assert kept.read_text(encoding="utf-8") == "the user's"


def test_determinisms_price_is_two_filed_runs_that_differ_in_the_setting_alone(tmp_path: Path) -> None:
    """`det-on` and `det-off` train the gpt2 preset compiled on the session's corpus and file their
    records; their settings, as `stack train` resolves them, differ in train.deterministic only."""
    where = gpu_session.Where(tmp_path / "data", tmp_path / "ledger", tmp_path / "work")
    on, off = (gpu_session.STEPS[name] for name in ("det-on", "det-off"))
    assert on.reads_data and off.reads_data
    configs, outs = [], []
    for step in (on, off):
        argv = step.argv(where)
        assert argv[argv.index("--data") + 1] == str(where.data)
        assert argv[argv.index("--evidence-dir") + 1] == str(where.ledger)
        outs.append(argv[argv.index("--out") + 1])
        sets = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
        configs.append(resolve(argv[argv.index("--preset") + 1], None, sets, vocab=32768).model_dump())
    assert configs[0]["train"].pop("deterministic") is True
    assert configs[1]["train"].pop("deterministic") is False
    assert configs[0] == configs[1] and configs[0]["train"]["compile"] is True
    assert outs[0] != outs[1]  # two run directories, two records


def test_the_corpus_is_the_stdlib_and_the_libraries_found_with_its_record_filed(
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The reference run's corpus: the stdlib and each scientific library this Python has, each its
    own source, and the prepare record filed in the session's ledger beside the others."""
    assert gpu_session.main(["repeat", "--out", "/tmp/unused", "--dry-run"]) == 0
    prepare = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("prepare:"))
    assert "--default --glob *.py" in prepare and f"numpy={Path(numpy.__file__).parent}" in prepare
    assert "--evidence-dir /tmp/unused/ledger" in prepare


def test_the_healthy_runs_train_the_gpt2_preset_at_grad_accum_1_for_their_steps_and_trace_it(
    tmp_path: Path,
) -> None:
    """Each `healthy-N` step trains the gpt2 preset for N steps at grad_accum 1, one checkpoint at its
    end, and traces it, filing both records with the session's."""
    where = gpu_session.Where(tmp_path / "data", tmp_path / "ledger", tmp_path / "work")
    for steps in gpu_session.HEALTHY_STEPS:
        step = gpu_session.STEPS[f"healthy-{steps}"]
        argv = step.argv(where)
        assert step.reads_data and argv[argv.index("--data") + 1] == str(where.data)
        assert argv[argv.index("--ledger") + 1] == str(where.ledger)
        assert argv[argv.index("--commands") + 1 : argv.index("--commands") + 3] == ["train", "trace"]
        sets = [argv[i + 1] for i, word in enumerate(argv) if word == "--set"]
        config = resolve(argv[argv.index("--preset") + 1], None, sets, vocab=32768)
        assert (config.train.steps, config.train.grad_accum, config.ckpt.every) == (steps, 1, steps)


def test_a_traced_tile_is_the_one_the_sessions_search_filed_and_waits_for_it(tmp_path: Path) -> None:
    """`trace-tiled` is `trace` cut in the tile the session's newest stats-tiles record found fastest,
    its command made when it starts; with no such record it is not started, says why, and the step
    after it runs."""
    out = tmp_path / "session"
    assert gpu_session.main(["trace-tiled", "model", "--out", str(out), "--seconds", "60"]) == 1
    assert "trace-tiled: not started: no bench-stats-tiles record in" in _log(out)
    assert "run stats-tiles before it" in _log(out) and "model: exit 2" in _log(out), "the next step runs"
    where = gpu_session.Where(tmp_path / "data", tmp_path / "ledger", tmp_path / "work")
    record = new_record(
        "benchmark", f"{RECORD_PREFIX}-20261201T000000", ["benchmarks/stats_tiles.py"], "an H200"
    )
    timed = [(TILE, 9.0), (CANDIDATES[1], 3.0), (CANDIDATES[0], 4.0)]
    rows = [{"tile": dataclasses.asdict(tile), "ms": ms, "relative_difference": 0.0} for tile, ms in timed]
    record.metrics = {"search": {"fp32": {"site_stats": {"candidates": rows}}}}
    file_record(where.ledger, record)
    tiled, plain = (gpu_session.STEPS[name].argv(where) for name in ("trace-tiled", "trace"))
    at = tiled.index("--tile")
    assert tiled[at + 1] == str(CANDIDATES[1]) == "2048x16"
    assert tiled[:at] + tiled[at + 2 :] == plain


def test_the_short_trace_is_the_trace_step_at_one_12_token_prompt(tmp_path: Path) -> None:
    """`trace-short` times what a user's sentence costs: the `trace` step's command at batch 1 and
    12 tokens, which GATE-TRACE-002 rev 9 checks on every row."""
    where = gpu_session.Where(tmp_path / "data", tmp_path / "ledger", tmp_path / "work")
    short, full = (gpu_session.STEPS[name].argv(where) for name in ("trace-short", "trace"))
    assert short[short.index("--batch") + 1] == "1" and short[short.index("--tokens") + 1] == "12"
    assert full[full.index("--batch") + 1] == "8" and "--tokens" not in full
    assert not gpu_session.STEPS["trace-short"].reads_data


def test_a_search_that_names_no_tile_leaves_the_tiled_trace_unstarted(tmp_path: Path) -> None:
    """A search whose every candidate computed other statistics than the tile in use (beyond
    statistics_rtol) names no tile: `trace-tiled` cannot be made, and says why."""
    where = gpu_session.Where(tmp_path / "data", tmp_path / "ledger", tmp_path / "work")
    record = new_record(
        "benchmark", f"{RECORD_PREFIX}-20261201T000000", ["benchmarks/stats_tiles.py"], "an H200"
    )
    rows = [{"tile": dataclasses.asdict(TILE), "ms": 9.0, "relative_difference": 1.0}]
    record.metrics = {"search": {"fp32": {"site_stats": {"candidates": rows}}}}
    file_record(where.ledger, record)
    with pytest.raises(gpu_session.NotYet, match="the newest tile search names no tile to trace in"):
        gpu_session.STEPS["trace-tiled"].argv(where)
