"""What the export's parity gates and a surgery's gate measure: the two logits tensors, planted otherwise.

A mutant stack.export.parity.compare_logits that states the mean difference as `max_abs_diff` has
every parity atol applied to a mean, and every gate would pass. GATE-EXPORT-001 rev 5, GATE-EXPORT-002 rev
4 and GATE-LORA-007 rev 3 (check tensors, int8_tensors) judge the numbers contracts.logits_parity
computes from the two logits tensors, and hold the stated ones to them. The falsifiers plant the
mean in compare_logits (this process), alone as the mutant does, or beside a runtime whose logits are
one logit just beyond the atol; the holds put it just inside.

Planted: a laser or quantize surgery that writes its checkpoint without its source's chat template.
GATE-LASER-003 rev 3 (check template) holds the written state.json's template digest to the
source's (contracts.checkpoints.chat_template_sha256); the checker derives it again.
"""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.checkpoints import CHAT_TEMPLATE_KEY, chat_template_sha256
from contracts.evidence import read_evidence
from contracts.logits_parity import argmax_agreement, max_abs_difference
from contracts.spec import load_spec
from stack.export import parity
from stack.export.importer import imported_template
from stack.surgery import output
from stack.train.config import LoraSection
from tests.support.export_support import TARGETS, make_checkpoint, plant_shift, save_lora_run, shifted
from tests.support.ledger_support import edited, gate
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import one_line_cli
from tools.integrity.record_checks import check_record_truth

EXPORT_HF, EXPORT_ONNX, PEFT, SURGERY = (
    "GATE-EXPORT-001",
    "GATE-EXPORT-002",
    "GATE-LORA-007",
    "GATE-LASER-003",
)
JINJA = "{% for m in messages %}<|{{ m.role }}|>{{ m.content }}{% endfor %}"


def _atol(gate_id: str, name: str) -> float:
    return float(load_spec().threshold(gate_id, name))


def plant_mean(monkeypatch: pytest.MonkeyPatch, artefact: str | None = None) -> None:
    """The mutant: compare_logits states the mean |Δ| as max_abs_diff (of `artefact` only,
    when given)."""
    real = parity.compare_logits

    def mean_for_max(name: str, reference: torch.Tensor, candidate: torch.Tensor) -> parity.LogitsParity:
        check = real(name, reference, candidate)
        if artefact not in (None, name) or candidate.shape != reference.shape:
            return check
        return replace(check, max_abs_diff=float((candidate.double() - reference.double()).abs().mean()))

    monkeypatch.setattr(parity, "compare_logits", mean_for_max)


def _measured(ledger: Path, gate_id: str) -> dict[str, Any]:
    (filed,) = ledger.glob("*/metadata.json")
    return gate(json.loads(filed.read_text()), gate_id)["measured"]


