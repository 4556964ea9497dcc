#!/usr/bin/env python3
"""Tokens/s of `stack train` against a plain eager PyTorch loop of the same shapes, in one run.

The plain loop is what a person would write by hand: the same GPT, AdamW, clipping, batches
from a memory-mapped array, and nothing else. `stack train` adds the reader, hashes, gate
checks, metrics lines, evidence and the coherence monitor; its overhead is the ratio of the two
medians of per-step throughput (steady state: the first steps are dropped). On a CPU the two loops'
steps alternate in one run (`PairedClock`), so the machine's slow spells fall on both alike; on a
GPU each loop has a run of its own, one after the other (`timing` says which). With `--compile`
both loops also run under torch.compile, at grad_accum 1 and at the preset's accumulation
(`compiled_legs`). Results go to evidence/runs/bench-train-<time>/.

`--options` measures instead every model of spec/options_matrix.yaml (each option alone, every
pair, all together) under `stack train` (benchmark `train_options`, no goal: it records). Each
runs at equal active parameters with dense: its ffn_hidden is chosen so a token passes through
as many parameters in training as in the dense model (top-k of E experts, a routed block's
capacity C), and its median tokens/s is recorded with its ratio to dense's.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from benchmarks.memory_peak import Peak, at_peak, profiled_peak, recorded, running_peak
from benchmarks.model_speed import kernel_summary
from contracts.derive.benchmarks import (
    OPTIONS_BENCHMARK,
    TRAIN_BENCHMARK,
    amdahl_limit,
    largest,
    leg_of,
    median_rate,
    overhead,
    quotient,
    utilisation,
)
from contracts.errors import BadInput
from contracts.evidence import RunStatus, file_record, new_record, now, run_id
from contracts.spec import Spec, load_spec
from stack.cli import main as stack
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.options_matrix import Combination, load_matrix, unknown_settings
from stack.train import determinism
from stack.train.config import RunConfig, resolve
from stack.train.flops import flops_per_token, peak_flops
from stack.train.run import TrainRequest
from stack.train.run import train as train_run
from stack.tune.frozen import weights_sha256

ROOT = Path(__file__).resolve().parent.parent

WARMUP = 5
# The other goals a training record states beside its per-step cost (`also`; on CUDA the GPU ones too).
ALSO = (
    "train_peak_memory_ratio",
    "train_determinism_price",
    "train_compile_speedup",
    "train_compiled_overhead",
    "train_compiled_peak_memory_ratio",
)
GPU_ALSO = ("train_vs_plain_gpu", "train_mfu_gpu")
FFN_MULTIPLE = 8  # an equal-active ffn_hidden is rounded to this
MEMORY_STEPS = 3  # steps of a memory leg: a probed first step, a steady one, a probed last step
# The step each loop's profile covers: the first past the warm-up, so the stack's first step and
# its probe (which runs after that step's tick) and the state digests of its first steps are behind
# it; its run takes one step more, since the last step is probed (GATE-TRAIN-008) and evaluated.
PROFILED_STEP = WARMUP + 1


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


def goal_key(bench: str, spec: Spec) -> str:
    """Where a training record states the goal of `bench`: `goal` for its per-step cost, the goal of
    `metrics.benchmark`, and `goal_<metric>` for each goal of `also`."""
    return "goal" if bench == TRAIN_BENCHMARK else f"goal_{spec.benchmark(bench).metric}"


def leg_sets(deterministic: bool, grad_accum: int) -> list[str]:
    """`--set` items of one leg: its determinism setting and accumulation."""
    return [f"train.deterministic={str(deterministic).lower()}", f"train.grad_accum={grad_accum}"]


class StepClock:
    """The wall-clock time at the end of every step, taken the same way for both loops: each step's
    seconds run from the end of the one before (or from `resume`, where the clock was paused between
    them) to its own end, everything the loop does in that time included."""

    def __init__(self) -> None:
        self.ends: list[float] = []
        self.starts: list[float] = []  # where each next step's time begins: its tick, or a resume
        self.weights: str | None = None  # the trained weights' digest, where the loop takes it
        # The kernels' switches as torch had them at the last step, where the loop reads them.
        self.switches: dict[str, Any] | None = None

    def tick(self, *_: object) -> None:
        now = time.perf_counter()
        self.ends.append(now)
        self.starts.append(now)

    def resume(self) -> None:
        """The next step's time begins now, not at the last tick: what ran in between was not this
        loop's (`PairedClock`)."""
        if self.starts:
            self.starts[-1] = time.perf_counter()

    @contextlib.contextmanager
    def progress(self, _total: int, _every: int) -> Iterator[Callable[[int, dict[str, Any]], None]]:
        """`stack train`'s progress callback (stack.train.run.train's progress_factory): a tick as
        the loop begins, then one a step."""
        self.tick()
        yield self.tick

    @property
    def step_seconds(self) -> list[float]:
        return [end - start for start, end in zip(self.starts, self.ends[1:], strict=False)]


