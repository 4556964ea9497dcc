#!/usr/bin/env python3
"""Training-step tokens/s of the stack's GPT against a hand-written GPT of the same configuration.

`stack.model.GPT` carries trace sites, options, LoRA and checks, and they must cost nothing
against a model without them. Both models (the reference is benchmarks/reference_gpt.py) train on
the same random tokens with the same AdamW, under bf16 autocast on CUDA and in fp32 on CPU, eager and
torch.compile'd; the ratio stack ÷ reference of the median step's tokens/s is judged against
`model_vs_reference_gpu` or `model_vs_reference_cpu` (spec/benchmarks.yaml), the smaller of the
eager and compiled ratios counting. On CUDA the record also holds each model's MFU, peak memory
and the GPU kernels of one eager step by time (torch.profiler), so a gap can be read off it.

    python benchmarks/model_speed.py                 # CPU, d 256 × 4 layers, ctx 256
    python benchmarks/model_speed.py --device cuda   # GPT-2 small's shape: 12 × 768, ctx 1024, vocab 32768

The models run under PyTorch's default kernel choices, not `train.deterministic`: this compares
modules, and both get the same kernels (benchmarks/train_throughput.py compares the loops).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.reference_gpt import ReferenceGPT
from contracts.derive.benchmarks import SPEED_BENCHMARKS, quotient, steady_median
from contracts.evidence import (
    RunStatus,
    file_record,
    new_record,
    now,
    run_id,
)
from contracts.spec import load_spec
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.train.flops import mfu

# The shapes measured: GPT-2 small's width and depth with this stack's blocks on CUDA, one a
# two-core CPU trains in seconds per step on CPU.
SHAPES: dict[str, dict[str, int]] = {
    "cuda": {"vocab": 32768, "d_model": 768, "n_layers": 12, "n_heads": 12, "ffn_hidden": 2048, "ctx": 1024},
    "cpu": {"vocab": 4096, "d_model": 256, "n_layers": 4, "n_heads": 4, "ffn_hidden": 704, "ctx": 256},
}
BATCH = {"cuda": 16, "cpu": 8}
STEPS = {"cuda": 30, "cpu": 12}
WARMUP = 5  # steps dropped before the median: allocator, autotuning, compile's first calls
TOP_KERNELS = 15


def config_for(device: str) -> ModelConfig:
    shape = SHAPES[device]
    return ModelConfig(**shape, n_kv_heads=shape["n_heads"])


def train_rate(
    model: torch.nn.Module, config: ModelConfig, batch: int, device: torch.device, steps: int, compiled: bool
) -> dict[str, Any]:
    """Median tokens/s of `steps` AdamW steps (after WARMUP more), each step's rate, and the peak
    memory on CUDA."""
    cuda = device.type == "cuda"
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-4, fused=cuda, foreach=None if cuda else True)
    forward: Callable[..., Any] = torch.compile(model) if compiled else model
    generator = torch.Generator().manual_seed(0)
    batches = [torch.randint(config.vocab, (batch, config.ctx + 1), generator=generator) for _ in range(4)]
    batches = [b.to(device) for b in batches]
    if cuda:
        torch.cuda.reset_peak_memory_stats(device)
    rates = []
    for i in range(WARMUP + steps):
        tokens = batches[i % len(batches)]
        synchronize(device)
        start = time.perf_counter()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=cuda):
            _, loss = forward(tokens[:, :-1], tokens[:, 1:])
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        synchronize(device)
        rates.append(batch * config.ctx / (time.perf_counter() - start))
    steady = [round(rate, 1) for rate in rates[WARMUP:]]
    return {
        "tokens_per_s": round(steady_median(*steady)),
        "step_tokens_per_s": steady,  # the checker takes the median again
        "peak_memory_bytes": torch.cuda.max_memory_allocated(device) if cuda else None,
    }


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def cuda_kernels(run: Callable[[], object], device: torch.device) -> dict[str, Any]:
    """The GPU kernels of one call of `run` (launches, GPU time and the top ones by time) and its
    host's waits for the device (`kernel_summary`), after two warm calls: the first pays for
    handles and autotuning."""
    for _ in range(2):
        run()
    activities = [torch.profiler.ProfilerActivity.CPU, torch.profiler.ProfilerActivity.CUDA]
    with torch.profiler.profile(activities=activities) as profiler:
        run()
        torch.cuda.synchronize(device)
    return kernel_summary(profiler)


# What the host does that makes it wait for the device: a scalar read (`.item()`, `float()`,
# `.tolist()` of a device tensor) and the runtime's explicit waits.
HOST_READ = "aten::_local_scalar_dense"
HOST_WAITS = ("cudaStreamSynchronize", "cudaDeviceSynchronize", "cudaEventSynchronize")


def kernel_summary(profiler: torch.profiler.profile) -> dict[str, Any]:
    """A profile's GPU kernels (launches, GPU time, the top ones by time) and, where it recorded
    the host too, how often the host read a scalar off the device or waited for it: each such
    wait leaves the GPU idle until the host has queued the next work."""
    events = profiler.key_averages()
    kernels = [e for e in events if e.device_type == torch.autograd.DeviceType.CUDA]
    kernels.sort(key=lambda e: e.self_device_time_total, reverse=True)
    host = {e.key: e.count for e in events if e.device_type == torch.autograd.DeviceType.CPU}
    summary: dict[str, Any] = {
        "launches": sum(e.count for e in kernels),
        "device_ms": round(sum(e.self_device_time_total for e in kernels) / 1e3, 3),
        "top": [
            {"kernel": e.key[:120], "calls": e.count, "ms": round(e.self_device_time_total / 1e3, 3)}
            for e in kernels[:TOP_KERNELS]
        ],
    }
    if host:
        summary["host_reads"] = host.get(HOST_READ, 0)
        summary["host_waits"] = {name: host[name] for name in HOST_WAITS if name in host}
    return summary


def kernel_profile(model: torch.nn.Module, config: ModelConfig, batch: int, device: torch.device) -> dict:
    """The GPU kernels of one eager bf16 forward and backward."""
    tokens = torch.randint(config.vocab, (batch, config.ctx + 1), device=device)

    def step() -> None:
        with torch.autocast("cuda", dtype=torch.bfloat16):
            model(tokens[:, :-1], tokens[:, 1:])[1].backward()

    found = cuda_kernels(step, device)
    model.zero_grad(set_to_none=True)
    return found


MODES = ("eager", "compiled")


def measure(device: torch.device, steps: int, modes: tuple[str, ...] = MODES) -> dict[str, Any]:
    """Both models in each of `modes` (eager, then compiled), from the same initial weights."""
    config = config_for(device.type)
    batch = BATCH[device.type]
    rows: dict[str, Any] = {}
    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    for mode in modes:
        compiled = mode == "compiled"
        for label in ("reference", "stack"):
            torch._dynamo.reset()
            stack_model = GPT(config, seed=0)
            model = stack_model if label == "stack" else ReferenceGPT(config).load_stack(stack_model)
            model = model.to(device)
            row = train_rate(model, config, batch, device, steps, compiled)
            row["mfu"] = mfu(row["tokens_per_s"], config, name)
            if device.type == "cuda" and not compiled:
                row["profile"] = kernel_profile(model, config, batch, device)
            rows[f"{label}_{mode}"] = row
            print(f"{label:9} {mode:8} {row['tokens_per_s']:>10,} tokens/s", flush=True)
            del model, stack_model
    ratios = {
        mode: round(
            quotient(rows[f"stack_{mode}"]["tokens_per_s"], rows[f"reference_{mode}"]["tokens_per_s"]), 4
        )
        for mode in modes
    }
    return {"config": config.model_dump(), "batch": batch, "rows": rows, "ratios": ratios}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    parser.add_argument("--steps", type=int, help="timed steps per measurement (default: 30 CUDA, 12 CPU)")
    parser.add_argument(
        "--ledger", type=Path, default=Path("evidence/runs"), help="where the record is filed"
    )
    parser.add_argument("--label", default="", help="a note kept in the record (what code was measured)")
    parser.add_argument(
        "--modes",
        nargs="+",
        choices=MODES,
        default=list(MODES),
        help="which ways to run both models (default: both; the record's ratio is the smallest)",
    )
    args = parser.parse_args()
    if args.device == "cuda" and not torch.cuda.is_available():
        print("model_speed: --device cuda needs a CUDA GPU; run it without --device on CPU", file=sys.stderr)
        return 2
    device = torch.device(args.device)
    name = torch.cuda.get_device_name(device) if args.device == "cuda" else "cpu"
    torch.manual_seed(0)
    record = new_record("benchmark", run_id("bench-model"), sys.argv, device=name, cuda=torch.version.cuda)
    measured = measure(device, args.steps or STEPS[args.device], tuple(dict.fromkeys(args.modes)))
    goal = load_spec().benchmark(SPEED_BENCHMARKS[args.device])
    ratio = min(measured["ratios"].values())
    record.metrics = {
        "benchmark": goal.name,
        "ratio": ratio,
        "goal": goal.goal,
        "met": goal.met(ratio),
        "label": args.label,
        **measured,
    }
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    print(json.dumps({k: record.metrics[k] for k in ("ratio", "goal", "met", "ratios")}))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
