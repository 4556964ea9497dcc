"""`make gpu-check`: what a user with a CUDA GPU runs once, filed as one evidence record.

    python tools/gpu_check.py [--ledger DIR] [--repeats N]

The CPU tests run the kernel in Triton's interpreter, which shows that it computes right but
says nothing of compiled code or speed, and CPU training says nothing of autocast, the CUDA loss
scaler, compiled graphs or NCCL. Each of those is one step here:

  kernel parity    the Triton attention's out, dq, dk, dv against the fp32 reference in fp32,
                   bf16 and fp16, on a tail, a GQA, a non-causal and a cache-shaped case, each
                   judged by GATE-KERNEL-001's judge (stack/kernels/parity.py)
  attention speed  forward+backward TFLOP/s of the kernel and of SDPA's flash path
                   (benchmarks/attention.py)
  prepare corpus   `stack prepare --default`
  bf16 training    `stack train --preset base` (30 M parameters) in bf16 with the triton attention,
                   under every gate: tokens/s and MFU, peak memory, and the seconds a
                   checkpoint takes to write and to verify
  fp16 resume      fp16 with the CUDA loss scaler: N steps straight against N/2, a resume from
                   the mid checkpoint and N/2 more, compared bit for bit (GATE-CKPT-003)
  compile          `stack train` eager and compiled against a plain eager loop
                   (benchmarks/train_throughput.py)
  nproc (NCCL)     `stack train --nproc N` over the visible GPUs against one process with the
                   same global batch (GATE-DIST-001); skipped with fewer than two GPUs

Each step ends PASS, FAIL or SKIPPED with its reason and numbers. A crash fails its own step and
the others still run. Every training run's record is re-judged by the integrity check's own
record checks (GATE-INTEG-001). The table is printed and one record of run kind `gpu-check` is
filed as <ledger>/gpu-check-<UTC time>/metadata.json: its gates hold, per gate, the worst
verdict of everything the check ran; its metrics every step's numbers and the benchmark goals
they measure, which the site's benchmarks page shows.

Exit 0 when every step that ran passed; 3 when a gate fired (the last line names it); 2 without
a CUDA device (one line); 1 on any other failure.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from contracts.derive.benchmarks import TRAIN_BENCHMARK, overhead, quotient
from contracts.derive.gpu_check import (
    FAIL,
    KERNEL_GATE,
    PARITY_STEP,
    PASS,
    SKIPPED,
    check_status,
    largest_diff,
    low_precision,
)
from contracts.errors import EXIT_BAD_INPUT, EXIT_GATE, EXIT_OK
from contracts.evidence import (
    LEDGER_DIR,
    REPO_ROOT,
    EvidenceRecord,
    GateResult,
    JsonValue,
    RunStatus,
    Verdict,
    file_record,
    ledger_slot,
    new_record,
    now,
    read_evidence,
    run_id,
)
from contracts.gates import Outcome, contract_mode
from contracts.ledger import RANK, judged_result
from contracts.spec import load_spec
from tools.integrity.record_checks import check_record_truth

KIND = "gpu-check"
NO_CUDA = "no CUDA device: gpu-check needs one; the CPU tests cover the kernel under TRITON_INTERPRET"
EXIT_INTERNAL = 1

DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16, "fp16": torch.float16}
# Shapes around what the CPU tests cannot show: tiles with a tail (N not a multiple of 64),
# grouped-query heads, both head dims the speed benchmark times, and a KV-cache step.
PARITY_CASES: dict[str, tuple[dict[str, int], bool]] = {
    "tail": ({"batch": 2, "heads": 4, "heads_kv": 4, "n": 100, "dim": 64}, True),
    "GQA 8/2 + tail, D=128": ({"batch": 2, "heads": 8, "heads_kv": 2, "n": 257, "dim": 128}, True),
    "GQA 6/2, not causal": ({"batch": 1, "heads": 6, "heads_kv": 2, "n": 1000, "dim": 64}, False),
    "cache: 5 queries, 300 keys": (
        {"batch": 1, "heads": 8, "heads_kv": 2, "n": 5, "n_kv": 300, "dim": 64},
        True,
    ),
}
RESUME_GATE = "GATE-CKPT-003"
DIST_GATE = "GATE-DIST-001"
INTEGRITY_GATE = "GATE-INTEG-001"
ATTENTION_GOAL = "attention_triton_vs_sdpa"

# The training runs: the `base` preset (the smaller of the two sizes people train on one GPU),
# with the triton attention.
PRESET = "base"
BF16_STEPS = 200
FP16_STEPS = 100  # resumed from its checkpoint at FP16_STEPS // 2
THROUGHPUT_STEPS = 40
NPROC_STEPS = 6
NPROC_RANK_BATCH = 8
# What a resume must reproduce bit for bit: every logged number of every step, and the end state.
COMPARED_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "loss_scale", "batch_sha256")
COMPARED_FILES = ("model.safetensors", "optimizer.safetensors")
MISMATCHES_KEPT = 20


@dataclass
class Step:
    """One check's outcome: PASS, FAIL or SKIPPED, a one-line summary, its numbers, the gate
    results it judged, and the benchmark goals it measured (goal name → value)."""

    name: str
    status: str
    summary: str
    seconds: float = 0.0
    measured: dict[str, JsonValue] = field(default_factory=dict)
    results: list[GateResult] = field(default_factory=list)
    benchmarks: dict[str, float] = field(default_factory=dict)

    @property
    def fired(self) -> list[str]:
        """The gates this step judged FAIL."""
        return sorted({r.id for r in self.results if r.verdict is Verdict.FAIL})

    def as_json(self) -> dict[str, JsonValue]:
        """The step as the record's metrics keep it; the gate results go to the record's gates."""
        return {
            "name": self.name,
            "status": self.status,
            "summary": self.summary,
            "seconds": self.seconds,
            "fired": self.fired,
            "measured": self.measured,
        }


def judged_step(
    name: str, summary: str, results: list[GateResult], problem: str | None, **extra: Any
) -> Step:
    """A step that FAILs when any gate result it judged failed or `problem` says what went wrong."""
    failed = problem is not None or any(r.verdict is Verdict.FAIL for r in results)
    if problem is not None:
        summary = problem
    return Step(name, FAIL if failed else PASS, summary, results=results, **extra)


def timed(name: str, check: Callable[[], Step]) -> Step:
    """Run one check; a crash is this step's FAIL with its traceback on stderr, not the end of the others."""
    print(f"gpu-check: {name} ...", file=sys.stderr, flush=True)
    start = time.perf_counter()
    try:
        step = check()
    except Exception as exc:  # a crash is a result to report, like any other
        traceback.print_exc()
        step = Step(name, FAIL, f"internal error: {type(exc).__name__}: {' '.join(str(exc).split())[:300]}")
    step.seconds = round(time.perf_counter() - start, 1)
    print(
        f"gpu-check: {name}: {step.status} ({step.seconds:.1f} s) {step.summary}", file=sys.stderr, flush=True
    )
    return step


