"""`make gpu-check` on a machine without CUDA: its refusal, and the report and record it files.

The checks themselves need a GPU; here the real step, record and report code runs on steps built
from real gate results (the kernel's parity under Triton's interpreter, the resume comparison on
files written here), so the record's form is the one the integrity check and the site read.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from contracts.evidence import RunStatus, Verdict, new_record, read_evidence, run_id
from contracts.ledger import judged_result
from contracts.spec import load_spec
from stack.kernels import flash_attention as fa
from tools.integrity.record_checks import check_record_truth
from tools.records import gpu_check

pytestmark = pytest.mark.triton  # Triton's kernel runs here, interpreted on a CPU

ROOT = Path(__file__).resolve().parents[2]
TAIL = {"batch": 1, "heads": 4, "heads_kv": 2, "n": 70, "dim": 16}  # GQA, one tile and a tail


def test_without_cuda_it_refuses_in_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "CUDA_VISIBLE_DEVICES": ""}
    proc = subprocess.run(
        [sys.executable, "tools/gpu_check.py", "--ledger", str(tmp_path / "ledger")],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
    )
    assert proc.returncode == 2
    assert proc.stderr.startswith(gpu_check.NO_CUDA) and proc.stderr.count("\n") == 1
    assert proc.stdout == ""
    assert not (tmp_path / "ledger").exists()  # nothing filed


def kernel_step(dtype: str) -> gpu_check.Step:
    """A parity step from one real case: the kernel (interpreted here) against the reference."""
    outcome = gpu_check.parity_case(TAIL, True, dtype, "cpu")
    result = judged_result(load_spec(), gpu_check.KERNEL_GATE, outcome.measured, waived=False)
    return gpu_check.judged_step("kernel parity", "1 case", [result], None)


def resume_step(mismatched: list[str]) -> gpu_check.Step:
    measured = {"compared": ["metrics.jsonl", "model.safetensors"], "mismatched": mismatched}
    result = judged_result(load_spec(), gpu_check.RESUME_GATE, measured, waived=False)
    return gpu_check.judged_step("fp16 resume", "bit for bit", [result], None)


def filed(steps: list[gpu_check.Step], ledger: Path) -> tuple[int, Path]:
    """Finish and file a gpu-check record of `steps` as main() does; exit code and record path."""
    record = new_record(gpu_check.KIND, run_id(gpu_check.KIND), ["tools/gpu_check.py"], "test GPU", "13.0")
    # As a GPU machine states it: a CUDA build of torch (this machine's CPU-only build ran nowhere
    # else, which the checker holds a record's env to: tools/env_checks.py).
    record.env = record.env.model_copy(update={"torch": record.env.torch.split("+")[0] + "+cu130"})
    code = gpu_check.finish(record, steps, gpus=1)
    return code, gpu_check.file_record(ledger, record)


def test_a_passing_check_files_a_true_record_for_the_benchmarks_page(tmp_path: Path) -> None:
    speed = gpu_check.Step(
        "attention speed", gpu_check.PASS, "0.8x", benchmarks={"attention_triton_vs_sdpa": 0.8}
    )
    skipped = gpu_check.Step("nproc (NCCL)", gpu_check.SKIPPED, "--nproc needs ≥2 GPUs; 1 visible")
    steps = [kernel_step("bf16"), speed, resume_step([]), skipped]
    code, path = filed(steps, tmp_path)
    assert code == 0
    record = read_evidence(path)
    assert record.run.kind == "gpu-check" and record.run.status is RunStatus.COMPLETED
    assert record.run.stop_reason == "gpu-check: all 3 checks that ran passed (1 skipped)"
    assert {g.id: g.verdict for g in record.gates} == {
        "GATE-CKPT-003": Verdict.PASS,
        "GATE-KERNEL-001": Verdict.PASS,
    }
    assert check_record_truth(record, path.parent, load_spec()).violations == []
    assert [s["status"] for s in record.metrics["steps"]] == ["PASS", "PASS", "PASS", "SKIPPED"]
    # What the site's benchmarks page reads: `benchmark` (and `also`) name the goals, and each
    # goal's metric of spec/benchmarks.yaml holds the number it judges against the goal.
    assert record.metrics["benchmark"] == "attention_triton_vs_sdpa" and record.metrics["also"] == []
    assert record.metrics[load_spec().benchmark("attention_triton_vs_sdpa").metric] == 0.8
    assert record.metrics["note"] == "measured on test GPU by make gpu-check"

    table = gpu_check.report(steps, "gpu-check on test GPU").splitlines()
    assert table[1].split() == ["check", "result", "time", "numbers"]
    assert [line.split()[:2] for line in table[2:]] == [
        ["kernel", "parity"],
        ["attention", "speed"],
        ["fp16", "resume"],
        ["nproc", "(NCCL)"],
    ]
    assert "SKIPPED" in table[-1] and "1 visible" in table[-1]


def test_a_gate_that_fires_halts_the_record_and_exits_3(tmp_path: Path) -> None:
    steps = [kernel_step("fp32"), resume_step(["step 7 loss", "model.safetensors embed.weight"])]
    assert steps[1].status == gpu_check.FAIL and steps[1].fired == ["GATE-CKPT-003"]
    code, path = filed(steps, tmp_path)
    assert code == 3
    record = read_evidence(path)
    assert record.run.status is RunStatus.HALTED
    assert record.run.stop_reason == "gpu-check: GATE-CKPT-003 fired (fp16 resume)"
    assert check_record_truth(record, path.parent, load_spec()).violations == []


def test_a_crash_fails_its_own_step_and_the_check_exits_1() -> None:
    crashed = gpu_check.timed("compile", lambda: 1 // 0)  # type: ignore[arg-type,return-value]
    assert crashed.status == gpu_check.FAIL and crashed.summary.startswith(
        "internal error: ZeroDivisionError"
    )
    code, status, line = gpu_check.outcome_of([kernel_step("fp32"), crashed])
    assert (code, status, line) == (1, RunStatus.FAILED, "gpu-check: compile failed")


def test_each_gate_keeps_its_worst_verdict() -> None:
    spec = load_spec()
    held = judged_result(spec, "GATE-CKPT-003", {"compared": ["a"], "mismatched": []}, waived=False)
    broke = judged_result(spec, "GATE-CKPT-003", {"compared": ["a"], "mismatched": ["a"]}, waived=False)
    few = judged_result(spec, "GATE-DATA-004", {"repeats": 1.0, "tokens_per_parameter": 0.1}, waived=False)
    merged = gpu_check.worst_per_gate([held, few, broke, held])
    assert [(r.id, r.verdict) for r in merged] == [
        ("GATE-CKPT-003", Verdict.FAIL),
        ("GATE-DATA-004", few.verdict),
    ]
    assert merged[0].measured["mismatched"] == ["a"]  # the numbers behind the worst verdict


def test_the_parity_step_turns_red_on_a_kernel_that_reads_past_the_last_tile(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert gpu_check.parity_case(TAIL, False, "fp32", "cpu").ok
    monkeypatch.setattr(fa, "MASK_KV_TAIL", False)
    outcome = gpu_check.parity_case(TAIL, False, "bf16", "cpu")
    assert not outcome.ok and "out differs" in outcome.message


def fake_run(root: Path, losses: list[float], weight: float) -> Path:
    """A run directory with what `differences` reads: step lines and a last checkpoint."""
    lines = [
        {
            "type": "step",
            "step": i + 1,
            "epoch": 0,
            "loss": loss,
            "lr": 1e-3,
            "grad_norm": 1.0,
            "batch_sha256": "a",
        }
        for i, loss in enumerate(losses)
    ]
    root.mkdir()
    (root / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    last = root / "checkpoints" / f"step-{len(losses):07d}"
    last.mkdir(parents=True)
    for name in gpu_check.COMPARED_FILES:
        save_file({"w": torch.full((2,), weight)}, str(last / name))
    return root


def test_the_resume_comparison_is_bit_for_bit(tmp_path: Path) -> None:
    straight = fake_run(tmp_path / "a", [5.5, 5.4], 1.0)
    assert gpu_check.differences(straight, fake_run(tmp_path / "b", [5.5, 5.4], 1.0)) == []
    nudged = fake_run(tmp_path / "c", [5.5, 5.4 + 1e-15], 1.0 + 2**-23)
    assert gpu_check.differences(straight, nudged) == [
        "step 2 loss",
        "model.safetensors w",
        "optimizer.safetensors w",
    ]


def test_the_training_check_trains_the_base_preset(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """`make gpu-check` trains `base`, not `small`; what it passes to `stack train`."""
    asked: list[tuple[str, ...]] = []

    def refused(run_dir: Path, *args: str | Path) -> gpu_check.TrainRun:
        asked.append(tuple(map(str, args)))
        return gpu_check.TrainRun(run_dir, 2, "no corpus here", None, [])

    monkeypatch.setattr(gpu_check, "train_run", refused)
    step = gpu_check.check_bf16_training(tmp_path / "data", tmp_path, "cuda")
    assert step.status == gpu_check.FAIL and "no corpus here" in step.summary
    ((*_, preset_flag, preset), *_) = [args[:6] for args in asked]
    assert (preset_flag, preset) == ("--preset", "base")


def test_a_checkpoints_cost_is_its_logged_write_and_a_timed_verification(tmp_path: Path) -> None:
    from stack.data.tokenizer import ByteTokenizer
    from stack.data.tokenizer_record import tokenizer_state
    from stack.model.config import ModelConfig
    from stack.model.gpt import GPT
    from stack.train import checkpoint as ckpt

    model = GPT(ModelConfig(vocab=64, d_model=32, n_layers=1, n_heads=2, n_kv_heads=2, ffn_hidden=64, ctx=16))
    # Every key a checkpoint must hold (GATE-CKPT-001), with what a reader needs of its tokenizer.
    state: dict[str, object] = {key: {} for key in ckpt.STATE_KEYS if key not in ("format_version", "step")}
    state["tokenizer"] = tokenizer_state(ByteTokenizer())
    path = ckpt.save_checkpoint(tmp_path, 4, model, torch.optim.AdamW(model.parameters()), state)
    events = [
        {"type": "event", "event": "checkpoint", "step": s, "seconds": t} for s, t in ((2, 0.25), (4, 0.5))
    ]
    (tmp_path / "metrics.jsonl").write_text("".join(json.dumps(e) + "\n" for e in events))
    timing = gpu_check.checkpoint_timing(tmp_path)
    assert timing["write_seconds"] == 0.5 and timing["checkpoint_bytes"] == sum(
        f.stat().st_size for f in path.iterdir()
    )
    assert isinstance(timing["verify_seconds"], float) and timing["verify_seconds"] >= 0
    with open(path / "model.safetensors", "r+b") as weights:  # a flipped byte: the verification reads it
        weights.seek(-1, 2)
        last = weights.read(1)
        weights.seek(-1, 2)
        weights.write(bytes([last[0] ^ 1]))
    with pytest.raises(Exception, match="sha256"):
        gpu_check.checkpoint_timing(tmp_path)