class ProfiledClock(StepClock):
    """A StepClock that also profiles one step (`step`, counted from 1) of the loop it times, host
    and GPU (`kernel_summary`): what the step launched, what the GPU spent, and how often the
    host waited for the device, the same instrument for both loops. The profile's own reading is
    done at the next tick, so it lengthens the step after the profiled one, not that one."""

    def __init__(self, step: int) -> None:
        super().__init__()
        self.step = step
        self.profile: dict[str, Any] | None = None
        activities = [torch.profiler.ProfilerActivity.CPU]
        if torch.cuda.is_available():
            activities.append(torch.profiler.ProfilerActivity.CUDA)
        self.profiler = torch.profiler.profile(activities=activities)

    def tick(self, *_: object) -> None:
        # Tick 0 is the loop's start and tick s the end of step s: the profile runs from tick
        # step - 1 to tick step, and is stopped as soon as that tick's time is taken.
        if len(self.ends) == self.step and torch.cuda.is_available():
            torch.cuda.synchronize()  # the step's kernels, which the host may have run ahead of
        super().tick()
        if len(self.ends) == self.step:
            self.profiler.start()
        elif len(self.ends) == self.step + 1:
            self.profiler.stop()
            self.profile = kernel_summary(self.profiler)


class PlainLoop:
    """A hand-written training loop with the run's model, optimizer, precision and device, stepped
    by its caller (`step`), its steps timed by its own clock.

    Like for like with `stack train`: the same preset (batch, accumulation, bf16 autocast where the
    preset trains in bf16), the kernels `train.deterministic` asks for (stack.train.determinism:
    their cost is determinism's, not the stack's, docs/gpu.md), the fused AdamW the stack uses on
    CUDA (foreach on CPU), clipping, one read of the loss per step, and torch.compile when `compiled`.
    The logits are let go once the loss is made, as the stack's objective lets them go: a loop that
    keeps them through the backward holds a (B, T, vocab) tensor more at its peak. `switches`, when
    given, are the kernels' switches instead of `train.deterministic`'s (benchmarks/
    determinism_parts.py), and `finish` then takes the trained weights' digest and the switches torch
    reports into the clock. The switches are set around each step, not held between them, so the
    loop can step between another loop's steps (`PairedClock`) without leaving its settings behind.
    """

    def __init__(
        self,
        data: Path,
        preset: str,
        sets: list[str],
        compiled: bool = False,
        switches: determinism.Switches | None = None,
        clock: StepClock | None = None,
    ) -> None:
        config = resolve(preset, None, sets, vocab=data_vocab(data))
        self.train, self.switches = config.train, switches
        self.device = torch.device("cuda" if self.train.device == "cuda" else "cpu")
        self.clock = clock or StepClock()
        with self.kernels():
            torch.manual_seed(self.train.seed)
            self.model = GPT(config.model, seed=self.train.seed).to(self.device)
            self.forward = torch.compile(self.model) if compiled else self.model
            fused = self.device.type == "cuda"
            self.optimizer = torch.optim.AdamW(
                self.model.parameters(),
                lr=self.train.lr,
                weight_decay=self.train.weight_decay,
                fused=fused,
                foreach=None if fused else True,
            )
            self.reader = TokenReader(
                data, batch_size=self.train.batch_size, seq_len=config.model.ctx, seed=self.train.seed
            )
        low = {"bf16": torch.bfloat16, "fp16": torch.float16}.get(self.train.precision)
        self.autocast = {"dtype": low or torch.float32, "enabled": bool(low)}
        self.clock.tick()

    def kernels(self) -> contextlib.AbstractContextManager[object]:
        """The kernels' switches this loop runs under."""
        if self.switches is None:
            return determinism.kernels(self.train.deterministic)
        return determinism.switched(self.switches)

    def step(self) -> None:
        """One optimizer step, timed from the clock's last tick or resume to its end."""
        with self.kernels():
            for _ in range(self.train.grad_accum):
                batch = self.reader.next_batch().to(self.device)
                with torch.autocast(self.device.type, **self.autocast):
                    loss = self.forward(batch[:, :-1], batch[:, 1:])[1]  # the logits go as the stack's do
                (loss / self.train.grad_accum).backward()
            torch.nn.utils.clip_grad_norm_(self.model.parameters(), self.train.clip_norm)
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            float(loss.detach())  # the stack reads the loss once per step too
            self.clock.tick()

    def finish(self) -> StepClock:
        """The clock, with the weights' digest and torch's switches where `switches` were given."""
        if self.switches is not None:
            self.clock.weights = weights_sha256(self.model)
            with self.kernels():
                self.clock.switches = determinism.Switches.now().as_flags()  # read while they are in force
        return self.clock


