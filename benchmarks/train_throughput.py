#!/usr/bin/env python3
"""Tokens/s of `stack train` against a plain eager PyTorch loop of the same shapes, in one run.

The plain loop is what a person would write by hand: the same GPT, AdamW, clipping, batches
from a memory-mapped array, and nothing else. `stack train` adds the reader, hashes, gate
checks, metrics lines, evidence and the coherence monitor; its overhead is the ratio of the two
medians of per-step throughput (steady state: the first steps are dropped). With `--compile`
the stack also runs with torch.compile. Results go to evidence/runs/bench-train-<time>/.

`--options` measures instead every model of spec/options_matrix.yaml (each option alone, every
pair, all together) under `stack train` (benchmark `train_options`, no goal: it records). Each
runs at equal active parameters with dense: its ffn_hidden is chosen so a token passes through
as many parameters in training as in the dense model (top-k of E experts, a routed block's
capacity C), and its median tokens/s is recorded with its ratio to dense's.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import torch

ROOT = Path(__file__).resolve().parent.parent
from contracts.derive.benchmarks import amdahl_limit, overhead, quotient, steady_median  # noqa: E402
from contracts.evidence import RunStatus, file_completed, file_record, new_record, now, run_id  # noqa: E402
from contracts.spec import load_spec  # noqa: E402
from stack.cli import main as stack  # noqa: E402
from stack.data.manifest import load_manifest  # noqa: E402
from stack.data.prepare import prepare_corpus  # noqa: E402
from stack.data.reader import TokenReader  # noqa: E402
from stack.model.config import ModelConfig  # noqa: E402
from stack.model.gpt import GPT  # noqa: E402
from stack.options_matrix import Combination, load_matrix, unknown_settings  # noqa: E402
from stack.train.config import resolve  # noqa: E402
from stack.train.flops import mfu  # noqa: E402
from stack.train.loop import repeatable_cuda  # noqa: E402

WARMUP = 5
FFN_MULTIPLE = 8  # an equal-active ffn_hidden is rounded to this


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


def plain_loop(data: Path, preset: str, sets: list[str], steps: int, compiled: bool = False) -> list[float]:
    """The steady-state tokens/s of each step (`steady`) of a hand-written loop with the run's model,
    optimizer, precision and device.

    Like for like with `stack train`: the same preset (batch, accumulation, bf16 autocast where the
    preset trains in bf16), the deterministic kernels `train.deterministic` asks for (their cost
    is determinism's, not the stack's: docs/gpu.md), the fused AdamW the stack uses on CUDA (foreach
    on CPU), clipping, one read of the loss per step, and torch.compile when `compiled`.
    """
    config = resolve(preset, None, sets, vocab=data_vocab(data))
    train = config.train
    device = torch.device("cuda" if train.device == "cuda" else "cpu")
    if train.deterministic:
        repeatable_cuda()
    torch.manual_seed(train.seed)
    model = GPT(config.model, seed=train.seed).to(device)
    forward = torch.compile(model) if compiled else model
    fused = device.type == "cuda"
    optimizer = torch.optim.AdamW(
        model.parameters(),
        lr=train.lr,
        weight_decay=train.weight_decay,
        fused=fused,
        foreach=None if fused else True,
    )
    reader = TokenReader(data, batch_size=train.batch_size, seq_len=config.model.ctx, seed=train.seed)
    low_precision = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(train.precision)
    rates = []
    for _ in range(steps):
        start = time.perf_counter()
        for _ in range(train.grad_accum):
            batch = reader.next_batch().to(device)
            with torch.autocast(
                device.type, dtype=low_precision or torch.float32, enabled=bool(low_precision)
            ):
                _, loss = forward(batch[:, :-1], batch[:, 1:])
            (loss / train.grad_accum).backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), train.clip_norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        float(loss.detach())  # the stack reads the loss once per step too
        rates.append(train.grad_accum * batch[:, 1:].numel() / (time.perf_counter() - start))
    return steady(rates)


def steady(rates: list[float]) -> list[float]:
    """The rates of the steps past the warm-up, as the record keeps them (the checker takes their
    median again: contracts.derive.benchmarks.steady_median)."""
    return [round(rate, 1) for rate in rates[WARMUP:]]


def data_vocab(data: Path) -> int:
    """The vocabulary of a prepared DATA_DIR's tokenizer (what `stack train` sizes the model by)."""
    return load_manifest(data).tokenizer.vocab_size


# Library calls torch.compile hands back to the same BLAS / attention kernels eager uses.
LIBRARY_OPS = (
    "aten::mm",
    "aten::addmm",
    "aten::bmm",
    "aten::_scaled_dot_product_flash_attention_for_cpu",
    "aten::_scaled_dot_product_flash_attention_for_cpu_backward",
)


