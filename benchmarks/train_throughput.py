#!/usr/bin/env python3
"""Tokens/s of `stack train` against a plain eager PyTorch loop of the same shapes, in one run.

The plain loop is what a person would write by hand: the same GPT, AdamW, clipping, batches
from a memory-mapped array, and nothing else. `stack train` adds the reader, hashes, gate
checks, metrics lines, evidence and the coherence monitor; its overhead is the ratio of the two
medians of per-step throughput (steady state: the first steps are dropped). With `--compile`
the stack also runs with torch.compile. Results go to evidence/runs/bench-train-<time>/.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
from contracts.evidence import file_completed, new_record, run_id  # noqa: E402
from contracts.spec import load_spec  # noqa: E402
from stack.cli import main as stack  # noqa: E402
from stack.data.prepare import prepare_corpus  # noqa: E402
from stack.data.reader import TokenReader  # noqa: E402
from stack.model.gpt import GPT  # noqa: E402
from stack.train.config import resolve  # noqa: E402

WARMUP = 5


def steady_sets(steps: int, device: str) -> list[str]:
    """`--set` items for a throughput run on `device`: evaluation, samples and a checkpoint happen
    once, at the end, so the steady state is what is measured."""
    return [
        f"train.device='{device}'",
        f"eval.every={steps}",
        f"monitor.sample_every={steps}",
        f"ckpt.every={steps}",
        "train.warmup_steps=2",
    ]


def plain_loop(data: Path, sets: list[str], steps: int) -> float:
    """Median tokens/s of a hand-written eager loop with the run's model, optimizer and device."""
    config = resolve("demo", None, sets, vocab=257)
    train = config.train
    device = torch.device("cuda" if train.device == "cuda" else "cpu")
    torch.manual_seed(train.seed)
    model = GPT(config.model, seed=train.seed).to(device)
    optimizer = torch.optim.AdamW(
        model.parameters(), lr=train.lr, weight_decay=train.weight_decay, foreach=True
    )
    reader = TokenReader(data, batch_size=train.batch_size, seq_len=config.model.ctx, seed=train.seed)
    rates = []
    for _ in range(steps):
        start = time.perf_counter()
        batch = reader.next_batch().to(device)
        _, loss = model(batch[:, :-1], batch[:, 1:])
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the stack reads the loss once per step too
        rates.append(batch[:, 1:].numel() / (time.perf_counter() - start))
    return statistics.median(rates[WARMUP:])


def stack_argv(data: Path, out: Path, sets: list[str], steps: int, compile_model: bool) -> list[str]:
    """`stack train` arguments of a demo-preset run of `steps` steps, compiled or eager."""
    argv = ["train", "--data", str(data), "--out", str(out), "--preset", "demo"]
    for item in [*sets, f"train.steps={steps}", f"train.compile={str(compile_model).lower()}"]:
        argv += ["--set", item]
    return argv


def median_rate(run_dir: Path) -> float:
    """Median tokens/s that `stack train` itself recorded in metrics.jsonl, past the warm-up steps."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [ln["tokens_per_s"] for ln in lines if ln["type"] == "step"]
    return statistics.median(rates[WARMUP:])


def stack_run(data: Path, out: Path, sets: list[str], steps: int, compile_model: bool) -> float:
    """Median tokens/s of one in-process `stack train` run."""
    assert stack(stack_argv(data, out, sets, steps, compile_model)) == 0
    return median_rate(out)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also measure stack train with torch.compile")
    args = parser.parse_args()
    sets = steady_sets(args.steps, "cpu")
    record = new_record("benchmark", run_id("bench-train"), sys.argv, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_corpus([], data, default=True)
        plain = plain_loop(data, sets, args.steps)
        gated = stack_run(data, Path(tmp) / "eager", sets, args.steps, compile_model=False)
        compiled = stack_run(data, Path(tmp) / "compiled", sets, args.steps, True) if args.compile else None
    overhead = 1 - gated / plain
    goal = load_spec().benchmark("train_overhead")
    record.metrics = {
        "benchmark": goal.name,
        "plain_tokens_per_s": round(plain),
        "stack_tokens_per_s": round(gated),
        "overhead": round(overhead, 4),
        "goal": goal.goal,
        "met": goal.met(overhead),
        "compiled_tokens_per_s": None if compiled is None else round(compiled),
        "compiled_speedup": None if compiled is None else round(compiled / plain, 3),
        "also": ["train_compile_speedup"],
        "steps": args.steps,
        "preset": "demo",
    }
    path = file_completed(record)
    print(json.dumps(record.metrics, indent=2))
    print(f"-> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