def plain_steps(
    data: Path,
    preset: str,
    sets: list[str],
    steps: int,
    compiled: bool = False,
    switches: determinism.Switches | None = None,
    clock: StepClock | None = None,
) -> StepClock:
    """Per-step seconds of `steps` steps of the plain loop (`PlainLoop`) run on its own."""
    loop = PlainLoop(data, preset, sets, compiled, switches, clock)
    for _ in range(steps):
        loop.step()
    return loop.finish()


class PairedClock(StepClock):
    """The clock of a `stack train` run that steps a plain loop between its own steps: after each
    of the stack's steps (not at its loop's start) the plain loop takes one, timed by its own clock,
    and the stack's time resumes after it. So the two loops' steps alternate in one process, each
    pair a fraction of a second apart: whatever slows the machine for seconds at a time (another
    process, a neighbour on the host) slows both loops alike, where in two runs one after the other
    it slows one loop's steps only.

    Used where a step's work ends with the step: on a CPU every op has run when the host moves on.
    On a GPU the stack queues its next step before judging this one, and a plain step queued behind
    it would wait for the stack's work, so there the loops are timed one run after the other."""

    def __init__(self, plain: PlainLoop, steps: int) -> None:
        super().__init__()
        self.plain, self.steps = plain, steps

    def tick(self, *_: object) -> None:
        super().tick()
        if len(self.ends) > 1 and len(self.plain.clock.ends) <= self.steps:
            self.plain.clock.resume()
            self.plain.step()
            self.resume()


def tokens_per_step(config: RunConfig) -> int:
    """Tokens one optimizer step of either loop trains on (one process)."""
    return config.train.batch_size * config.train.grad_accum * config.model.ctx


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


def run_sets(sets: list[str], steps: int, compile_model: bool) -> list[str]:
    """The `--set` items of a `stack train` run of `steps` steps, compiled or eager."""
    return [*sets, f"train.steps={steps}", f"train.compile={str(compile_model).lower()}"]


def stack_argv(
    data: Path, out: Path, preset: str, sets: list[str], steps: int, compile_model: bool
) -> list[str]:
    """`stack train` arguments of a run of the preset for `steps` steps, compiled or eager."""
    argv = ["train", "--data", str(data), "--out", str(out), "--preset", preset]
    for item in run_sets(sets, steps, compile_model):
        argv += ["--set", item]
    return argv