@pytest.fixture(scope="module")
def fitted(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint with confident next-token predictions (its int8 graph keeps the argmax)."""
    return make_checkpoint(tmp_path_factory.mktemp("fitted"), fitted=True, n_kv_heads=1, ffn_hidden=72)


def _export(capsys: pytest.CaptureFixture[str], checkpoint: Path, out: Path, *extra: str) -> tuple[int, str]:
    return one_line_cli(capsys, "export", str(checkpoint), "--out", str(out), *extra)


# -- the parity gates judge the two logits tensors ---------------------------------------


@pytest.mark.gate(EXPORT_ONNX)
def test_an_fp32_graph_just_beyond_the_atol_stated_as_a_mean_halts(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    atol = _atol(EXPORT_ONNX, "fp32_logits_atol")
    plant_mean(monkeypatch)
    plant_shift(monkeypatch, "onnx_logits", atol * 1.1)
    out, ledger = tmp_path / "onnx", tmp_path / "ledger"
    code, err = _export(capsys, fitted, out, "--format", "onnx", "--evidence-dir", str(ledger))
    assert code == 3 and f"gate fired: {EXPORT_ONNX}" in err
    measured = _measured(ledger, EXPORT_ONNX)
    assert measured["fp32_max_abs_diff"] < atol < measured["fp32_max_abs_diff_tensors"]
    assert sorted(p.name for p in out.glob("*.onnx")) == ["model.unverified.onnx"]


@pytest.mark.holds(EXPORT_ONNX)
def test_an_fp32_graph_just_inside_the_atol_holds_with_its_max_stated(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    atol = _atol(EXPORT_ONNX, "fp32_logits_atol")
    plant_shift(monkeypatch, "onnx_logits", atol * 0.9)
    out, ledger = tmp_path / "onnx", tmp_path / "ledger"
    assert _export(capsys, fitted, out, "--format", "onnx", "--evidence-dir", str(ledger))[0] == 0
    measured = _measured(ledger, EXPORT_ONNX)
    assert measured["fp32_max_abs_diff"] == measured["fp32_max_abs_diff_tensors"] <= atol
    entry = json.loads((out / "export.json").read_text())["parity"]["model.onnx"]
    assert entry["tensors"]["max_abs_diff"] == entry["max_abs_diff"]
    assert len(entry["tensors"]["reference_sha256"]) == len(entry["tensors"]["candidate_sha256"]) == 64
    filed = next(ledger.glob("*"))
    assert check_record_truth(read_evidence(filed / "metadata.json"), filed, load_spec()).violations == []

    def restated(data: dict[str, Any], _run_dir: Path) -> None:
        """The record's recomputed difference edited (still within the atol): export.json decides it."""
        gate(data, EXPORT_ONNX)["measured"]["fp32_max_abs_diff_tensors"] = 0.0

    edited(filed, restated)
    found = check_record_truth(read_evidence(filed / "metadata.json"), filed, load_spec()).violations
    assert any("fp32_max_abs_diff_tensors" in str(v) for v in found), found


@pytest.mark.gate(EXPORT_ONNX)
def test_an_int8_graph_whose_difference_is_stated_as_a_mean_halts(
    fitted: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """An int8 export 0.04 off, stated 0.0013 (the mean of its differences); check int8_tensors holds
    the stated number to the tensors'."""
    plant_mean(monkeypatch, "model.int8.onnx")
    out, ledger = tmp_path / "onnx", tmp_path / "ledger"
    code, err = _export(capsys, fitted, out, "--format", "onnx", "--int8", "--evidence-dir", str(ledger))
    assert code == 3 and f"gate fired: {EXPORT_ONNX}" in err and "int8_max_abs_diff" in err
    measured = _measured(ledger, EXPORT_ONNX)
    assert measured["int8_max_abs_diff"] < measured["int8_max_abs_diff_tensors"]


@pytest.mark.gate(EXPORT_HF)
def test_a_hugging_face_export_whose_max_is_stated_as_the_mean_halts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The mean-as-max mutant as it ran: an export within the atol, its number the mean; the record would
    state a number its two tensors contradict."""
    checkpoint = make_checkpoint(tmp_path)
    plant_mean(monkeypatch)
    code, err = _export(capsys, checkpoint, tmp_path / "hf", "--format", "hf")
    assert code == 3 and f"gate fired: {EXPORT_HF}" in err and "contracts.logits_parity" in err


@pytest.mark.gate(EXPORT_HF)
def test_a_hugging_face_export_just_beyond_the_atol_stated_as_a_mean_halts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    atol = _atol(EXPORT_HF, "logits_atol")
    checkpoint = make_checkpoint(tmp_path)
    plant_mean(monkeypatch)
    plant_shift(monkeypatch, "logits_of", atol * 1.1)
    code, err = _export(capsys, checkpoint, tmp_path / "hf", "--format", "hf")
    assert code == 3 and f"gate fired: {EXPORT_HF}" in err


@pytest.mark.holds(EXPORT_HF)
def test_a_hugging_face_export_just_inside_the_atol_holds(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    atol = _atol(EXPORT_HF, "logits_atol")
    checkpoint = make_checkpoint(tmp_path)
    plant_shift(monkeypatch, "logits_of", atol * 0.9)
    assert _export(capsys, checkpoint, tmp_path / "hf", "--format", "hf")[0] == 0
    entry = json.loads((tmp_path / "hf" / "export.json").read_text())["parity"]["model.safetensors"]
    assert entry["max_abs_diff"] == entry["tensors"]["max_abs_diff"] <= atol


@pytest.fixture(scope="module")
def lora_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("peft")
    save_lora_run(root / "run", LoraSection(r=4, alpha=8.0, targets=TARGETS, rslora=True))
    return root / "run"


@pytest.mark.gate(PEFT)
def test_a_peft_adapter_just_beyond_the_atol_stated_as_a_mean_halts(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("peft")
    plant_mean(monkeypatch)
    plant_shift(monkeypatch, "peft_logits", _atol(PEFT, "logits_atol") * 1.1)
    code, err = one_line_cli(capsys, "lora", "export", str(lora_run), "--out", str(tmp_path / "peft"))
    assert code == 3 and f"gate fired: {PEFT}" in err


@pytest.mark.holds(PEFT)
def test_a_peft_adapter_just_inside_the_atol_holds(
    lora_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("peft")
    plant_shift(monkeypatch, "peft_logits", _atol(PEFT, "logits_atol") * 0.9)
    assert one_line_cli(capsys, "lora", "export", str(lora_run), "--out", str(tmp_path / "peft"))[0] == 0


@settings(max_examples=30)
@given(
    st.integers(1, 3),
    st.integers(1, 4),
    st.integers(2, 6),
    st.floats(-1e3, 1e3, allow_nan=False),
    st.data(),
)
def test_the_statute_reads_the_one_moved_logit_whatever_the_rest(
    n: int, t: int, vocab: int, moved: float, data: st.DataObject
) -> None:
    """Moving one logit by d gives a largest difference of |d| (in float32, as stored), symmetric;
    other shapes are inf and a non-finite candidate nan; identical tensors agree everywhere."""
    reference = torch.randn(
        n, t, vocab, generator=torch.Generator().manual_seed(data.draw(st.integers(0, 99)))
    )
    candidate = shifted(reference, moved)
    expected = abs(float(candidate[0, 0, 0].double() - reference[0, 0, 0].double()))
    assert max_abs_difference(reference, candidate) == max_abs_difference(candidate, reference) == expected
    assert max_abs_difference(reference, reference[..., :-1]) == float("inf")
    assert torch.isnan(torch.tensor(max_abs_difference(reference, shifted(reference, float("nan")))))
    assert argmax_agreement(reference, reference) == 1.0


# -- a surgery's checkpoint carries its source's chat template ---------------------------


@pytest.fixture(scope="module")
def chat_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A run whose checkpoint carries a model's own chat template."""
    run = tmp_path_factory.mktemp("chat-source") / "run"
    save_run(run, tiny_model(), extra={CHAT_TEMPLATE_KEY: imported_template(JINJA)})
    return run


def plant_dropped_template(monkeypatch: pytest.MonkeyPatch) -> None:
    """The mutant: the surgery's fresh state is written without the carried template."""
    real = output.fresh_state

    def dropped(config: Any, tokenizer: dict[str, Any], source: dict[str, Any], _template: Any = None) -> Any:
        return real(config, tokenizer, source, None)

    monkeypatch.setattr(output, "fresh_state", dropped)


SURGERIES = {
    "laser": ["laser", "--targets", "ffn_*", "--rho", "0.5"],
    "quantize": ["quantize", "--targets", "ffn_up", "--method", "hqq"],
}


@pytest.mark.gate(SURGERY)
@pytest.mark.parametrize("kind", sorted(SURGERIES))
def test_a_surgery_that_drops_its_sources_chat_template_halts(
    kind: str,
    chat_source: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    plant_dropped_template(monkeypatch)
    command, *options = SURGERIES[kind]
    out = tmp_path / "out"
    code, err = one_line_cli(capsys, command, str(chat_source), *options, "--out", str(out))
    assert code == 3 and f"gate fired: {SURGERY}" in err and "chat template" in err
    measured = json.loads((out / "surgery.json").read_text())["gates"][SURGERY]
    assert measured["template_written"] is None and isinstance(measured["template_source"], str)


def _written_state(out: Path) -> dict[str, Any]:
    record = json.loads((out / "surgery.json").read_text())
    return json.loads((out / record["checkpoint"] / "state.json").read_text())


@pytest.mark.holds(SURGERY)
def test_a_laser_keeps_its_sources_chat_template_and_the_checker_derives_it(
    chat_source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    command, *options = SURGERIES["laser"]
    assert one_line_cli(capsys, command, str(chat_source), *options, "--out", str(out))[0] == 0
    measured = json.loads((out / "surgery.json").read_text())["gates"][SURGERY]
    assert (
        measured["template_written"]
        == measured["template_source"]
        == chat_template_sha256(_written_state(out))
    )
    spec = load_spec()
    assert check_record_truth(read_evidence(out / "metadata.json"), out, spec).violations == []

    def forged(data: dict[str, Any], run_dir: Path) -> None:
        """A forger states no template on either side, in surgery.json and the record alike."""
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text())
        report["gates"][SURGERY] |= {"template_source": None, "template_written": None}
        path.write_text(json.dumps(report))
        gate(data, SURGERY)["measured"] |= {"template_source": None, "template_written": None}

    edited(out, forged)
    found = check_record_truth(read_evidence(out / "metadata.json"), out, spec).violations
    assert any("template_written" in str(v) for v in found), found
