"""GATE-EXPORT-001's tolerance scales with the stack's own fp32 rounding.

An ordinary fp32 Llama built by transformers (8 layers of 512, logits near 8) differs from the
stack's logits by 1.13e-4, float summation order, which a fixed atol of 1e-4 would refuse. The
gate measures how far the stack's fp32 forward is from the same model in float64
on the sample (rounding_error) and admits up to logits_rounding_factor times that where it exceeds
logits_atol. A model with large logits makes the rounding large; a runtime just past the scaled
tolerance still halts, and one just inside it holds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from contracts.judges import judge
from contracts.spec import load_spec
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from stack.data.tokenizer_record import tokenizer_state
from stack.export.importer import fresh_state
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train.loop import build_optimizer
from tests.support.export_support import plant_shift, run_config

GATE = "GATE-EXPORT-001"
SCALE = 300.0  # the tied embedding scaled: logits in the hundreds, the fp32 rounding past atol / factor


def _thresholds() -> dict[str, float]:
    spec = load_spec()
    return {name: float(spec.threshold(GATE, name)) for name in ("logits_atol", "logits_rounding_factor")}


def _export(checkpoint: Path, out: Path) -> tuple[int, dict]:
    code = main(["export", str(checkpoint), "--out", str(out), "--format", "hf"])
    record = json.loads((out / "metadata.json").read_text()) if (out / "metadata.json").is_file() else {}
    return code, next((g for g in record.get("gates", []) if g["id"] == GATE), {})


@pytest.fixture(scope="module")
def loud(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, float]:
    """A checkpoint whose logits are large, and the tolerance its honest export was judged at."""
    root = tmp_path_factory.mktemp("loud")
    tokenizer = ByteTokenizer()
    config = run_config(tokenizer)
    net = GPT(config.model, seed=0)
    with torch.no_grad():
        net.embed.weight.mul_(SCALE)
    state = fresh_state(config, tokenizer_state(tokenizer), {"made_by": "tests"})
    path = ckpt.save_checkpoint(
        root / "run", 0, net, build_optimizer(net, config, torch.device("cpu")), state
    )
    code, result = _export(path, root / "honest")
    t = _thresholds()
    rounding = result["measured"]["rounding_error"]
    assert code == 0 and t["logits_rounding_factor"] * rounding > t["logits_atol"]  # the scaled regime
    return path, t["logits_rounding_factor"] * rounding


@pytest.mark.holds(GATE)
def test_a_runtime_off_by_less_than_the_scaled_tolerance_holds(
    loud: tuple[Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """0.9 × the scaled tolerance, past logits_atol: a correct model's rounding, not refused."""
    path, tolerance = loud
    plant_shift(monkeypatch, "logits_of", 0.9 * tolerance)
    code, result = _export(path, tmp_path / "hf")
    assert code == 0 and result["verdict"] == "PASS"
    assert result["measured"]["max_abs_diff"] > _thresholds()["logits_atol"]


@pytest.mark.gate(GATE)
def test_a_runtime_off_by_more_than_the_scaled_tolerance_halts(
    loud: tuple[Path, float], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """1.1 × the scaled tolerance: a layout or weight bug, refused (exit 3 naming the gate)."""
    path, tolerance = loud
    plant_shift(monkeypatch, "logits_of", 1.1 * tolerance)
    code, _ = _export(path, tmp_path / "hf")
    assert code == 3 and f"gate fired: {GATE}" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("rounding", "diff", "fires"),
    [(0.0, 1.1, True), (0.0, 0.9, False), (1.0, 11.0, True), (1.0, 9.0, False)],
)
def test_the_tolerance_is_the_larger_of_atol_and_factor_times_rounding(
    rounding: float, diff: float, fires: bool
) -> None:
    """In units of logits_atol: no rounding leaves the tolerance at the atol (1.1 fires, 0.9 holds);
    a rounding of one atol makes it factor × atol (11 fires, 9 holds, at factor 10)."""
    t = _thresholds()
    atol, factor = t["logits_atol"], t["logits_rounding_factor"]
    measured = {"max_abs_diff": diff * atol * factor / 10, "finite": True, "rounding_error": rounding * atol}
    if rounding == 0.0:
        measured["max_abs_diff"] = diff * atol
    assert bool(judge(GATE, measured)) is fires