def logged_rate(run_dir: Path) -> float:
    """Median tokens/s that `stack train` itself recorded in metrics.jsonl, past the warm-up steps."""
    lines = [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines()]
    rates = [ln["tokens_per_s"] for ln in lines if ln["type"] == "step"]
    return statistics.median(rates[WARMUP:])


def stack_run(
    data: Path, out: Path, sets: list[str], steps: int, compile_model: bool, preset: str = "demo"
) -> float:
    """Median tokens/s of one in-process `stack train` run."""
    assert stack(stack_argv(data, out, preset, sets, steps, compile_model)) == 0
    return logged_rate(out)


def stack_steps(
    data: Path,
    out: Path,
    preset: str,
    sets: list[str],
    steps: int,
    compile_model: bool = False,
    clock: StepClock | None = None,
) -> StepClock:
    """Per-step seconds of one in-process `stack train` run with every gate, timed as the plain
    loop is (`clock`, a new StepClock unless given, handed to the run as its progress display)."""
    request = TrainRequest(
        data_dir=data,
        out=out,
        resume=None,
        preset=preset,
        config_file=None,
        sets=run_sets(sets, steps, compile_model),
        waivers=[],
        evidence_dir=None,
        argv=["stack", *stack_argv(data, out, preset, sets, steps, compile_model)],
    )
    clock = clock or StepClock()
    assert train_run(request, clock.progress) == 0
    return clock


def allocator_peak(run: Callable[[], object], device: torch.device) -> tuple[int, Peak]:
    """The most bytes the torch allocator of `device` held at once while `run` ran, counted from
    nothing at its start, the same way for any loop; and what was live at the peak, by owner
    (benchmarks.memory_peak), from the allocator's trace of the same run.

    On CUDA, the caching allocator's own peak of allocated bytes. On CPU torch keeps no such count,
    so the profiler records every allocation and free of CPU tensors (`profile_memory`), and the
    peak is the largest running sum of those sizes in the order they happened (`running_peak`):
    tensors only, not the interpreter, numpy or the allocator's pages, which a process's RSS would
    mix in.
    """
    if device.type == "cuda":
        torch.cuda.synchronize(device)
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats(device)
        start = torch.cuda.memory_allocated(device)
        entries, _ = recorded(run, device)
        return torch.cuda.max_memory_allocated(device) - start, at_peak(entries)
    entries, profiler = recorded(run, device)
    return running_peak(profiler.profiler.kineto_results.events()), at_peak(entries)


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


def options_rows(data: Path, work: Path, preset: str, sets: list[str], steps: int) -> list[dict[str, object]]:
    """Per model of the spec's matrix: its equal-active shape, the preset's model shaped to each
    option, and `stack train`'s median tokens/s."""
    base = resolve(preset, None, sets, vocab=data_vocab(data)).model
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
        run = work / option.name / "run"
        rate = stack_run(data, run, [*sets, *model_sets], steps, compile_model=False, preset=preset)
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


def leg(loop: str, config: RunConfig, clock: StepClock, device_name: str) -> dict[str, Any]:
    """One loop's timed run at one determinism setting and accumulation: its per-step seconds (kept
    to the microsecond, the raw data the checker derives from) and its median tokens/s past the
    warm-up, and the stack's MFU on a GPU of known peak."""
    seconds = [round(s, 6) for s in clock.step_seconds]
    per_step = tokens_per_step(config)
    rate = median_rate(per_step, *seconds[WARMUP:])
    row: dict[str, Any] = {
        "loop": loop,
        "deterministic": config.train.deterministic,
        "grad_accum": config.train.grad_accum,
        "tokens_per_step": per_step,
        "step_seconds": seconds,
        "tokens_per_s": round(rate),
    }
    peak = peak_flops(device_name)
    if loop == "stack" and peak is not None:
        row["mfu"] = round(utilisation(row["tokens_per_s"], flops_per_token(config.model), peak), 4)
    return row


