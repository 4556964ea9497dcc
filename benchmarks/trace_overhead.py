#!/usr/bin/env python3
"""What tracing costs: traced ÷ untraced forward time of one model on one batch.

Builds a random model of the `small` preset's shape (or `--preset NAME`, e.g. `gpt2` for GPT-2
small's 12 × 768), times the plain forward and `trace_forward` (statistics of every site, no
values kept) alternately, and files the ratio of the medians as evidence under
evidence/runs/bench-trace-<time>/ (or `--ledger DIR`), one record per `--precision` (fp32 and
bf16 autocast by default). Each record also says what GATE-TRACE-002's checks cost: the traced
forward without them (`unchecked_ms`), their share of the traced time (`verification_share`),
and the exhaustive check of `stack trace --verify` (`verified_ms`, `verified_ratio`), and the minor
page faults per plain and traced forward (`untraced_page_faults`, `traced_page_faults`), and where the
host's time goes in one plain and one traced forward, part by part of the traced one (`host_ms`). The
goal is read from spec/benchmarks.yaml (`trace_overhead`); the benchmark reports whether it was met and
never asserts.

On CUDA, `--tile 2048x16` times the traced forwards with their statistics cut in that tile of
benchmarks/stats_tiles.py's instead of the one in use (stack.kernels.site_stats.TILE), and the
record states it (`tile`): a candidate's trace measured before anyone copies it into TILE.
"""

from __future__ import annotations

import argparse
import resource
import statistics
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import torch

from benchmarks.model_speed import cuda_kernels
from contracts.derive.benchmarks import ns_per_element, quotient, share
from contracts.evidence import RunStatus, file_record, free_run_id, new_record, now
from contracts.spec import load_spec
from stack.kernels.host_checks import engine as checks_engine
from stack.kernels.host_stats import copy_rows, engine
from stack.model import GPT, ModelConfig
from stack.trace import tracer as tracer_module
from stack.trace.tracer import PHASES, phase, trace_forward
from stack.train.presets import PRESETS

ROOT = Path(__file__).resolve().parent.parent

GOAL = "trace_overhead"
# What measures a CUDA forward's statistics and its checks: the Triton kernels and torch's ops (on a
# CPU the C kernels name their build, or torch its reason: stack.kernels.host_stats.engine).
CUDA_ENGINES = {"statistics_engine": "triton", "checks_engine": "torch"}


@contextmanager
def tiled(tile: dict[str, int] | None) -> Iterator[None]:
    """The CUDA statistics cut in `tile` inside (stack.kernels.site_stats.cut_in), or in TILE."""
    if tile is None:
        yield
        return
    from stack.kernels.site_stats import Tile, cut_in  # triton: imported only where it runs

    with cut_in(Tile(**tile)):
        yield


def _page_faults() -> int:
    """The process's minor page faults so far: memory the allocator had handed back to the system
    and touched again (docs/trace.md, Cost: what a traced forward's kept allocations cost a CPU)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


def _seconds(fn: object, device: torch.device) -> float:
    if device.type == "cuda":
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()  # type: ignore[operator]
    if device.type == "cuda":
        torch.cuda.synchronize()
    return time.perf_counter() - start


def traced_with(
    model: GPT, idx: torch.Tensor, site_stats: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
) -> None:
    """A traced forward whose per-site statistics are `site_stats(tensor, out)` instead of the
    tracer's own (written into `out`, the site's row, as the tracer's are); the rows the checks
    read are still copied, by torch.

    The substitute is a measuring instrument, not the statistics, so GATE-TRACE-002 (check
    statistics) would rightly refuse it: the forward timed here is the tracer's own function
    without that judgement (`__wrapped__`), doing the same work otherwise, sample included."""
    real = tracer_module.site_stats

    def measured(
        tensor: torch.Tensor,
        out: torch.Tensor,
        rows: tuple[torch.Tensor, torch.Tensor] | None = None,
        pending: list | None = None,
    ) -> torch.Tensor:
        if rows is not None:
            copy_rows(tensor, *rows)
        return site_stats(tensor, out)

    tracer_module.site_stats = measured
    try:
        trace_forward.__wrapped__(model, idx)
    finally:
        tracer_module.site_stats = real


def hooks_only(model: GPT, idx: torch.Tensor) -> None:
    """A traced forward whose statistics cost nothing (each site's row left zero): the part of the
    overhead that the hooks, the site records and the one host transfer take."""
    traced_with(model, idx, lambda _tensor, out: out)


def one_read(model: GPT, idx: torch.Tensor) -> None:
    """A traced forward whose statistics are torch's float32 sum, one per site, read where the
    tracer reads: every element read once by a vectorised library reduction. The floor measured
    under the real statistics (a float64 sum is slower than the C kernel's six statistics and
    would set no floor)."""
    traced_with(model, idx, lambda tensor, out: out.fill_(tensor.sum()))


def unchecked(model: GPT, idx: torch.Tensor, statistics: bool = False) -> None:
    """A traced forward without GATE-TRACE-002's checks (no site recomputed, no statistics held to
    their definitions): with `statistics` False, `hooks_only` without them (the identities' share
    of the hooks); with True, the real statistics of every site, so that the traced time less this
    one's is what the checks cost."""
    real, sample = tracer_module.identities, tracer_module.statistics_sample
    tracer_module.identities = lambda *_: {}
    tracer_module.statistics_sample = lambda: lambda _tensor: False
    try:
        if statistics:
            trace_forward.__wrapped__(model, idx)
        else:
            hooks_only(model, idx)
    finally:
        tracer_module.identities, tracer_module.statistics_sample = real, sample