# -- the kernel ------------------------------------------------------------------------------


def parity_case(shape: dict[str, int], causal: bool, dtype: str, device: str) -> Outcome:
    """GATE-KERNEL-001's outcome for one case: the kernel against the fp32 reference on the same inputs."""
    from benchmarks.attention import parity_outputs
    from stack.kernels.parity import kernel_parity

    ours, reference = parity_outputs(shape, causal, DTYPES[dtype], device)
    return kernel_parity(
        {k: v.float() for k, v in ours.items()}, reference, low_precision=low_precision(dtype)
    )


def check_parity(device: str) -> Step:
    """Every dtype × case; the record keeps the gate result of the failing cases, else of the
    low-precision ones (what only compiled code can get wrong), and every case under metrics."""
    spec = load_spec()
    cases: list[dict[str, JsonValue]] = []
    # fp32 (False) and fp16/bf16 (True) are judged with different tolerances: one measurement each.
    judged: dict[bool, dict[str, Any]] = {False: {}, True: {}}
    failing: dict[bool, dict[str, Any]] = {False: {}, True: {}}
    for dtype in DTYPES:
        low = low_precision(dtype)
        for case, (shape, causal) in PARITY_CASES.items():
            outcome = parity_case(shape, causal, dtype, device)
            named = {f"{dtype} {case}: {k}": v for k, v in outcome.measured["outputs"].items()}
            judged[low].update(named)
            if not outcome.ok:
                failing[low].update(named)
            cases.append(
                {
                    "dtype": dtype,
                    "case": case,
                    "shape": shape,
                    "causal": causal,
                    "ok": outcome.ok,
                    "message": outcome.message,
                    "measured": outcome.measured,
                }
            )
    low = next((group for group in (False, True) if failing[group]), None)
    if low is None:
        measured = {"low_precision": True, "outputs": judged[True]}
    else:
        measured = {"low_precision": low, "outputs": failing[low]}
    result = judged_result(spec, KERNEL_GATE, measured, waived=False)
    worst = {
        dtype: max(largest_diff(c["measured"]) for c in cases if c["dtype"] == dtype)  # type: ignore[index,arg-type]
        for dtype in DTYPES
    }
    bad = [f"{c['dtype']} {c['case']}" for c in cases if not c["ok"]]
    largest = ", ".join(f"{d} {v:.1e}" for d, v in worst.items())
    summary = (
        f"{len(cases)} cases ({', '.join(DTYPES)} × {len(PARITY_CASES)} shapes) within tolerance; "
        f"largest |diff| {largest}"
    )
    problem = f"{KERNEL_GATE}: {len(bad)} case(s) out of tolerance: {', '.join(bad)}" if bad else None
    return judged_step(
        PARITY_STEP, summary, [result], problem, measured={"cases": cases, "largest_diff": worst}
    )