def cuda_peak(run: Callable[[], StepClock], device: torch.device) -> tuple[StepClock, int | None]:
    """`run`'s clock, and on CUDA the most bytes the caching allocator held at once during it,
    counted from what was held at its start (None elsewhere): read from the allocator's own
    counters, which cost a timed step nothing, unlike the allocation trace `allocator_peak` keeps."""
    if device.type != "cuda":
        return run(), None
    torch.cuda.synchronize(device)
    torch.cuda.empty_cache()
    torch.cuda.reset_peak_memory_stats(device)
    start = torch.cuda.memory_allocated(device)
    clock = run()
    torch.cuda.synchronize(device)
    return clock, torch.cuda.max_memory_allocated(device) - start


def timing(device: torch.device) -> str:
    """How the loops' steps are timed on `device`: paired (`PairedClock`) on a CPU, each loop in a
    run of its own one after the other on a GPU."""
    return "paired" if device.type == "cpu" else "sequential"


def timed_pair(
    data: Path,
    out: Path,
    preset: str,
    at: list[str],
    steps: int,
    device: torch.device,
    compiled: bool = False,
) -> dict[str, tuple[StepClock, int | None]]:
    """Each loop's clock over `steps` steps at the `--set` items `at`, compiled or eager, timed as
    `timing` says; on CUDA with the most bytes its run held at once (`cuda_peak`), else None."""
    if timing(device) == "paired":
        plain = PlainLoop(data, preset, at, compiled)
        stack = stack_steps(data, out, preset, at, steps, compiled, clock=PairedClock(plain, steps))
        return {"plain": (plain.finish(), None), "stack": (stack, None)}
    return {
        "plain": cuda_peak(lambda: plain_steps(data, preset, at, steps, compiled=compiled), device),
        "stack": cuda_peak(lambda: stack_steps(data, out, preset, at, steps, compile_model=compiled), device),
    }


def timed_legs(
    data: Path, work: Path, preset: str, sets: list[str], steps: int, name: str, device: torch.device
) -> list[dict]:
    """Both loops, with determinism on and off, at grad_accum 1 and at the preset's accumulation."""
    accums = sorted({1, resolve(preset, None, sets, vocab=data_vocab(data)).train.grad_accum})
    legs = []
    for accum in accums:
        for deterministic in (True, False):
            at = [*sets, *leg_sets(deterministic, accum)]
            config = resolve(preset, None, at, vocab=data_vocab(data))
            out = work / f"stack-{str(deterministic).lower()}-{accum}"
            for loop, (clock, _) in timed_pair(data, out, preset, at, steps, device).items():
                legs.append(leg(loop, config, clock, name))
    return legs


def compiled_legs(
    data: Path, work: Path, preset: str, sets: list[str], steps: int, name: str, device: torch.device
) -> list[dict[str, Any]]:
    """Both loops under torch.compile at the preset's determinism setting, at grad_accum 1 and at the
    preset's accumulation, timed as the eager legs are, each with an allocator peak (`peak_bytes`,
    probes, evaluation, samples and checkpoint included for the stack): on CUDA its timed run's, from
    the allocator's counters; on the CPU, where only the profiler's record of every allocation counts
    one and would slow the timed steps, that of a memory leg of its own, compiled, counted as
    `memory_rows` counts the eager loops' (its owners are not summarised: `profiled_peak`)."""
    config = resolve(preset, None, sets, vocab=data_vocab(data))
    legs = []
    for accum in sorted({1, config.train.grad_accum}):
        at = [*sets, *leg_sets(config.train.deterministic, accum)]
        at_config = resolve(preset, None, at, vocab=data_vocab(data))
        short = memory_sets(sets, device, config.train.deterministic, accum)
        memory_out = work / f"compiled-memory-{accum}"
        memory = {
            "plain": lambda short=short: plain_steps(data, preset, short, MEMORY_STEPS, compiled=True),
            "stack": lambda short=short, out=memory_out: stack_steps(
                data, out, preset, short, MEMORY_STEPS, compile_model=True
            ),
        }
        timed = timed_pair(data, work / f"compiled-{accum}", preset, at, steps, device, compiled=True)
        for loop, (clock, peak) in timed.items():
            row = {**leg(loop, at_config, clock, name), "compiled": True}
            row["peak_bytes"] = profiled_peak(memory[loop]) if peak is None else peak
            legs.append(row)
    return legs