def host_ms(model: GPT, idx: torch.Tensor, device: torch.device, repeats: int = 5) -> dict[str, float]:
    """The host's milliseconds in a plain forward (`plain`), a traced forward (`traced`, its
    GATE-TRACE-002 judgement included) and each part of the traced one (stack.trace.tracer.PHASES),
    by the profiler's ranges: the median of `repeats` of each, alternating. On CUDA that is the time
    the host spends queuing work, and in `transfer` waiting for the device: a traced forward whose
    host is busy past the device's work has a short `transfer`, one the device bounds a long one.
    What the traced forward spends outside its parts is its preparation (the hooks' registration
    included) and the judgement. The profiler adds a cost of its own to every operation it records,
    so the parts are read against each other, not against the timed medians."""
    ranges = {"plain": "plain forward", "traced": "traced forward"}
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(repeats):
            with torch.profiler.record_function(ranges["plain"]):
                model(idx)
            if device.type == "cuda":  # the traced forward's transfer waits for its own work only
                torch.cuda.synchronize(device)
            with torch.profiler.record_function(ranges["traced"]):
                trace_forward(model, idx)
    ranges |= {name: phase(name).name for name in PHASES}
    spans: dict[str, list[float]] = {}
    for event in profiler.events():
        spans.setdefault(event.name, []).append(event.cpu_time_total / 1e3)
    return {part: round(statistics.median(spans[label]), 3) for part, label in ranges.items()}


def verified(model: GPT, idx: torch.Tensor) -> None:
    """A traced forward under `stack trace --verify`: every identity on every row, the statistics
    of the sampled sites whole."""
    trace_forward(model, idx, exhaustive=True)


@torch.no_grad()
def measure(
    preset: str,
    vocab: int,
    batch: int,
    tokens: int,
    repeats: int,
    device: torch.device,
    precision: str = "fp32",
) -> dict:
    """Median untraced and traced forward times, alternating so drift hits both alike; with
    `precision` bf16, both under bf16 autocast, as a model trains on a GPU."""
    with torch.autocast(device.type, dtype=torch.bfloat16, enabled=precision == "bf16"):
        return {**_measure(preset, vocab, batch, tokens, repeats, device), "precision": precision}


