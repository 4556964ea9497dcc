"""A quantisation's held-out agreement is taken against the source
as read, on the sample the request asked for (GATE-HQQ-002 rev 5, checks reference and requested).

Mutants compared the quantised model with itself (KL 0.0), measured the export's rounding against
a "float64" copy left in fp32 (GATE-EXPORT-001 rev 6, check exact), or ignored `--sample-text
FILE` while the record stated both the file and the default source. Each is planted here in this
process, through the real `stack quantize` or `stack export`, and halts naming the gate; honest
runs hold. The checker holds a record's stated sample source to its config's sample_text the same
way, so an export (whose gates have no such check) planted to ignore `--sample-text` is named by it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.agreement_sample import FILE_PREFIX, requested_problem
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.export import exporters
from stack.export import sample as sample_module
from stack.model.gpt import GPT
from stack.surgery import agreement as agreement_module
from tests.support.export_support import make_checkpoint
from tools.integrity.record_checks import check_record_truth

QUANTIZE = ["--targets", "*ffn_up*", "--bits", "4"]
TEXT = "def moving_average(values, width):\n    return [sum(values[i : i + width]) / width]\n" * 40


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("surgery"))


@pytest.fixture(scope="module")
def sample_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("sample") / "sample.txt"
    path.write_text(TEXT)
    return path


def _gate(out: Path, gate_id: str) -> dict[str, Any]:
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == gate_id)
    return {"verdict": result.verdict.value, "message": result.message, **result.measured}


def _self_agreement(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the agreement compares the quantised model with itself."""
    real = agreement_module.heldout_agreement

    def with_itself(original: GPT, changed: GPT, windows: torch.Tensor) -> dict[str, Any]:
        return real(changed, changed, windows)

    monkeypatch.setattr(agreement_module, "heldout_agreement", with_itself)


def _file_ignored(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: `--sample-text FILE` is dropped on the way to the sample."""
    real = sample_module.resolve_sample

    def default_sample(
        tokenizer: Any, ctx: int, sample_file: Path | None, checkpoint: Path | None = None
    ) -> Any:
        return real(tokenizer, ctx, None, checkpoint)

    monkeypatch.setattr(sample_module, "resolve_sample", default_sample)  # quantize imports it per call
    monkeypatch.setattr(exporters, "resolve_sample", default_sample)  # export, at its import


@pytest.mark.gate("GATE-HQQ-002")
def test_quantize_compared_with_itself_halts(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _self_agreement(monkeypatch)
    out = tmp_path / "q"
    assert main(["quantize", str(checkpoint), *QUANTIZE, "--out", str(out)]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err
    gate = _gate(out, "GATE-HQQ-002")
    assert gate["verdict"] == "FAIL" and "one model" in gate["message"]


@pytest.mark.gate("GATE-HQQ-002")
def test_quantize_ignoring_its_sample_text_halts(
    checkpoint: Path,
    sample_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    _file_ignored(monkeypatch)
    out = tmp_path / "q"
    argv = ["quantize", str(checkpoint), *QUANTIZE, "--sample-text", str(sample_file), "--out", str(out)]
    assert main(argv) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err
    assert "was asked for" in _gate(out, "GATE-HQQ-002")["message"]


@pytest.mark.holds("GATE-HQQ-002")
def test_quantize_on_its_sample_text_holds_and_states_both_sides(
    checkpoint: Path, sample_file: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    argv = ["quantize", str(checkpoint), *QUANTIZE, "--sample-text", str(sample_file), "--out", str(out)]
    assert main(argv) == 0
    gate = _gate(out, "GATE-HQQ-002")
    assert gate["verdict"] == "PASS"
    assert gate["reference_sha256"] == gate["source_sha256"] != gate["quantised_sha256"]
    assert gate["sample_source"] == f"{FILE_PREFIX}{sample_file}" and gate["requested_sample_text"] == str(
        sample_file
    )
    agreement = json.loads((out / "surgery.json").read_text())["measured"]["agreement"]
    assert agreement["original_sha256"] == gate["source_sha256"]
    assert agreement["model_sha256"] == gate["quantised_sha256"]
    spec = load_spec()
    assert check_record_truth(read_evidence(out / "metadata.json"), out, spec).violations == []

    forged = read_evidence(out / "metadata.json")  # the record's request no longer the file it read
    forged.config["sample_text"] = None
    wrong = check_record_truth(forged, out, spec).violations
    assert any("metrics.sample.source: no --sample-text was asked for" in v for v in wrong), wrong


@pytest.mark.holds("GATE-HQQ-002")
def test_quantize_without_sample_text_holds_on_the_default(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "q"
    assert main(["quantize", str(checkpoint), *QUANTIZE, "--out", str(out)]) == 0
    gate = _gate(out, "GATE-HQQ-002")
    assert gate["verdict"] == "PASS" and gate["requested_sample_text"] is None
    assert not gate["sample_source"].startswith(FILE_PREFIX)


def test_export_ignoring_its_sample_text_is_named_by_the_checker(
    checkpoint: Path, sample_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """GATE-EXPORT-001 has no check requested; the checker holds the export's sample to its request."""
    _file_ignored(monkeypatch)
    out = tmp_path / "hf"
    argv = ["export", str(checkpoint), "--format", "hf", "--sample-text", str(sample_file), "--out", str(out)]
    assert main(argv) == 0
    wrong = check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations
    assert any(f"--sample-text {sample_file} was asked for" in v for v in wrong), wrong


@pytest.mark.parametrize(
    ("source", "asked", "refused"),
    [
        ("file:a.txt", "a.txt", False),
        ("file:b.txt", "a.txt", True),
        ("builtin", "a.txt", True),
        ("builtin", None, False),
        ("data:/d (heldout split)", None, False),
        ("file:a.txt", None, True),
    ],
)
def test_requested_problem_holds_the_source_to_the_request(
    source: str, asked: str | None, refused: bool
) -> None:
    assert (requested_problem(source, asked) is not None) is refused


def _rounding_in_fp32(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the "float64" copy of the model stays fp32, so the rounding is the forward against itself."""

    def still_fp32(self: GPT) -> GPT:
        return self

    monkeypatch.setattr(GPT, "double", still_fp32)


@pytest.mark.gate("GATE-EXPORT-001")
def test_hf_export_whose_rounding_is_measured_in_fp32_halts(
    checkpoint: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _rounding_in_fp32(monkeypatch)
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 3
    assert "GATE-EXPORT-001" in capsys.readouterr().err
    assert "not torch.float64" in _gate(out, "GATE-EXPORT-001")["message"]


@pytest.mark.holds("GATE-EXPORT-001")
def test_hf_export_measures_its_rounding_against_float64(checkpoint: Path, tmp_path: Path) -> None:
    out = tmp_path / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 0
    gate = _gate(out, "GATE-EXPORT-001")
    assert gate["verdict"] == "PASS" and gate["rounding_reference_dtype"] == "torch.float64"
    assert gate["rounding_error"] > 0.0