def compiled_comparisons(legs: list[dict[str, Any]], deterministic: bool) -> list[dict[str, Any]]:
    """Stack ÷ plain of the compiled legs at each accumulation (and the per-step cost, 1 − that),
    and their peaks' ratio where both were measured."""
    rows = []
    for accum in sorted({row["grad_accum"] for row in legs}):
        plain, stack = (leg_of(legs, loop, deterministic, accum) for loop in ("plain", "stack"))
        row = {
            "grad_accum": accum,
            "stack_over_plain": round(quotient(stack["tokens_per_s"], plain["tokens_per_s"]), 4),
            "step_cost": round(overhead(plain["tokens_per_s"], stack["tokens_per_s"]), 4),
        }
        if "peak_bytes" in plain and "peak_bytes" in stack:
            row["peak_ratio"] = round(quotient(stack["peak_bytes"], plain["peak_bytes"]), 4)
        rows.append(row)
    return rows


def memory_sets(sets: list[str], device: torch.device, deterministic: bool, accum: int) -> list[str]:
    """`--set` items of a memory leg: MEMORY_STEPS steps (a probed first step, a steady one, a probed
    last one, with evaluation, samples and a checkpoint at its end) at one determinism setting and
    accumulation."""
    return [*sets, *steady_sets(MEMORY_STEPS, device.type), *leg_sets(deterministic, accum)]


def memory_rows(data: Path, work: Path, preset: str, sets: list[str], device: torch.device) -> list[dict]:
    """Each loop's allocator peak over a short run at the preset's determinism setting, at grad_accum
    1 and at the preset's accumulation: the stack's run probes its first and last step, evaluates,
    samples and checkpoints, so its peak is the run's, not only a steady step's."""
    config = resolve(preset, None, sets, vocab=data_vocab(data))
    rows = []
    for accum in sorted({1, config.train.grad_accum}):
        at = memory_sets(sets, device, config.train.deterministic, accum)
        plain, plain_held = allocator_peak(lambda at=at: plain_steps(data, preset, at, MEMORY_STEPS), device)
        out = work / f"memory-{accum}"
        stack_peak, stack_held = allocator_peak(
            lambda at=at, out=out: stack_steps(data, out, preset, at, MEMORY_STEPS), device
        )
        row = {"grad_accum": accum, "plain_peak_bytes": plain, "stack_peak_bytes": stack_peak}
        row["ratio"] = round(quotient(stack_peak, plain), 4)
        # Where each loop's memory was at its peak, for the difference to be read by owner.
        row["plain_at_peak"], row["stack_at_peak"] = plain_held.as_record(), stack_held.as_record()
        rows.append(row)
    return rows


def profiled_steps(
    data: Path, work: Path, preset: str, sets: list[str], device: str
) -> tuple[ProfiledClock, ProfiledClock]:
    """The plain loop's and the stack's clocks, each of a run of its own on `device`, at grad_accum
    1 and the preset's determinism setting, one step longer than PROFILED_STEP, which they profile."""
    steps = PROFILED_STEP + 1
    short = [*sets, *steady_sets(steps, device)]
    config = resolve(preset, None, short, vocab=data_vocab(data))
    at = [*short, *leg_sets(config.train.deterministic, 1)]
    plain = plain_steps(data, preset, at, steps, clock=ProfiledClock(PROFILED_STEP))
    stack = stack_steps(data, work / "profiled", preset, at, steps, clock=ProfiledClock(PROFILED_STEP))
    return plain, stack


def step_profiles(data: Path, work: Path, preset: str, sets: list[str], device: str) -> dict[str, Any]:
    """Each loop's steady PROFILED_STEP (`profiled_steps`), summarised: where a step's time goes
    when the two loops differ."""
    plain, stack = profiled_steps(data, work, preset, sets, device)
    return {"grad_accum": 1, "step": PROFILED_STEP, "plain": plain.profile, "stack": stack.profile}