def check_speed(repeats: int) -> Step:
    """The attention benchmark's shapes with the triton and SDPA paths, SDPA held to its flash kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from benchmarks.attention import speed

    with sdpa_kernel(SDPBackend.FLASH_ATTENTION):
        shapes, ratio = speed(repeats, paths=("triton", "sdpa"))
    if ratio is None:
        return Step("attention speed", FAIL, "no shape ran on both paths", measured={"shapes": shapes})
    goal = load_spec().benchmark(ATTENTION_GOAL)
    largest = max(shapes, key=lambda row: (row["n"], row["dim"]))
    sides = {path: largest[path]["fwd_bwd_tflops"] for path in ("triton", "sdpa")}  # type: ignore[index]
    summary = (
        f"triton/sdpa fwd+bwd {ratio:.3f}x, geometric mean of {len(shapes)} bf16 causal shapes "
        f"(goal ≥ {goal.goal}: {'met' if goal.met(ratio) else 'not met'}); at N={largest['n']} "
        f"D={largest['dim']}: triton {sides['triton']:.0f}, sdpa {sides['sdpa']:.0f} TFLOP/s"
    )
    return Step(
        "attention speed",
        PASS,
        summary,
        measured={"shapes": shapes, "ratio": ratio, "repeats": repeats},
        benchmarks={ATTENTION_GOAL: ratio},
    )


# -- training through the real CLI -----------------------------------------------------------


def stack_cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    """`python -m stack ARGS`, as a user runs it, in a fresh interpreter; output captured."""
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    argv = [sys.executable, "-m", "stack", *map(str, args)]
    return subprocess.run(argv, cwd=REPO_ROOT, env=env, capture_output=True, text=True, check=False)


def last_line(text: str) -> str:
    """The last non-empty line of a command's output: where the CLI puts its one-line reason."""
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def metrics_lines(run_dir: Path) -> list[dict[str, Any]]:
    """Every line of a run's metrics.jsonl."""
    return [json.loads(x) for x in (run_dir / "metrics.jsonl").read_text().splitlines() if x.strip()]


def step_lines(run_dir: Path) -> list[dict[str, Any]]:
    """The per-step lines of a run's metrics.jsonl."""
    return [line for line in metrics_lines(run_dir) if line.get("type") == "step"]


def checkpoint_timing(run_dir: Path) -> dict[str, JsonValue]:
    """What a checkpoint of the run costs: its size, the slowest write the run logged (each
    checkpoint event of metrics.jsonl carries its seconds), and the seconds its last checkpoint
    takes to verify, every file against its sha256 as a resume loads it (GATE-CKPT-002), timed here."""
    from stack.train import checkpoint as ckpt

    # An adopted checkpoint's event (logged at a resume after a kill) has no write time of its own.
    events = [line for line in metrics_lines(run_dir) if line.get("event") == "checkpoint"]
    writes = [line["seconds"] for line in events if not line.get("adopted")]
    last = ckpt.list_checkpoints(run_dir)[-1]
    started = time.perf_counter()
    ckpt.load_checkpoint(last)
    return {
        "checkpoint_bytes": sum(f.stat().st_size for f in last.iterdir()),
        "write_seconds": max(writes) if writes else None,
        "verify_seconds": round(time.perf_counter() - started, 3),
    }


