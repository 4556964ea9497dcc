"""The tuning smoke leg: `stack dpo`, `stack distill` and `stack synth` through the real CLI, in-process.

A random byte-level model stands in for a trained one (the commands' gates are about the loss and
the frozen model, not about quality): DPO tunes it on prepared preference pairs for 4 steps by the
training loop, a fresh smoke-preset student is distilled from it for 4 steps by the training loop, and synth
draws 3 samples from it. Each command leaves an evidence record judging every gate of its kind.
"""

from __future__ import annotations

import json
from pathlib import Path

from stack.cli import main
from tests.support.prefs_support import prepared_pairs
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared, unjudged


def test_dpo_distill_and_synth_leave_complete_records(tmp_path: Path) -> None:
    source = tmp_path / "source"
    save_run(source, tiny_model(ctx=128))

    pairs, tuned = prepared_pairs(tmp_path), tmp_path / "dpo"
    dpo = ["dpo", str(source), "--data", str(pairs), "--out", str(tuned), "--steps", "4", "--lr", "1e-3"]
    assert main([*dpo, "--batch-size", "1", "--device", "cpu"]) == 0
    assert unjudged(tuned, "dpo") == {}

    data, student = prepared(tmp_path), tmp_path / "student"
    distill = ["distill", str(source), "--data", str(data), "--out", str(student), "--preset", "smoke"]
    assert main([*distill, "--steps", "4", "--batch-size", "2", "--device", "cpu"]) == 0
    assert unjudged(student, "distill") == {}
    lines = [json.loads(line) for line in (student / "metrics.jsonl").read_text().splitlines()]
    assert [line["step"] for line in lines if line["type"] == "step"] == [1, 2, 3, 4]
    assert all({"kl", "nll"} <= line.keys() for line in lines if line["type"] == "step")

    samples = tmp_path / "synth"
    synth = ["synth", str(source), "--out", str(samples), "--samples", "3", "--max-response-tokens", "24"]
    loose = ["--min-chars", "1", "--min-coherence", "0.001", "--max-instruction-tokens", "12"]
    assert main([*synth, *loose]) == 0
    assert unjudged(samples, "synth") == {}