def compile_bound(data: Path, preset: str, sets: list[str], steps: int) -> dict[str, float | int]:
    """What bounds torch.compile here, measured on an eager forward and backward of the model:
    the graphs and graph breaks dynamo makes of it, and the share of the ops' own time spent in
    matrix products and attention kernels, which compiled code calls just the same. Compile can
    only shrink the rest, so it cannot beat 1 / (1 - that share) (Amdahl's law)."""
    config = resolve(preset, None, sets, vocab=data_vocab(data))
    train = config.train
    model = GPT(config.model, seed=train.seed)
    reader = TokenReader(data, batch_size=train.batch_size, seq_len=config.model.ctx, seed=train.seed)
    batch = reader.next_batch()
    explained = torch._dynamo.explain(model)(batch[:, :-1], batch[:, 1:])
    for _ in range(WARMUP):
        model(batch[:, :-1], batch[:, 1:])[1].backward()
    with torch.profiler.profile(activities=[torch.profiler.ProfilerActivity.CPU]) as profiler:
        for _ in range(steps):
            model(batch[:, :-1], batch[:, 1:])[1].backward()
    events = profiler.key_averages()
    total = sum(e.self_cpu_time_total for e in events)
    library = sum(e.self_cpu_time_total for e in events if e.key in LIBRARY_OPS)
    share = library / total
    return {
        "graphs": explained.graph_count,
        "graph_breaks": explained.graph_break_count,
        "library_share": round(share, 4),
        "amdahl_limit": round(amdahl_limit(share), 2),
    }


def stack_argv(
    data: Path, out: Path, preset: str, sets: list[str], steps: int, compile_model: bool
) -> list[str]:
    """`stack train` arguments of a run of the preset for `steps` steps, compiled or eager."""
    argv = ["train", "--data", str(data), "--out", str(out), "--preset", preset]
    for item in [*sets, f"train.steps={steps}", f"train.compile={str(compile_model).lower()}"]:
        argv += ["--set", item]
    return argv


