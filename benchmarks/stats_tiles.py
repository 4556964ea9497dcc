#!/usr/bin/env python3
"""Statistics tiles: how the CUDA statistics kernel should cut a traced forward's sites.

    python benchmarks/stats_tiles.py [--preset gpt2] [--vocab 32768] [--batch 8] [--ledger DIR]

A traced forward's statistics on CUDA are a partials launch a site and one merge launch after the
forward (stack/kernels/site_stats.py); the partials kernel cuts each site in tiles (`Tile`: elements
a tile, tiles a program). On an H200 at GPT-2 small's shape the kernels of the time read the sites at
about a quarter of the card's bandwidth, and the merges took two thirds as long again
(docs/trace.md, "On a GPU").
This times every candidate tile (`CANDIDATES`, the tile in use first) over the sites of one
forward of a model of the preset's shape, as the forward hands them over (slices of the fused
projections included), in fp32 and under bf16 autocast, and records each candidate's time with
the fastest, and how far each candidate's statistics are from the tile in use's (a candidate that
computed other numbers would show there before GATE-TRACE-002's check refused it in a trace). It
never edits `TILE`: a person copies the winner there, citing the record.

Needs CUDA: without a GPU it says so in one line and exits 2 (tests/benchmarks run `search` in
Triton's interpreter, where times mean nothing but every candidate runs on the real layouts).
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path
from typing import Any

import torch

from contracts.derive.benchmarks import fastest
from contracts.evidence import RunStatus, file_record, ledger_slot, new_record, now, read_evidence, run_id
from contracts.gates import contract_mode
from contracts.spec import load_spec
from stack.cli.values import positive_int
from stack.kernels.site_stats import PARTIALS, TILE, Pending, Tile, merge_all, site_stats_fused
from stack.model import GPT, ModelConfig
from stack.trace.hooks import SiteHooks
from stack.train.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent

# The tiles tried besides the one in use: more tiles a program (fewer programs, fewer partial
# columns for the merge to read) and tiles of half the size. A program reduces each tile as it
# reads it (stack.kernels.site_stats._partials), so its registers hardly grow with its tiles:
# compiled for Hopper, 52 to 86 a thread for every tile here (tests/kernels/test_kernel_compile.py).
# A larger tile holds more elements a thread and more registers with them (4,096 elements: 95 to
# 117, two programs of 8 warps a multiprocessor), for no more elements in flight than 2,048. A fixed
# count a program leaves a small site few programs (a 768-wide site of 8 × 1,024 tokens is
# 3,072 tiles: 48 programs at 64 a program, for an H200's 132 multiprocessors), so the last three
# deal each site to at most 4 or 16 times 132 programs.
CANDIDATES = (
    Tile(2048, 4),
    Tile(2048, 16),
    Tile(2048, 64),
    Tile(1024, 16),
    Tile(1024, 32),
    Tile(1024, 64),
    Tile(2048, programs=528),
    Tile(2048, programs=2112),
    Tile(1024, programs=2112),
)
# Every tile a traced forward may be cut in: the one in use and the candidates, each compiled for
# Hopper in `make test` and held there to no register spill (tests/kernels/test_kernel_compile.py).
TILES = {str(tile): tile for tile in (TILE, *CANDIDATES)}
RECORD_PREFIX = "bench-stats-tiles"


def forward_sites(model: GPT, idx: torch.Tensor) -> list[torch.Tensor]:
    """Every site's tensor of one forward of `model`, as its hook was shown it (a view where the
    forward made one), kept by reference: nothing is copied or made contiguous."""
    sites: list[torch.Tensor] = []

    def keep(_name: str, tensor: torch.Tensor) -> None:
        sites.append(tensor.detach())

    with torch.no_grad(), SiteHooks(model, keep):
        model(idx)
    return sites


def _seconds(run: Any, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    run()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    return time.perf_counter() - start


def time_tile(sites: list[torch.Tensor], tile: Tile, repeats: int) -> tuple[float, torch.Tensor]:
    """The median milliseconds of every site's statistics with `tile`, and the statistics
    themselves, one row a site: as a traced forward launches them, a partials launch a site and the
    merges queued for one launch after the last. On CUDA after one untimed call, which compiles;
    Triton's interpreter compiles nothing, and a call there (a test's) takes seconds."""
    out = torch.empty(len(sites), PARTIALS, dtype=torch.float64, device=sites[0].device)

    def all_sites() -> None:
        pending: list[Pending] = []
        for row, site in zip(out, sites, strict=True):
            site_stats_fused(site, out=row, tile=tile, pending=pending)
        merge_all(pending)

    if sites[0].device.type == "cuda":
        all_sites()
    times = sorted(_seconds(all_sites, sites[0].device) for _ in range(repeats))
    return round(1e3 * times[len(times) // 2], 4), out.clone()


# The columns of a statistics row (site_stats_fused): mean, std, min, max, absmax, nan, inf, zero, l1.
MEAN, ABSMAX = 0, 4


def relative_difference(rows: torch.Tensor, reference: torch.Tensor) -> float:
    """The largest difference between two statistics matrices' finite entries, each relative to the
    reference's value, but a mean's to the site's absmax: a mean near 0 is a sum that cancels, whose
    last bits any order of summation moves."""
    scale = reference.abs()
    scale[:, MEAN] = reference[:, ABSMAX].abs()
    finite = rows.isfinite() & reference.isfinite()
    relative = (rows - reference).abs() / scale.clamp_min(torch.finfo(torch.float64).tiny)
    return float(relative[finite].max()) if bool(finite.any()) else 0.0


def search(
    preset: str,
    vocab: int,
    batch: int,
    device: torch.device,
    repeats: int,
    tokens: int | None = None,
    precisions: tuple[str, ...] = ("fp32", "bf16"),
) -> dict[str, Any]:
    """Per precision, every candidate's time over the sites of one forward of `batch` sequences of
    `tokens` (the preset's context by default), its statistics' largest relative difference from
    the tile in use's, and the fastest."""
    config = ModelConfig(vocab=vocab, **PRESETS[preset]["model"])
    model = GPT(config, seed=0).to(device).eval()
    shape = (batch, tokens or config.ctx)
    idx = torch.randint(vocab, shape, generator=torch.Generator().manual_seed(0)).to(device)
    found: dict[str, Any] = {}
    for precision in precisions:
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
            sites = forward_sites(model, idx)
        reference_ms, reference = time_tile(sites, TILE, repeats)
        rows = [{"tile": dataclasses.asdict(TILE), "ms": reference_ms, "relative_difference": 0.0}]
        for tile in CANDIDATES:
            ms, stats = time_tile(sites, tile, repeats)
            difference = relative_difference(stats, reference)
            rows.append({"tile": dataclasses.asdict(tile), "ms": ms, "relative_difference": difference})
            print(f"{precision} {tile}: {ms:.3f} ms (relative difference {difference:.1e})", flush=True)
        elements = sum(site.numel() for site in sites)
        found[precision] = {
            "sites": len(sites),
            "elements": elements,
            "site_stats": {"best": fastest(rows), "candidates": rows},
        }
    return found


def fastest_tile(search: dict[str, Any]) -> Tile:
    """Of a tile search's candidates (`search`, as its record keeps it: per precision), the one
    whose times summed over the precisions are the least, among those whose statistics are within
    GATE-TRACE-002's statistics_rtol of the tile in use's in every precision: one tile serves every
    dtype (TILE), and one that computed other numbers would have a trace refused."""
    rtol = load_spec().threshold("GATE-TRACE-002", "statistics_rtol")
    totals: dict[str, float] = {}
    refused: set[str] = set()
    for found in search.values():
        for row in found["site_stats"]["candidates"]:
            name = str(Tile(**row["tile"]))
            if "ms" not in row or row["relative_difference"] > rtol:
                refused.add(name)
            else:
                totals[name] = totals.get(name, 0.0) + row["ms"]
    timed = {name: ms for name, ms in totals.items() if name not in refused}
    if not timed:
        raise ValueError("no candidate of the search computed the statistics of the tile in use")
    return TILES[min(timed, key=timed.__getitem__)]


def fastest_in(ledger: Path) -> Tile:
    """The fastest tile (`fastest_tile`) of the newest tile search filed in `ledger`;
    FileNotFoundError where none is."""
    runs = sorted(ledger.glob(f"{RECORD_PREFIX}-*/metadata.json"))
    if not runs:
        raise FileNotFoundError(f"no {RECORD_PREFIX} record in {ledger}")
    return fastest_tile(read_evidence(runs[-1]).metrics["search"])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="gpt2", choices=sorted(PRESETS))
    parser.add_argument("--vocab", type=positive_int, default=32768)
    parser.add_argument("--batch", type=positive_int, default=8)
    parser.add_argument("--repeats", type=positive_int, default=10, help="timed repetitions per candidate")
    parser.add_argument(
        "--ledger", type=Path, default=ROOT / "evidence" / "runs", help="file the record here"
    )
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(
            "stats_tiles: no CUDA device: the tile search times compiled kernels and needs a GPU",
            file=sys.stderr,
        )
        return 2
    rid = run_id(RECORD_PREFIX)
    ledger_slot(args.ledger, rid)
    name = torch.cuda.get_device_name(0)
    record = new_record("benchmark", rid, sys.argv, name, torch.version.cuda, contract_mode().value)
    record.config = {"preset": args.preset, "vocab": args.vocab, "batch": args.batch, "repeats": args.repeats}
    found = search(args.preset, args.vocab, args.batch, torch.device("cuda"), args.repeats)
    record.metrics = {"tile_before": dataclasses.asdict(TILE), "search": found}
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    for precision, result in found.items():
        best = result["site_stats"]["best"]
        print(f"{precision}: fastest {best['tile']} at {best['ms']:.3f} ms")
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
