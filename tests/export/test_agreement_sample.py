"""The sample an agreement or parity check compares on is the one
its record names (GATE-HQQ-002 rev 4, GATE-EXPORT-001 rev 5, GATE-EXPORT-002 rev 4, check sample);
and a lens reading's --csv is its reading (GATE-LENS-006 rev 5, check table).

Mutants read quantize's (and export's) agreement sample from the training split while the record still
says "(heldout split)", or cut it to one window of eight. Each is planted here in this process,
through the real `stack quantize` and `stack export`, and halts naming the gate; honest runs hold,
and the checker derives a record's sample again from the source it names. A mutant that writes every --csv row
of `stack lens` with the shown position's KL, planted the same way, halts.
"""

from __future__ import annotations

import csv
import hashlib
import json
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.agreement_sample import heldout_dir
from contracts.evidence import new_record, read_evidence, write_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.eval.texts import split_text
from stack.export import sample as sample_module
from stack.lens import report as lens_report
from stack.trace.modes import Result
from tests.support.export_support import make_checkpoint
from tests.support.train_support import prepared
from tools.integrity.record_checks import check_record_truth

QUANTIZE = ["--targets", "*ffn_up*", "--bits", "4"]


@pytest.fixture(scope="module")
def trained_on_data(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A checkpoint whose run record names a DATA_DIR of its tokenizer: its sample is the held-out split."""
    root = tmp_path_factory.mktemp("agree")
    checkpoint = make_checkpoint(root)
    record = new_record("train", "run", ["stack", "train"], "cpu")
    record.metrics["data_dir"] = str(prepared(root).resolve())
    write_evidence(checkpoint.parent.parent, record)
    return checkpoint


def _training_split_labelled_heldout(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the sample's text is the training split, its source still '(heldout split)'."""
    real = sample_module._training_data_text

    def training_text(checkpoint: Path, tokenizer: Any, max_bytes: int) -> tuple[str, str] | None:
        found = real(checkpoint, tokenizer, max_bytes)
        assert found is not None, "the fixture's sample must come from its DATA_DIR"
        data_dir = heldout_dir(found[1])
        assert data_dir is not None
        return split_text(data_dir, "train", max_bytes=max_bytes), found[1]

    monkeypatch.setattr(sample_module, "_training_data_text", training_text)


def _one_window(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: one window where the text allows up to MAX_WINDOWS."""
    real = sample_module.windows

    def first_window(ids: list[int], ctx: int) -> torch.Tensor:
        return real(ids, ctx)[:1]

    monkeypatch.setattr(sample_module, "windows", first_window)


def _gate(out: Path, gate_id: str) -> dict[str, Any]:
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == gate_id)
    return {"verdict": result.verdict.value, "message": result.message, **result.measured}


@pytest.mark.gate("GATE-HQQ-002")
def test_quantize_on_training_text_labelled_heldout_halts(
    trained_on_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _training_split_labelled_heldout(monkeypatch)
    out = tmp_path / "q"
    assert main(["quantize", str(trained_on_data), *QUANTIZE, "--out", str(out)]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err


@pytest.mark.gate("GATE-HQQ-002")
def test_quantize_on_one_window_halts(
    trained_on_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_window(monkeypatch)
    assert main(["quantize", str(trained_on_data), *QUANTIZE, "--out", str(tmp_path / "q")]) == 3
    assert "GATE-HQQ-002" in capsys.readouterr().err


@pytest.mark.gate("GATE-EXPORT-001")
def test_hf_export_on_one_window_halts(
    trained_on_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _one_window(monkeypatch)
    out = tmp_path / "hf"
    assert main(["export", str(trained_on_data), "--format", "hf", "--out", str(out)]) == 3
    assert "GATE-EXPORT-001" in capsys.readouterr().err


@pytest.mark.gate("GATE-EXPORT-002")
def test_onnx_export_on_training_text_halts(
    trained_on_data: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _training_split_labelled_heldout(monkeypatch)
    out = tmp_path / "onnx"
    assert main(["export", str(trained_on_data), "--format", "onnx", "--out", str(out)]) == 3
    assert "GATE-EXPORT-002" in capsys.readouterr().err


@pytest.mark.holds("GATE-HQQ-002")
def test_quantize_on_the_heldout_split_holds_and_the_checker_derives_it(
    trained_on_data: Path, tmp_path: Path
) -> None:
    out = tmp_path / "q"
    assert main(["quantize", str(trained_on_data), *QUANTIZE, "--out", str(out)]) == 0
    gate = _gate(out, "GATE-HQQ-002")
    stated = json.loads((out / "surgery.json").read_text())["measured"]["sample"]
    assert gate["verdict"] == "PASS" and stated["source"].endswith("(heldout split)")
    assert gate["sample_ids_sha256"] == gate["source_ids_sha256"] == stated["ids_sha256"]
    assert gate["sample_windows"] == gate["source_windows"] == stated["windows"]
    spec = load_spec()
    findings = check_record_truth(read_evidence(out / "metadata.json"), out, spec)
    assert findings.violations == [] and not [w for w in findings.warnings if "unheld" in w]

    forged = read_evidence(out / "metadata.json")  # a forger who states one window, everywhere
    forged.metrics["sample"]["windows"] = 1
    for g in forged.gates:
        if g.id == "GATE-HQQ-002":
            g.measured.update(sample_windows=1, source_windows=1)
    wrong = check_record_truth(forged, out, spec).violations
    assert any("metrics.sample.windows is 1" in v for v in wrong), wrong
    assert any("gates[GATE-HQQ-002].measured.source_windows is 1" in v for v in wrong), wrong

    data_dir = heldout_dir(stated["source"])
    assert data_dir is not None
    moved = data_dir.rename(tmp_path / "moved")
    try:
        unheld = check_record_truth(read_evidence(out / "metadata.json"), out, spec).warnings
        assert any("metrics.sample is unheld" in w for w in unheld), unheld
    finally:
        moved.rename(data_dir)


@pytest.mark.holds("GATE-EXPORT-001")
def test_hf_export_of_a_short_text_holds_on_its_one_shorter_window(tmp_path: Path) -> None:
    """Just inside the rule: a text shorter than one window is one shorter window, as its source gives."""
    checkpoint = make_checkpoint(tmp_path)
    text = tmp_path / "short.txt"
    text.write_text("def f(x):\n    return x + 1\n")
    out = tmp_path / "hf"
    assert (
        main(["export", str(checkpoint), "--format", "hf", "--out", str(out), "--sample-text", str(text)])
        == 0
    )
    sample = json.loads((out / "export.json").read_text())["sample"]
    gate = _gate(out, "GATE-EXPORT-001")
    assert sample["windows"] == gate["sample_windows"] == gate["source_windows"] == 1
    assert gate["verdict"] == "PASS"


PROMPT = "def foo(x): return x"


def _shown_position_kl_in_every_row(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: every --csv row carries the KL of the position the table shows."""
    real = lens_report.lens_result

    def shown_kl(*args: Any, **kwargs: Any) -> Result:
        result = real(*args, **kwargs)
        shown = {r["site"]: r["kl"][result.data["position"]] for r in result.data["readings"]}
        for row in result.csv:
            row["kl_to_final"] = shown[row["name"]]
        return result

    monkeypatch.setattr(lens_report, "lens_result", shown_kl)


def _lens(checkpoint: Path, tmp_path: Path) -> tuple[list[str], Path, Path]:
    js, table = tmp_path / "lens.json", tmp_path / "lens.csv"
    argv = ["lens", str(checkpoint), "--prompt", PROMPT, "--position", "4", "--json", str(js)]
    return [*argv, "--csv", str(table), "--out", str(tmp_path / "rec")], js, table


@pytest.mark.gate("GATE-LENS-006")
def test_lens_csv_with_the_shown_positions_kl_halts(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    _shown_position_kl_in_every_row(monkeypatch)
    argv, _, _ = _lens(make_checkpoint(tmp_path), tmp_path)
    assert main(argv) == 3
    assert "GATE-LENS-006" in capsys.readouterr().err
    result = _gate(tmp_path / "rec", "GATE-LENS-006")
    assert result["verdict"] == "FAIL" and result["table_rows_differing"] > 0


@pytest.mark.holds("GATE-LENS-006")
def test_lens_csv_holds_its_reading_and_the_record_states_each_output(tmp_path: Path) -> None:
    argv, js, table = _lens(make_checkpoint(tmp_path), tmp_path)
    assert main(argv) == 0
    result = _gate(tmp_path / "rec", "GATE-LENS-006")
    assert result["verdict"] == "PASS" and result["table_rows_differing"] == 0
    assert (
        result["table_rows_written"]
        == result["table_rows_derived"]
        == len(list(csv.reader(table.open()))) - 1
    )
    record = read_evidence(tmp_path / "rec" / "metadata.json")
    assert check_record_truth(record, tmp_path / "rec", load_spec()).violations == []
    stated = record.config["outputs_sha256"]
    assert stated == {
        option: hashlib.sha256(path.read_bytes()).hexdigest()
        for option, path in (("--json", js), ("--csv", table))
    }