def comparisons(legs: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
    """Stack ÷ plain at each determinism setting and accumulation (and the per-step cost, 1 − that),
    and each loop's determinism price (1 − on ÷ off) at each accumulation."""
    vs_plain, prices = [], []
    for accum in sorted({row["grad_accum"] for row in legs}):
        for deterministic in (True, False):
            plain = leg_of(legs, "plain", deterministic, accum)["tokens_per_s"]
            stack = leg_of(legs, "stack", deterministic, accum)["tokens_per_s"]
            vs_plain.append(
                {
                    "grad_accum": accum,
                    "deterministic": deterministic,
                    "stack_over_plain": round(quotient(stack, plain), 4),
                    "step_cost": round(overhead(plain, stack), 4),
                }
            )
        for loop in ("plain", "stack"):
            on = leg_of(legs, loop, True, accum)["tokens_per_s"]
            off = leg_of(legs, loop, False, accum)["tokens_per_s"]
            prices.append({"grad_accum": accum, "loop": loop, "price": round(overhead(off, on), 4)})
    return vs_plain, prices


def build_parser() -> argparse.ArgumentParser:
    """The benchmark's command line: also what tools/integrity reads a record's `run.argv` with
    (tools/integrity/settings/bench_argv.py)."""
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
    return parser


def main() -> int:
    args = build_parser().parse_args()
    if args.steps <= WARMUP:
        print(
            f"train_throughput: --steps {args.steps} leaves no step past the warm-up; give more than {WARMUP}"
        )
        return 2
    if args.data is not None:
        try:
            load_manifest(args.data)
        except BadInput as refused:
            print(f"train_throughput: {refused}")
            return 2
    sets = steady_sets(args.steps, args.device)
    name = torch.cuda.get_device_name(0) if args.device == "cuda" else "cpu"
    if args.options:
        return options_main(sets, args.steps, args.preset, args.data, args.ledger, name)
    record = new_record("benchmark", run_id("bench-train"), sys.argv, device=name, cuda=torch.version.cuda)
    preset = args.preset
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        data = args.data
        if data is None:
            data = work / "data"
            prepare_corpus([], data, default=True)
        config = resolve(preset, None, sets, vocab=data_vocab(data))
        legs = timed_legs(data, work, preset, sets, args.steps, name, torch.device(args.device))
        memory = memory_rows(data, work, preset, sets, torch.device(args.device))
        profiles = step_profiles(data, work, preset, sets, args.device)
        compiled_rows, bound = [], None
        if args.compile:
            device = torch.device(args.device)
            compiled_rows = compiled_legs(data, work, preset, sets, args.steps, name, device)
            bound = compile_bound(data, preset, sets, args.steps) if args.device == "cpu" else None
    vs_plain, prices = comparisons(legs)
    deterministic = config.train.deterministic
    # At the preset's accumulation, as its defaults train: the compiled speed-up, stack ÷ plain and MFU.
    at_preset = (deterministic, config.train.grad_accum)
    compiled = leg_of(compiled_rows, "stack", *at_preset).get("tokens_per_s")
    plain_compiled = leg_of(compiled_rows, "plain", *at_preset).get("tokens_per_s")
    compiled_vs_plain = compiled_comparisons(compiled_rows, deterministic)
    plain = leg_of(legs, "plain", deterministic, 1)["tokens_per_s"]
    gated = leg_of(legs, "stack", deterministic, 1)["tokens_per_s"]
    stack_on, stack_off = (leg_of(legs, "stack", d, 1)["tokens_per_s"] for d in (True, False))
    # At grad_accum 1, compiled: the per-step cost, and the larger peak ratio of the two accumulations.
    compiled_overhead = next((r["step_cost"] for r in compiled_vs_plain if r["grad_accum"] == 1), None)
    compiled_peak = (
        largest(*(r["peak_ratio"] for r in compiled_vs_plain))
        if compiled_vs_plain and all("peak_ratio" in r for r in compiled_vs_plain)
        else None
    )
    compiled_speedup = None if compiled is None else round(quotient(compiled, plain), 3)
    # The GPU goals: stack train against the plain loop, compiled, and its utilisation.
    gpu: dict[str, float | None] = {}
    if args.device == "cuda" and compiled is not None and plain_compiled is not None:
        peak = peak_flops(name)
        mfu = None if peak is None else utilisation(compiled, flops_per_token(config.model), peak)
        gpu = {
            "ratio": round(quotient(compiled, plain_compiled), 4),
            "eager_ratio": round(quotient(gated, plain), 4),
            "mfu": None if mfu is None else round(mfu, 4),
        }
    # What the record measured of each goal it names, in the order of its names: each one measured is
    # stated (`goal` for the per-step cost, `goal_<metric>` for the others) and `met` answers for all.
    names = (TRAIN_BENCHMARK, *ALSO, *(GPU_ALSO if gpu else ()))
    values = [
        round(overhead(plain, gated), 4),
        largest(*(row["ratio"] for row in memory)),
        round(overhead(stack_off, stack_on), 4),
        compiled_speedup,
        compiled_overhead,
        compiled_peak,
        *((gpu["ratio"], gpu["mfu"]) if gpu else ()),
    ]
    measured = dict(zip(names, values, strict=True))
    spec = load_spec()
    goals = {bench: value for bench, value in measured.items() if value is not None}
    stated = {goal_key(bench, spec): spec.benchmark(bench).goal for bench in goals}
    record.metrics = {
        "benchmark": TRAIN_BENCHMARK,
        # At grad_accum 1 and the preset's determinism setting: what every step of the stack costs.
        "plain_tokens_per_s": plain,
        "stack_tokens_per_s": gated,
        "overhead": measured[TRAIN_BENCHMARK],
        "peak_memory_ratio": measured[ALSO[0]],
        "determinism_price": measured[ALSO[1]],
        **stated,
        "met": all(spec.benchmark(bench).met(value) for bench, value in goals.items()),
        "also": list(names[1:]),
        "warmup_steps": WARMUP,
        "timing": timing(torch.device(args.device)),
        "legs": legs,
        "vs_plain": vs_plain,
        "determinism_prices": prices,
        "memory": memory,
        "memory_steps": MEMORY_STEPS,
        "step_profiles": profiles,
        "flops_per_token": flops_per_token(config.model),
        "peak_flops": peak_flops(name),
        "compiled_legs": compiled_rows,
        "compiled_vs_plain": compiled_vs_plain,
        "compiled_overhead": compiled_overhead,
        "compiled_peak_memory_ratio": compiled_peak,
        "plain_compiled_tokens_per_s": plain_compiled,
        "compiled_tokens_per_s": compiled,
        "compiled_speedup": compiled_speedup,
        "compile_bound": bound,
        "steps": args.steps,
        "preset": preset,
        "model": config.model.model_dump(),
        "batch_size": config.train.batch_size,
        "grad_accum": config.train.grad_accum,
        "precision": config.train.precision,
        "deterministic": deterministic,
        **gpu,
    }
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(args.ledger, record)
    print(json.dumps({k: v for k, v in record.metrics.items() if k not in ("legs", "model")}, indent=2))
    print(f"-> {path}")
    return 0


def options_main(
    sets: list[str], steps: int, preset: str, data: Path | None, ledger: Path, device_name: str
) -> int:
    """The `--options` measurement of `preset` on `data` (default: the embedded corpus, prepared
    afresh), on the device `sets` name (`device_name`), filed as its own benchmark record in `ledger`."""
    record = new_record("benchmark", run_id("bench-train-options"), sys.argv, device=device_name)
    with tempfile.TemporaryDirectory() as tmp:
        if data is None:
            data = Path(tmp) / "data"
            prepare_corpus([], data, default=True)
        rows = options_rows(data, Path(tmp), preset, sets, steps)
    record.metrics = {"benchmark": OPTIONS_BENCHMARK, "steps": steps, "preset": preset, "options": rows}
    record.run.status, record.run.finished = RunStatus.COMPLETED, now()
    path = file_record(ledger, record)
    print(json.dumps(record.metrics, indent=2))
    print(f"-> {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