@dataclass
class TrainRun:
    """What one `stack train` left: its exit code and reason, its record, and what the integrity
    check's record checks find wrong with that record."""

    run_dir: Path
    code: int
    reason: str
    record: EvidenceRecord | None
    violations: list[str]

    @property
    def results(self) -> list[GateResult]:
        """The run's own gate results, and GATE-INTEG-001 judged over its record's violations."""
        if self.record is None:
            return []
        integrity = judged_result(
            load_spec(),
            INTEGRITY_GATE,
            {"violations": len(self.violations), "findings": self.violations[:MISMATCHES_KEPT]},
            waived=False,
        )
        return [*self.record.gates, integrity]

    @property
    def problem(self) -> str | None:
        """Why this run does not count as a clean pass, in one line; None when it does."""
        if self.code != EXIT_OK:
            return f"stack train exited {self.code}: {self.reason}"
        if self.record is None:
            return f"{self.run_dir} has no metadata.json"
        if self.record.run.status is not RunStatus.COMPLETED:
            return f"the run ended {self.record.run.status.value}: {self.record.run.stop_reason}"
        if self.violations:
            return f"{INTEGRITY_GATE}: its record is not true: {self.violations[0]}"
        return None

    def verdicts(self) -> str:
        """'17 gates: 16 PASS, 1 WARN (GATE-DATA-004)' for the run's own record."""
        gates = self.record.gates if self.record is not None else []
        counts: dict[str, list[str]] = {}
        for result in gates:
            counts.setdefault(result.verdict.value, []).append(result.id)
        parts = [
            f"{len(ids)} {verdict}" + ("" if verdict == Verdict.PASS.value else f" ({', '.join(ids)})")
            for verdict, ids in sorted(counts.items(), key=lambda kv: RANK[Verdict(kv[0])])
        ]
        return f"{len(gates)} gates: {', '.join(parts)}"


def train_run(run_dir: Path, *args: str | Path) -> TrainRun:
    """Run `stack train ARGS` whose record lands in `run_dir`, and re-judge that record."""
    proc = stack_cli("train", *args)
    path = run_dir / "metadata.json"
    record = read_evidence(path) if path.is_file() else None
    violations = check_record_truth(record, run_dir, load_spec()).violations if record is not None else []
    return TrainRun(run_dir, proc.returncode, last_line(proc.stderr), record, violations)


def train_sets(device: str, precision: str, steps: int, every: int, *extra: str) -> list[str]:
    """`--set` arguments of a check run: evaluation, samples and checkpoints every `every` steps,
    then the `extra` items (section.key=value)."""
    items = [
        f"train.device='{device}'",
        f"train.precision='{precision}'",
        "model.attention='triton'",
        f"train.steps={steps}",
        f"eval.every={every}",
        f"ckpt.every={every}",
        "ckpt.keep_last=4",
        f"monitor.sample_every={every}",
        *extra,
    ]
    return [arg for item in items for arg in ("--set", item)]


def check_prepare(data: Path) -> Step:
    """`stack prepare --default`: the corpus every training step reads."""
    proc = stack_cli("prepare", "--default", "--out", data)
    if proc.returncode != EXIT_OK:
        return Step(
            "prepare corpus", FAIL, f"stack prepare exited {proc.returncode}: {last_line(proc.stderr)}"
        )
    manifest = json.loads((data / "manifest.json").read_text())
    tokens = {split: 0 for split in ("train", "heldout")}
    for shard in manifest["shards"]:
        tokens[shard["split"]] = tokens.get(shard["split"], 0) + shard["tokens"]
    summary = f"the default corpus: {tokens['train']:,} training and {tokens['heldout']:,} held-out tokens"
    return Step("prepare corpus", PASS, summary, measured={"tokens": tokens})