def _measure(preset: str, vocab: int, batch: int, tokens: int, repeats: int, device: torch.device) -> dict:
    config = ModelConfig(vocab=vocab, **PRESETS[preset]["model"])
    model = GPT(config, seed=0).to(device).eval()
    length = tokens or config.ctx
    idx = torch.randint(vocab, (batch, length), generator=torch.Generator().manual_seed(0)).to(device)
    runs: dict[str, Callable[[], object]] = {
        "plain": lambda: model(idx),
        "traced": lambda: trace_forward(model, idx),
        "hooks": lambda: hooks_only(model, idx),
        "floor": lambda: one_read(model, idx),
        "bare": lambda: unchecked(model, idx),
        "unchecked": lambda: unchecked(model, idx, statistics=True),
    }
    for _ in range(3):  # warm-up: allocator, kernels, caches
        for run in runs.values():
            run()
    trace, _ = trace_forward(model, idx)
    elements = int(sum(site.stats["count"] for site in trace.sites.values()))
    times: dict[str, list[float]] = {name: [] for name in [*runs, "verified"]}
    faults: dict[str, list[int]] = {name: [] for name in times}

    def timed(name: str, run: Callable[[], object]) -> None:
        before = _page_faults()
        times[name].append(_seconds(run, device))
        faults[name].append(_page_faults() - before)

    for _ in range(repeats):  # alternating, so that drift hits every variant alike
        for name, run in runs.items():
            timed(name, run)
    # The exhaustive check after, on its own: its float64 copies grow the heap, which the allocator
    # hands back to the system after it, so a plain forward run next would fault its pages back in
    # (a cost of the benchmark's order, which no user's plain forward pays).
    for _ in range(repeats):
        timed("verified", lambda: verified(model, idx))
    plain, traced, hooks, floor, bare = (times[k] for k in ("plain", "traced", "hooks", "floor", "bare"))
    ms = {name: round(1e3 * statistics.median(values), 3) for name, values in times.items()}
    # Rounded before `met` is judged: the check judges it again on the number recorded.
    ratio = round(quotient(statistics.median(traced), statistics.median(plain)), 4)
    goal = load_spec().benchmark(GOAL)
    return {
        "preset": preset,
        # The model timed, whole: the checker holds it to the preset at the record's commit.
        "model": config.model_dump(),
        "parameters": model.num_params(),
        "batch": batch,
        "tokens": length,
        "repeats": repeats,
        "threads": torch.get_num_threads(),
        # What computed the statistics: on a CPU the C kernel (and which of its paths), or the torch
        # ops and why; on CUDA the Triton kernels.
        "statistics_engine": engine() if device.type == "cpu" else CUDA_ENGINES["statistics_engine"],
        # What measured GATE-TRACE-002's sampled checks: on a CPU the C kernel, or the torch ops and
        # why; on CUDA the torch ops.
        "checks_engine": checks_engine() if device.type == "cpu" else CUDA_ENGINES["checks_engine"],
        "untraced_ms": round(1e3 * statistics.median(plain), 3),
        "traced_ms": round(1e3 * statistics.median(traced), 3),
        "ratio": ratio,
        # What bounds the ratio: the hooks and the record alone, without the statistics.
        "hooks_only_ms": round(1e3 * statistics.median(hooks), 3),
        "hooks_only_ratio": round(quotient(statistics.median(hooks), statistics.median(plain)), 4),
        # What the statistics add on top, over how many site elements.
        "sites": len(trace.sites),
        "site_elements": elements,
        "statistics_ns_per_element": round(
            ns_per_element(1e3 * statistics.median(traced), 1e3 * statistics.median(hooks), elements), 3
        ),
        # The floor: the hooks plus one read of every site element where the tracer reads it. What
        # the real statistics cost above this is what a faster statistics kernel could still save.
        "one_read_ms": round(1e3 * statistics.median(floor), 3),
        "one_read_ratio": round(quotient(statistics.median(floor), statistics.median(plain)), 4),
        # The hooks without check identity's recomputed sites: the identities' share of the hooks.
        "hooks_unchecked_ms": round(1e3 * statistics.median(bare), 3),
        # GATE-TRACE-002's checks on their samples: the traced forward without them, and their share
        # of the traced time; and the exhaustive check (`stack trace --verify`) against the plain.
        "unchecked_ms": ms["unchecked"],
        "verification_share": round(share(ms["traced"], ms["unchecked"]), 4),
        "verified_ms": ms["verified"],
        "verified_ratio": round(quotient(ms["verified"], ms["plain"]), 4),
        # Minor page faults per forward (median): none once the allocator's heap is warm, unless a
        # variant keeps allocations between the ones the forward frees.
        "untraced_page_faults": int(statistics.median(faults["plain"])),
        "traced_page_faults": int(statistics.median(faults["traced"])),
        "host_ms": host_ms(model, idx, device),
        # On CUDA, the kernels of one traced forward by GPU time (benchmarks/model_speed.py).
        **(
            {"profile": cuda_kernels(lambda: trace_forward(model, idx), device)}
            if device.type == "cuda"
            else {}
        ),
        "goal": goal.goal,
        "met": goal.met(ratio),
    }


