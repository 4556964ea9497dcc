#!/usr/bin/env python3
"""Reader speed: TokenReader tokens/s against a bare vectorised numpy memmap gather, B=32, T=1024.

Both sides read the same train shard of a prepared DATA_DIR (by default the built-in corpus,
prepared into a scratch directory) in a seeded random order and hand out int64 torch tensors of
(B, T+1). The baseline is the textbook vectorised gather, `mm[starts[:, None] + arange(T + 1)]`
on a numpy memmap, with no plan, state or checks; the goal (spec/benchmarks.yaml) is the
reader's tokens/s over the baseline's. For reference the record also carries a leaner bare
gather through a strided (n, T+1) view of the memmap, the technique the reader itself uses, so
the cost of the reader's bookkeeping and gate checks is visible on its own.

Rounds alternate the contenders and the median of each is kept. The reader runs under the
contract mode of the environment (GATESTACK_CONTRACTS, boundary by default), which is recorded.
When it prepares the built-in corpus itself it also records how long `stack prepare --default`
took. The evidence record goes to evidence/runs/bench-reader-<time>/; it never asserts.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch
from numpy.lib.stride_tricks import as_strided

from contracts.derive.benchmarks import quotient
from contracts.evidence import file_completed, new_record, run_id
from contracts.gates import contract_mode
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader
from stack.data.shards import DTYPES, HEADER

ROOT = Path(__file__).resolve().parent.parent

GOAL = "reader_vs_memmap"
BATCH, SEQ = 32, 1024
RUNS_DIR = ROOT / "evidence" / "runs"

Source = Callable[[], torch.Tensor]


def bare_gathers(data: Path, seed: int) -> tuple[Source, Source]:
    """The two bare gathers over the largest train shard: index-array and strided-view."""
    manifest = load_manifest(data)
    shard = max(manifest.shards_of("train"), key=lambda s: s.tokens)
    tokens = np.memmap(data / shard.path, dtype=DTYPES[manifest.dtype], mode="r", offset=HEADER.size)
    windows = (len(tokens) - 1) // SEQ
    order = np.random.default_rng(seed).permutation(windows)
    steps = windows // BATCH
    offsets = np.arange(SEQ + 1)
    plain = np.asarray(tokens)
    view = as_strided(plain, shape=(windows, SEQ + 1), strides=(SEQ * plain.strides[0], plain.strides[0]))
    counters = [0, 0]

    def starts(which: int) -> np.ndarray:
        step = counters[which] % steps
        counters[which] += 1
        return order[step * BATCH : (step + 1) * BATCH]

    def index_gather() -> torch.Tensor:
        return torch.from_numpy(tokens[starts(0)[:, None] * SEQ + offsets].astype(np.int64))

    def strided_gather() -> torch.Tensor:
        return torch.from_numpy(view[starts(1)].astype(np.int64))

    return index_gather, strided_gather


def tokens_per_s(source: Source, batches: int) -> float:
    """Tokens (B x T targets) per second of `batches` calls."""
    source()  # first touch outside the clock
    started = time.perf_counter()
    for _ in range(batches):
        source()
    return batches * BATCH * SEQ / (time.perf_counter() - started)


def measure(data: Path, batches: int, rounds: int) -> tuple[dict[str, object], Ledger]:
    """Median tokens/s of the reader and both bare gathers over `rounds` alternating rounds."""
    ledger = Ledger()
    with recording(ledger):
        reader = TokenReader(data, batch_size=BATCH, seq_len=SEQ, seed=0)
        index_gather, strided_gather = bare_gathers(data, seed=0)
        contenders = {"reader": reader.next_batch, "index": index_gather, "strided": strided_gather}
        rates: dict[str, list[float]] = {name: [] for name in contenders}
        for _ in range(rounds):
            for name, source in contenders.items():
                rates[name].append(tokens_per_s(source, batches))
    median = {name: statistics.median(values) for name, values in rates.items()}
    goal = load_spec().benchmark(GOAL)
    ratio = round(quotient(median["reader"], median["index"]), 3)  # met judged on the number recorded
    metrics: dict[str, object] = {
        "benchmark": GOAL,
        "tokens_per_s": round(median["reader"]),
        "baseline_tokens_per_s": round(median["index"]),
        "ratio": ratio,
        "goal": goal.goal,
        "met": goal.met(ratio),
        "strided_tokens_per_s": round(median["strided"]),
        "ratio_vs_strided": round(quotient(median["reader"], median["strided"]), 3),
        "reader_epochs_wrapped": reader.epoch,
    }
    return metrics, ledger


def main() -> int:
    """Measure, write the evidence record, print a summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--data", type=Path, help="a prepared DATA_DIR (default: the built-in corpus, prepared)"
    )
    parser.add_argument("--batches", type=int, default=2000, help="batches per contender per round")
    parser.add_argument("--rounds", type=int, default=5)
    args = parser.parse_args()
    mode = contract_mode()
    record = new_record("benchmark", run_id("bench-reader"), sys.argv, device="cpu", mode=mode.value)
    with tempfile.TemporaryDirectory() as scratch:
        data, prepare_seconds = args.data, None
        if data is None:
            data = Path(scratch) / "data"
            started = time.perf_counter()
            prepare_corpus([], data, default=True)
            prepare_seconds = round(time.perf_counter() - started, 2)
        manifest = load_manifest(data)
        metrics, ledger = measure(data, args.batches, args.rounds)
    if prepare_seconds is not None:
        metrics["prepare_default_seconds"] = prepare_seconds
    record.config = {
        "batch_size": BATCH,
        "seq_len": SEQ,
        "batches": args.batches,
        "rounds": args.rounds,
        "data": "built-in corpus (stack prepare --default)" if args.data is None else str(args.data),
        "train_tokens": manifest.totals["train"].tokens,
    }
    record.data.manifest_sha256 = manifest.sha256
    record.data.tokenizer_sha256 = manifest.tokenizer.sha256
    record.gates = ledger.gate_results()
    record.metrics = metrics
    path = file_completed(record)
    print(
        f"reader {metrics['tokens_per_s']:,} tokens/s, "
        f"bare memmap gather {metrics['baseline_tokens_per_s']:,}: "
        f"ratio {metrics['ratio']} (goal >= {metrics['goal']}, met: {metrics['met']}); "
        f"strided bare gather {metrics['strided_tokens_per_s']:,} (ratio {metrics['ratio_vs_strided']})\n"
        f"evidence: {path.relative_to(ROOT)}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