def check_bf16_training(data: Path, work: Path, device: str) -> Step:
    """A short `base`-preset run in bf16 with the triton attention, under every training gate; its
    speed, utilisation, peak memory and the cost of its checkpoints."""
    run_dir = work / "bf16"
    run = train_run(
        run_dir,
        *("--data", data, "--out", run_dir, "--preset", PRESET),
        *train_sets(device, "bf16", BF16_STEPS, BF16_STEPS // 2),
    )
    measured: dict[str, JsonValue] = {"exit": run.code, "violations": run.violations}
    summary = ""
    if run.problem is None and run.record is not None:
        from benchmarks.train_throughput import logged_rate

        rate = logged_rate(run_dir)
        loss = run.record.metrics.get("last_heldout_loss")
        utilisation = run_mfu(run.record, rate)
        timing = checkpoint_timing(run_dir)
        peak = run.record.metrics.get("peak_memory_bytes")
        measured |= {
            "tokens_per_s": round(rate),
            "mfu": utilisation,
            "last_heldout_loss": loss,
            "peak_memory_bytes": peak,
            **timing,
        }
        held_out = f"held-out loss {loss:.3f}" if isinstance(loss, int | float) else "no held-out loss"
        mfu_text = "MFU unknown for this GPU" if utilisation is None else f"MFU {utilisation:.1%}"
        speed = f"{rate:,.0f} tokens/s ({mfu_text})"
        memory = f"peak {peak / 2**30:.1f} GiB, " if isinstance(peak, int) else ""
        saved = (
            f"checkpoint of {int(timing['checkpoint_bytes']) / 2**20:.0f} MiB written in "  # type: ignore[arg-type]
            f"{timing['write_seconds']} s, verified in {timing['verify_seconds']} s"
        )
        summary = f"{BF16_STEPS} steps of `{PRESET}`, {speed}, {memory}{held_out}, {saved}; {run.verdicts()}"
    return judged_step("bf16 training", summary, run.results, run.problem, measured=measured)


def run_mfu(record: EvidenceRecord, tokens_per_s: float) -> float | None:
    """Model FLOPs utilisation of a training record's run at `tokens_per_s` (stack.train.flops)."""
    from stack.model.config import ModelConfig
    from stack.train.flops import mfu

    return mfu(tokens_per_s, ModelConfig.from_dict(record.config["model"]), torch.cuda.get_device_name(0))


def interrupted_copy(run_dir: Path, copy: Path, at_step: int) -> Path:
    """`run_dir` as if it had died right after its checkpoint at `at_step`: later checkpoints gone."""
    from stack.train import checkpoint as ckpt

    shutil.copytree(run_dir, copy)
    for path in ckpt.list_checkpoints(copy):
        if int(path.name.split("-")[1]) > at_step:
            shutil.rmtree(path)
    return copy


def differences(straight: Path, resumed: Path) -> list[str]:
    """Where two runs' step histories or last checkpoints differ, bit for bit (empty when identical)."""
    from safetensors.torch import load_file

    from stack.train import checkpoint as ckpt

    found = []
    lines_a, lines_b = step_lines(straight), step_lines(resumed)
    if len(lines_a) != len(lines_b):
        found.append(f"{len(lines_a)} vs {len(lines_b)} steps")
    for a, b in zip(lines_a, lines_b, strict=False):
        found += [f"step {a['step']} {k}" for k in COMPARED_FIELDS if a.get(k) != b.get(k)]
    last_a, last_b = ckpt.list_checkpoints(straight)[-1], ckpt.list_checkpoints(resumed)[-1]
    if last_a.name != last_b.name:
        found.append(f"last checkpoint {last_a.name} vs {last_b.name}")
    for name in COMPARED_FILES:
        ta, tb = load_file(str(last_a / name)), load_file(str(last_b / name))
        found += [f"{name} {k}" for k in sorted(set(ta) | set(tb)) if k not in ta or k not in tb]
        found += [f"{name} {k}" for k in sorted(set(ta) & set(tb)) if not torch.equal(ta[k], tb[k])]
    return found


def check_fp16_resume(data: Path, work: Path, device: str) -> Step:
    """fp16 with the loss scaler: straight, against a resume from the mid checkpoint, bit for bit.

    When they differ, a second straight run tells the two causes apart: a resume that lost some
    state (the straight runs agree), or training that does not repeat itself on this GPU at all.
    """
    mid = FP16_STEPS // 2

    def straight_run(run_dir: Path) -> TrainRun:
        return train_run(
            run_dir,
            *("--data", data, "--out", run_dir, "--preset", PRESET),
            *train_sets(device, "fp16", FP16_STEPS, mid),
        )

    straight_dir = work / "fp16"
    straight = straight_run(straight_dir)
    if straight.problem is not None:
        return judged_step("fp16 resume", "", straight.results, f"the straight run: {straight.problem}")
    resumed_dir = interrupted_copy(straight_dir, work / "fp16-resumed", mid)
    resumed = train_run(resumed_dir, "--resume", resumed_dir)
    runs = [straight, resumed]
    if resumed.problem is not None:
        return judged_step(
            "fp16 resume", "", [r for run in runs for r in run.results], f"the resume: {resumed.problem}"
        )
    mismatched = differences(straight_dir, resumed_dir)
    compared = [f"metrics.jsonl steps 1-{FP16_STEPS}: {', '.join(COMPARED_FIELDS)}", *COMPARED_FILES]
    exact = judged_result(
        load_spec(),
        RESUME_GATE,
        {"compared": compared, "mismatched": mismatched[:MISMATCHES_KEPT], "mismatches": len(mismatched)},
        waived=False,
    )
    scales = sorted({line["loss_scale"] for line in step_lines(straight_dir)})
    measured: dict[str, JsonValue] = {"mismatched": mismatched[:MISMATCHES_KEPT], "loss_scales": scales}
    summary = (
        f"{FP16_STEPS} steps straight = {mid} + resume + {FP16_STEPS - mid}, bit for bit "
        f"(every step's {', '.join(COMPARED_FIELDS[2:])}; weights and optimizer); "
        f"loss scale {scales[0]:g}..{scales[-1]:g}"
    )
    problem = None
    if mismatched:
        again = straight_run(work / "fp16-again")
        runs.append(again)
        repeat = differences(straight_dir, again.run_dir) if again.problem is None else [str(again.problem)]
        measured["straight_repeat_mismatched"] = repeat[:MISMATCHES_KEPT]
        cause = (
            f"a second straight run differs too (first {repeat[0]}): training does not repeat itself here"
            if repeat
            else "a second straight run repeats the first exactly: the resume lost some state"
        )
        problem = f"{RESUME_GATE}: {len(mismatched)} difference(s), first {mismatched[0]}; {cause}"
    return judged_step(
        "fp16 resume", summary, [*(r for run in runs for r in run.results), exact], problem, measured=measured
    )


def check_compile(data: Path, work: Path, device: str) -> Step:
    """`stack train` eager and with torch.compile against a plain eager loop (the demo preset)."""
    from benchmarks.train_throughput import logged_rate, plain_loop, stack_argv, steady_sets

    sets = steady_sets(THROUGHPUT_STEPS, device)
    plain = plain_loop(data, "demo", sets, THROUGHPUT_STEPS)
    runs = {}
    for name, compiled in (("eager", False), ("compiled", True)):
        out = work / name
        argv = stack_argv(data, out, "demo", sets, THROUGHPUT_STEPS, compiled)
        runs[name] = train_run(out, *argv[1:])  # argv[0] is the sub-command, "train"
    results = [r for run in runs.values() for r in run.results]
    problems = [f"{name}: {run.problem}" for name, run in runs.items() if run.problem is not None]
    if problems:
        return judged_step("compile", "", results, "; ".join(problems))
    eager, compiled = logged_rate(work / "eager"), logged_rate(work / "compiled")
    lost, speedup = overhead(plain, eager), quotient(compiled, plain)
    record = runs["compiled"].record
    utilisation = None if record is None else run_mfu(record, compiled)
    mfu_text = "" if utilisation is None else f", MFU {utilisation:.1%}"
    summary = (
        f"demo preset, tokens/s: plain loop {plain:,.0f}, stack eager {eager:,.0f} "
        f"(overhead {lost:.1%}), stack compiled {compiled:,.0f} ({speedup:.2f}x the plain loop{mfu_text})"
    )
    return judged_step(
        "compile",
        summary,
        results,
        None,
        measured={
            "plain_tokens_per_s": round(plain),
            "stack_tokens_per_s": round(eager),
            "compiled_tokens_per_s": round(compiled),
            "compiled_mfu": utilisation,
            "steps": THROUGHPUT_STEPS,
            "preset": "demo",
        },
        benchmarks={TRAIN_BENCHMARK: round(lost, 4), "train_compile_speedup": round(speedup, 3)},
    )


def check_nproc(data: Path, work: Path, device: str, gpus: int) -> Step:
    """`--nproc` over every visible GPU (NCCL) against one process reading the same global batches."""
    from stack.train.dist_parity import loss_parity

    if gpus < 2:
        reason = f"--nproc needs ≥2 GPUs; {gpus} visible (NCCL refuses two ranks on one GPU)"
        return Step("nproc (NCCL)", SKIPPED, reason)
    runs = {}
    for name, nproc in (("single", 1), ("parallel", gpus)):
        out = work / name
        batch = f"train.batch_size={NPROC_RANK_BATCH * gpus // nproc}"  # the same global batch
        sets = train_sets(device, "fp32", NPROC_STEPS, NPROC_STEPS, batch)
        runs[name] = train_run(
            out, "--data", data, "--out", out, "--preset", PRESET, "--nproc", str(nproc), *sets
        )
    results = [r for run in runs.values() for r in run.results]
    problems = [f"{name}: {run.problem}" for name, run in runs.items() if run.problem is not None]
    if problems:
        return judged_step("nproc (NCCL)", "", results, "; ".join(problems))
    outcome = loss_parity(step_lines(work / "single"), step_lines(work / "parallel"))
    parity = judged_result(load_spec(), DIST_GATE, outcome.measured, waived=False)
    summary = (
        f"{gpus} ranks × batch {NPROC_RANK_BATCH} = 1 process × batch {NPROC_RANK_BATCH * gpus} "
        f"over {NPROC_STEPS} steps: same batches, losses within {outcome.measured['max_loss_diff']:.1e}"
    )
    problem = None if outcome.ok else f"{DIST_GATE}: {outcome.message}"
    return judged_step(
        "nproc (NCCL)", summary, [*results, parity], problem, measured={"gpus": gpus, **outcome.measured}
    )


# -- the record and the report ---------------------------------------------------------------


def worst_per_gate(results: Iterable[GateResult]) -> list[GateResult]:
    """For each gate, the worst verdict among `results` (the first of equals); NOT_RUN is left out.

    A gate several steps judged is as good as its worst judgement, and that result, with the
    numbers behind it, is what the record keeps and what the integrity check re-judges.
    """
    worst: dict[str, GateResult] = {}
    for result in results:
        if result.verdict is Verdict.NOT_RUN:
            continue
        kept = worst.get(result.id)
        if kept is None or RANK[result.verdict] > RANK[kept.verdict]:
            worst[result.id] = result
    return [worst[k] for k in sorted(worst)]


def outcome_of(steps: list[Step]) -> tuple[int, RunStatus, str]:
    """Exit code, record status (the rule the integrity check derives it by) and the last line: a
    fired gate first, then any other failure."""
    status = check_status((step.status, step.fired) for step in steps)
    if status is RunStatus.HALTED:
        fired = sorted({gate for step in steps for gate in step.fired})
        where = [step.name for step in steps if step.fired]
        return EXIT_GATE, status, f"gpu-check: {', '.join(fired)} fired ({', '.join(where)})"
    if status is RunStatus.FAILED:
        failed = [step.name for step in steps if step.status == FAIL]
        return EXIT_INTERNAL, status, f"gpu-check: {', '.join(failed)} failed"
    ran = sum(step.status == PASS for step in steps)
    return EXIT_OK, status, f"gpu-check: all {ran} checks that ran passed ({len(steps) - ran} skipped)"


def benchmark_metrics(steps: list[Step], device: str) -> dict[str, JsonValue]:
    """The benchmark goals measured by passing steps, in the keys the benchmarks page reads:
    `benchmark` and `also` name them, each goal's metric holds its value."""
    spec = load_spec()
    measured = {
        name: value for step in steps if step.status == PASS for name, value in step.benchmarks.items()
    }
    if not measured:
        return {}
    names = list(measured)
    out: dict[str, JsonValue] = {"benchmark": names[0], "also": names[1:]}
    goals: dict[str, JsonValue] = {}
    for name, value in measured.items():
        goal = spec.benchmark(name)
        out[goal.metric] = value
        goals[name] = {"metric": goal.metric, "measured": value, "goal": goal.goal, "met": goal.met(value)}
    return out | {"goals": goals, "note": f"measured on {device} by make gpu-check"}


def finish(record: EvidenceRecord, steps: list[Step], gpus: int) -> int:
    """Fill `record` from the steps (gates, metrics, status); returns the exit code."""
    code, status, line = outcome_of(steps)
    record.gates = worst_per_gate(r for step in steps for r in step.results)
    record.metrics = {
        "gpus": gpus,
        "steps": [step.as_json() for step in steps],
        **benchmark_metrics(steps, record.env.device),
    }
    record.run.status, record.run.stop_reason, record.run.finished = status, line, now()
    return code


def report(steps: list[Step], header: str) -> str:
    """The compact table: one line per step with its verdict, time and numbers."""
    width = max(len(step.name) for step in steps)
    lines = [header, f"{'check':<{width}}  {'result':<7}  {'time':>7}  numbers"]
    for step in steps:
        lines.append(f"{step.name:<{width}}  {step.status:<7}  {step.seconds:>6.1f}s  {step.summary}")
    return "\n".join(lines)


def environment(gpus: int) -> str:
    """One line: the GPU and the versions the check ran with."""
    try:
        triton = metadata.version("triton")
    except metadata.PackageNotFoundError:
        triton = "not installed"
    return (
        f"gpu-check on {torch.cuda.get_device_name(0)} ({gpus} visible): torch {torch.__version__}, "
        f"triton {triton}, CUDA {torch.version.cuda}"
    )


def refusal() -> str:
    """The one line without CUDA; with a CPU build of torch it also says how to get a CUDA one,
    since a GPU that is there but unseen by torch looks the same from here."""
    if torch.version.cuda is not None:
        return NO_CUDA
    return f"{NO_CUDA} (torch {torch.__version__} is a CPU build; docs/gpu.md says how to install a CUDA one)"


def run_checks(work: Path, repeats: int, gpus: int) -> list[Step]:
    """Every step in order; the training steps are skipped when the corpus could not be prepared."""
    device, data = "cuda", work / "data"
    steps = [
        timed(PARITY_STEP, lambda: check_parity(device)),
        timed("attention speed", lambda: check_speed(repeats)),
        timed("prepare corpus", lambda: check_prepare(data)),
    ]
    training: list[tuple[str, Callable[[], Step]]] = [
        ("bf16 training", lambda: check_bf16_training(data, work, device)),
        ("fp16 resume", lambda: check_fp16_resume(data, work, device)),
        ("compile", lambda: check_compile(data, work, device)),
        ("nproc (NCCL)", lambda: check_nproc(data, work, device, gpus)),
    ]
    for name, check in training:
        if steps[2].status == PASS:
            steps.append(timed(name, check))
        else:
            steps.append(Step(name, SKIPPED, "no corpus: the prepare step failed"))
    return steps


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--ledger",
        type=Path,
        default=REPO_ROOT / LEDGER_DIR,
        help="file the record here (default evidence/runs)",
    )
    parser.add_argument("--repeats", type=int, default=10, help="timed repetitions per attention shape")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print(refusal(), file=sys.stderr)
        return EXIT_BAD_INPUT
    gpus = torch.cuda.device_count()
    header = environment(gpus)
    print(header, file=sys.stderr)
    rid = run_id(KIND)
    ledger_slot(args.ledger, rid)  # a clash is refused before any work
    device = torch.cuda.get_device_name(0)
    record = new_record(KIND, rid, sys.argv, device, torch.version.cuda, contract_mode().value)
    record.config = {
        "parity_cases": {name: {**shape, "causal": causal} for name, (shape, causal) in PARITY_CASES.items()},
        "dtypes": list(DTYPES),
        "repeats": args.repeats,
        "train": {
            "preset": PRESET,
            "attention": "triton",
            "bf16_steps": BF16_STEPS,
            "fp16_steps": FP16_STEPS,
            "throughput_steps": THROUGHPUT_STEPS,
            "nproc_steps": NPROC_STEPS,
        },
    }
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as tmp:
        steps = run_checks(Path(tmp), args.repeats, gpus)
    code = finish(record, steps, gpus)
    path = file_record(args.ledger, record)
    print(report(steps, header))
    print(f"-> {path}")
    print(record.run.stop_reason)
    return code