def tile_option(text: str) -> dict[str, int]:
    """`--tile ELEMENTSxPER_PROGRAM` (e.g. 2048x16) or `ELEMENTS/PROGRAMS` (2048/528: a site dealt to
    at most 528 programs), as the record states it (stack.kernels.site_stats.Tile's fields); whether
    it is a tile the statistics kernel is built and checked for is `main`'s to say."""
    elements, cross, per_program = text.partition("x")
    capped, slash, programs = text.partition("/")
    if cross and elements.isdigit() and per_program.isdigit():
        return {"elements": int(elements), "per_program": int(per_program), "programs": 0}
    if slash and capped.isdigit() and programs.isdigit():
        return {"elements": int(capped), "per_program": 1, "programs": int(programs)}
    raise argparse.ArgumentTypeError(f"{text!r} is not ELEMENTSxPER_PROGRAM (2048x16) or ELEMENTS/PROGRAMS")


def tile_refusal(tile: dict[str, int] | None, device: torch.device) -> str | None:
    """Why `--tile` cannot be run here, or None: it cuts the CUDA kernel's sites (a CPU's C kernel
    has no tiles), and only in a tile benchmarks/stats_tiles.py times."""
    if tile is None:
        return None
    if device.type != "cuda":
        return "--tile cuts the CUDA statistics kernel's sites; on a CPU the C kernel reads them: drop --tile"
    from benchmarks.stats_tiles import TILES  # triton: imported only where it runs
    from stack.kernels.site_stats import Tile

    named = str(Tile(**tile))
    if named not in TILES:
        return f"--tile {named} is no tile the statistics kernel is checked in; one of {', '.join(TILES)}"
    return None


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: also what tools/integrity reads a record's `run.argv` with, so
    that the shape, batch, length, repeats and precision a record states are the ones its line
    asked for (tools/integrity/settings/bench_argv.py)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=sorted(PRESETS))
    parser.add_argument("--vocab", type=int, default=4096)
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--tokens", type=int, default=0, help="sequence length (default: the preset's ctx)")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument(
        "--precision",
        choices=("fp32", "bf16"),
        nargs="+",
        default=["fp32", "bf16"],
        help="one record each; bf16: both forwards under autocast",
    )
    parser.add_argument(
        "--tile",
        type=tile_option,
        default=None,
        metavar="TILE",
        help="on CUDA, cut the statistics in this tile of benchmarks/stats_tiles.py, as ELEMENTSxPER_PROGRAM "
        "(2048x16) or ELEMENTS/PROGRAMS (2048/528); default: stack.kernels.site_stats.TILE",
    )
    parser.add_argument("--ledger", type=Path, default=ROOT / "evidence/runs", help="where it is filed")
    return parser


def main() -> int:
    args = build_parser().parse_args()
    device = torch.device(args.device)
    refused = tile_refusal(args.tile, device)
    if refused is not None:
        print(f"trace_overhead: {refused}", file=sys.stderr)
        return 2
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else device.type
    shape = (args.preset, args.vocab, args.batch, args.tokens, args.repeats, device)
    for precision in args.precision:
        rid = free_run_id("bench-trace", args.ledger)
        record = new_record("benchmark", rid, sys.argv, device=name, cuda=torch.version.cuda)
        with tiled(args.tile):
            metrics = measure(*shape, precision)
        record.metrics = {"benchmark": GOAL, **metrics, **({"tile": args.tile} if args.tile else {})}
        record.run.status, record.run.finished = RunStatus.COMPLETED, now()
        path = file_record(args.ledger, record)
        print(
            f"{GOAL} ({precision}): traced {metrics['traced_ms']} ms / untraced {metrics['untraced_ms']} ms "
            f"= {metrics['ratio']} (goal ≤ {metrics['goal']}, met: {metrics['met']}); checks "
            f"{metrics['verification_share']:.1%} of it; --verify {metrics['verified_ratio']} -> {path}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