def logged_rates(run_dir: Path) -> list[float]:
    """The steady-state tokens/s that `stack train` itself logged for each step in metrics.jsonl."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    return steady([ln["tokens_per_s"] for ln in lines if ln["type"] == "step"])


def stack_run(
    data: Path, out: Path, sets: list[str], steps: int, compile_model: bool, preset: str = "demo"
) -> list[float]:
    """The steady-state tokens/s of each step of one in-process `stack train` run."""
    assert stack(stack_argv(data, out, preset, sets, steps, compile_model)) == 0
    return logged_rates(out)


def active_params(config: ModelConfig) -> float:
    """Parameters one training token passes through, on average: of a mixture only its top-k
    experts (and the shared one), of a routed block only the capacity C of the tokens."""
    model = GPT(config)
    outside = model.num_params() - sum(p.numel() for layer in model.layers for p in layer.parameters())
    total = float(outside)
    for i, layer in enumerate(model.layers):
        block = float(sum(p.numel() for p in layer.parameters()))
        if config.moe:
            routed = sum(p.numel() for expert in layer.moe.experts for p in expert.parameters())
            block -= routed * (1 - config.moe_top_k / config.moe_experts)
        total += block * (config.mod_capacity if config.mod_block(i) else 1.0)
    return total


def equal_active(base: ModelConfig, option: Combination) -> ModelConfig:
    """The option on `base` with the ffn_hidden at which a token meets as many parameters as in `base`.

    Active parameters are affine in ffn_hidden, so two evaluations find it.
    """

    def at(hidden: int) -> ModelConfig:
        return ModelConfig(**{**base.model_dump(), **option.model, "ffn_hidden": hidden})

    low, high = at(FFN_MULTIPLE), at(2 * FFN_MULTIPLE)
    slope = (active_params(high) - active_params(low)) / FFN_MULTIPLE
    hidden = FFN_MULTIPLE + (active_params(base) - active_params(low)) / slope
    return at(max(FFN_MULTIPLE, FFN_MULTIPLE * round(hidden / FFN_MULTIPLE)))


def options_rows(data: Path, work: Path, sets: list[str], steps: int) -> list[dict[str, object]]:
    """Per model of the spec's matrix: its equal-active shape and `stack train`'s median tokens/s."""
    base = resolve("demo", None, sets, vocab=257).model
    rows: list[dict[str, object]] = []
    for option in load_matrix().combinations():
        if unknown_settings(option):
            rows.append({"option": option.name, "missing": unknown_settings(option)})
            continue
        config = equal_active(base, option)
        model_sets = [
            f"model.{k}={json.dumps(v)}" for k, v in {**option.model, "ffn_hidden": config.ffn_hidden}.items()
        ]
        # The option's name may hold '+', which a run directory's name may not.
        rates = stack_run(data, work / option.name / "run", [*sets, *model_sets], steps, compile_model=False)
        rate = steady_median(*rates)
        rows.append(
            {
                "option": option.name,
                "ffn_hidden": config.ffn_hidden,
                "active_params": round(active_params(config)),
                "params": GPT(config).num_params(),
                "tokens_per_s": round(rate),
            }
        )
    dense = next((r["tokens_per_s"] for r in rows if r["option"] == "dense"), None)
    for row in rows:
        if dense and "tokens_per_s" in row:
            row["vs_dense"] = round(quotient(float(row["tokens_per_s"]), float(dense)), 3)
    return rows


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--compile", action="store_true", help="also measure both loops with torch.compile")
    parser.add_argument(
        "--options", action="store_true", help="measure every option of spec/options_matrix.yaml instead"
    )
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu", help="where to train")
    parser.add_argument("--preset", default="demo", help="the preset both loops train (default demo)")
    parser.add_argument(
        "--data",
        type=Path,
        help="a prepared DATA_DIR (default: the embedded corpus, byte tokens, prepared afresh)",
    )
    parser.add_argument(
        "--ledger", type=Path, default=ROOT / "evidence/runs", help="where the record is filed"
    )
    args = parser.parse_args()
    sets = steady_sets(args.steps, args.device)
    if args.options:
        return options_main(sets, args.steps)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    record = new_record("benchmark", run_id("bench-train"), sys.argv, device=name, cuda=torch.version.cuda)
    with tempfile.TemporaryDirectory() as tmp:
        data = args.data
        if data is None:
            data = Path(tmp) / "data"
            prepare_corpus([], data, default=True)
        preset = args.preset
        rates = {
            "plain": plain_loop(data, preset, sets, args.steps),
            "stack": stack_run(data, Path(tmp) / "eager", sets, args.steps, False, preset),
        }
        bound = None
        if args.compile:
            rates["plain_compiled"] = plain_loop(data, preset, sets, args.steps, compiled=True)
            rates["compiled"] = stack_run(data, Path(tmp) / "compiled", sets, args.steps, True, preset)
            bound = compile_bound(data, preset, sets, args.steps) if args.device == "cpu" else None
        config = resolve(preset, None, sets, vocab=data_vocab(data))
    medians = {contender: steady_median(*timed) for contender, timed in rates.items()}
    plain, gated = medians["plain"], medians["stack"]
    compiled, plain_compiled = medians.get("compiled"), medians.get("plain_compiled")
    lost = overhead(plain, gated)
    goal = load_spec().benchmark("train_overhead")
    record.metrics = {
        "benchmark": goal.name,
        "plain_tokens_per_s": round(plain),
        "stack_tokens_per_s": round(gated),
        "overhead": round(lost, 4),
        "goal": goal.goal,
        "met": goal.met(lost),
        "plain_compiled_tokens_per_s": None if plain_compiled is None else round(plain_compiled),
        "compiled_tokens_per_s": None if compiled is None else round(compiled),
        "compiled_speedup": None if compiled is None else round(quotient(compiled, plain), 3),
        "compile_bound": bound,
        # Model FLOPs utilisation against the GPU's bf16 peak (stack/train/flops.py); None on CPU.
        "stack_mfu": mfu(gated, config.model, name),
        "compiled_mfu": None if compiled is None else mfu(compiled, config.model, name),
        "also": ["train_compile_speedup"],
        "steps": args.steps,
        "preset": preset,
        "model": config.model.model_dump(),
        "batch_size": config.train.batch_size,
        "grad_accum": config.train.grad_accum,
        "precision": config.train.precision,
        "deterministic": config.train.deterministic,
        **{f"{contender}_step_tokens_per_s": timed for contender, timed in rates.items()},
    }
    if args.device == "cuda" and compiled is not None and plain_compiled is not None:
        # The GPU goals: stack train against the plain loop, compiled, and its utilisation.
        record.metrics["also"] = ["train_compile_speedup", "train_vs_plain_gpu", "train_mfu_gpu"]
        record.metrics["ratio"] = round(quotient(compiled, plain_compiled), 4)
        record.metrics["eager_ratio"] = round(quotient(gated, plain), 4)
        record.metrics["mfu"] = record.metrics["compiled_mfu"]
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    print(json.dumps(record.metrics, indent=2))
    print(f"-> {path}")
    return 0


def options_main(sets: list[str], steps: int) -> int:
    """The `--options` measurement, filed as its own benchmark record."""
    record = new_record("benchmark", run_id("bench-train-options"), sys.argv, device="cpu")
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        prepare_corpus([], data, default=True)
        rows = options_rows(data, Path(tmp), sets, steps)
    record.metrics = {"benchmark": "train_options", "steps": steps, "preset": "demo", "options": rows}
    path = file_completed(record)
    print(json.dumps(record.metrics, indent=2))
    print(f"-> {path.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
