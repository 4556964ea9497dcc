"""`stack eval` and `stack export` leave evidence records that the integrity check finds true.

Each record must be of its run kind (spec/run_kinds.yaml), judge the gates that kind requires,
and pass `tools/record_checks.py`'s truth checks; a gate that fires leaves it halted with the
gate named. Filing is append-only: the same run id cannot be filed twice into one ledger.
"""

from __future__ import annotations

import gzip
import json
import tomllib
from collections.abc import Callable
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

import pytest
import torch

import contracts.evidence
from contracts.evidence import EVIDENCE_FILE, EvidenceRecord, RunStatus, read_evidence, sha256_file
from contracts.spec import load_spec
from stack.cli import eval as eval_cli
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from stack.eval import bpb
from stack.export import deps, hf
from tests.support.eval_support import stride_one_past
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth

Converter = Callable[[torch.nn.Module], dict[str, torch.Tensor]]
CRLF_TEXT = "gate evidence model\r\ntoken loss batch\r\nnaïve café, π ≈ 3.14\r\n" * 4


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A finished smoke run, shared by the tests of this module."""
    root = tmp_path_factory.mktemp("evidence")
    run_dir = root / "run"
    assert train(smoke_args(prepared(root), run_dir)) == 0
    return run_dir


@pytest.fixture
def crlf_file(tmp_path: Path) -> Path:
    path = tmp_path / "crlf.txt"
    path.write_bytes(CRLF_TEXT.encode("utf-8"))
    return path


def verdicts(record: EvidenceRecord) -> dict[str, str]:
    return {g.id: g.verdict.value for g in record.gates}


def assert_true_record(directory: Path, kind: str) -> EvidenceRecord:
    """The record in `directory` validates, is of `kind`, and the integrity check finds it true."""
    record = read_evidence(directory / EVIDENCE_FILE)
    assert record.run.kind == kind
    assert check_record_truth(record, directory, load_spec()).violations == []
    for art in record.artifacts:
        assert sha256_file(directory / art.path) == art.sha256
    return record


def assert_completed_and_passed(record: EvidenceRecord) -> None:
    assert record.run.status is RunStatus.COMPLETED
    required = load_spec().required_gates(record.run.kind)
    assert {gate: verdicts(record)[gate] for gate in required} == dict.fromkeys(required, "PASS")


@pytest.mark.holds("GATE-EVAL-003")
def test_eval_of_a_crlf_text_scores_every_byte_and_records_it(
    run: Path, crlf_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """CRLF line ends are scored as they are stored: the record's byte count is the file's."""
    record_dir, ledger = tmp_path / "record", tmp_path / "ledger"
    argv = [
        "eval",
        str(run),
        "--text",
        str(crlf_file),
        "--record",
        str(record_dir),
        "--evidence-dir",
        str(ledger),
    ]
    assert main(argv) == 0
    out, err = capsys.readouterr()
    printed = json.loads(out)
    assert printed["bytes"] == crlf_file.stat().st_size
    # the scoring's progress on stderr, ending at every window of the text
    windows = -(-(printed["tokens"] - 1) // assert_true_record(record_dir, "eval").config["seq_len"])
    assert f"stack eval: scoring: {windows:,} of {windows:,} windows" in err.splitlines()
    record = assert_true_record(record_dir, "eval")
    assert_completed_and_passed(record)
    assert record.metrics["bytes"] == crlf_file.stat().st_size
    assert json.loads((record_dir / "eval.json").read_text()) == printed
    assert record.checkpoint is not None and record.checkpoint.name == "step-0000005"
    filed = ledger / record.run.id
    assert sorted(p.name for p in filed.iterdir()) == ["eval.json", EVIDENCE_FILE]
    assert assert_true_record(filed, "eval").run.id == record.run.id


@pytest.mark.gate("GATE-EVAL-003")
def test_eval_of_a_text_the_tokenizer_cannot_round_trip_is_recorded_halted(
    run: Path,
    crlf_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plant a tokenizer that drops what is not ASCII: the scoring is refused and the record says why."""
    monkeypatch.setattr(
        ByteTokenizer, "encode", lambda self, text: list(text.encode("ascii", errors="ignore"))
    )
    record_dir = tmp_path / "record"
    assert main(["eval", str(run), "--text", str(crlf_file), "--record", str(record_dir)]) == 3
    assert "gate fired: GATE-EVAL-003" in capsys.readouterr().err
    record = assert_true_record(record_dir, "eval")
    assert record.run.status is RunStatus.HALTED and "GATE-EVAL-003" in str(record.run.stop_reason)
    assert verdicts(record) == {"GATE-CKPT-002": "PASS", "GATE-EVAL-003": "FAIL", "GATE-MODEL-003": "PASS"}
    lost = sum(not ch.isascii() for ch in CRLF_TEXT)
    result = next(g for g in record.gates if g.id == "GATE-EVAL-003")
    assert isinstance(result.measured, dict) and result.measured["missing_chars"] == lost
    assert record.artifacts == [] and not (record_dir / "eval.json").exists()


@pytest.mark.gate("GATE-EVAL-003")
def test_eval_of_a_text_read_with_one_byte_lost_is_recorded_halted(
    run: Path,
    crlf_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plant a reader that turns the file's last CRLF into LF: one byte of the file is never scored,
    and every count after the reading (round trip, bytes, positions) agrees with the text it got.
    The file read again from disk does not."""
    read = eval_cli._read_text

    def one_byte_short(path: Path) -> str:
        text = read(path)
        cut = text.rindex("\r\n")
        return text[:cut] + text[cut + 1 :]

    monkeypatch.setattr(eval_cli, "_read_text", one_byte_short)
    record_dir = tmp_path / "record"
    assert main(["eval", str(run), "--text", str(crlf_file), "--record", str(record_dir)]) == 3
    assert "gate fired: GATE-EVAL-003" in capsys.readouterr().err
    record = assert_true_record(record_dir, "eval")
    result = next(g for g in record.gates if g.id == "GATE-EVAL-003")
    assert isinstance(result.measured, dict) and result.verdict.value == "FAIL"
    assert result.measured["file_bytes"] == crlf_file.stat().st_size == result.measured["text_bytes"] + 1
    assert "the text scored is not the file as stored" in str(result.message)


@pytest.mark.gate("GATE-EVAL-003")
def test_eval_whose_windows_skip_targets_is_recorded_halted(
    run: Path,
    crlf_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Plant windows taken with a stride one past their targets: the tokenizer round-trips, the result
    would claim every token predicted, and the positions the NLL sum took leave some out."""
    monkeypatch.setattr(bpb, "text_windows", stride_one_past)
    record_dir = tmp_path / "record"
    assert main(["eval", str(run), "--text", str(crlf_file), "--record", str(record_dir)]) == 3
    assert "gate fired: GATE-EVAL-003" in capsys.readouterr().err
    record = assert_true_record(record_dir, "eval")
    assert record.run.status is RunStatus.HALTED and "GATE-EVAL-003" in str(record.run.stop_reason)
    result = next(g for g in record.gates if g.id == "GATE-EVAL-003")
    assert isinstance(result.measured, dict) and result.verdict.value == "FAIL"
    assert result.measured["missing_chars"] == 0 and result.measured["missing_positions"] > 0
    assert result.measured["predicted_tokens"] == result.measured["tokens"] - 1
    assert record.artifacts == [] and not (record_dir / "eval.json").exists()


def _narrowed(by: Callable[[int], int]) -> Callable[..., dict]:
    """bpb.evaluate_text handed windows of `by(seq_len)` tokens by its caller (for example ctx // 2)."""
    real = bpb.evaluate_text

    def narrowed(model: torch.nn.Module, tokenizer: object, text: str, seq_len: int, *args, **kwargs) -> dict:
        return real(model, tokenizer, text, by(seq_len), *args, **kwargs)

    return narrowed


@pytest.mark.gate("GATE-EVAL-003")
@pytest.mark.parametrize("by", [lambda ctx: ctx // 2, lambda ctx: ctx - 1], ids=["half", "one-short"])
def test_eval_scored_in_narrower_windows_than_its_context_is_recorded_halted(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    by: Callable[[int], int],
) -> None:
    """Every token is still scored once, from a shorter context than config.seq_len says;
    check window (rev 7) holds the widest window the scoring forwards taped to the stated context."""
    monkeypatch.setattr(bpb, "evaluate_text", _narrowed(by))
    text = tmp_path / "long.txt"
    text.write_text(CRLF_TEXT * 8, encoding="utf-8")  # longer than the context: full windows
    record_dir = tmp_path / "record"
    assert main(["eval", str(run), "--text", str(text), "--record", str(record_dir)]) == 3
    assert "gate fired: GATE-EVAL-003" in capsys.readouterr().err
    record = assert_true_record(record_dir, "eval")
    result = next(g for g in record.gates if g.id == "GATE-EVAL-003")
    assert isinstance(result.measured, dict) and result.verdict.value == "FAIL"
    context = record.config["seq_len"]
    assert result.measured["context"] == context and result.measured["window_tokens"] == by(context)


@pytest.mark.holds("GATE-EVAL-003")
def test_eval_scored_in_windows_of_its_context_holds(run: Path, tmp_path: Path) -> None:
    """Full windows of the whole context, and a text shorter than it scored in one window of its own."""
    for name, copies in (("long", 8), ("short", 1)):
        text = tmp_path / f"{name}.txt"
        text.write_text(CRLF_TEXT * copies, encoding="utf-8")
        record_dir = tmp_path / name
        assert main(["eval", str(run), "--text", str(text), "--record", str(record_dir)]) == 0
        record = assert_true_record(record_dir, "eval")
        measured = next(g for g in record.gates if g.id == "GATE-EVAL-003").measured
        assert isinstance(measured, dict) and measured["context"] == record.config["seq_len"]
        assert measured["window_tokens"] == min(measured["context"], measured["tokens"] - 1)


def test_eval_without_evidence_flags_prints_json_and_writes_nothing(
    run: Path,
    crlf_file: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.chdir(tmp_path)
    assert main(["eval", str(run), "--text", str(crlf_file)]) == 0
    assert set(json.loads(capsys.readouterr().out)) == {
        "loss",
        "bits_per_byte",
        "tokens",
        "predicted_tokens",
        "bytes",
        "overlap",
    }
    assert sorted(p.name for p in tmp_path.iterdir()) == ["crlf.txt"]


def test_a_record_dir_is_never_overwritten(run: Path, crlf_file: Path, tmp_path: Path) -> None:
    record_dir = tmp_path / "record"
    assert main(["eval", str(run), "--text", str(crlf_file), "--record", str(record_dir)]) == 0
    before = (record_dir / EVIDENCE_FILE).read_bytes()
    assert main(["eval", str(run), "--text", str(crlf_file), "--record", str(record_dir)]) == 2
    assert (record_dir / EVIDENCE_FILE).read_bytes() == before


@pytest.mark.parametrize("command", ["eval", "export"])
def test_two_filings_in_one_second_are_two_records(
    command: str, run: Path, crlf_file: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Run ids are made from the clock; stop it, and the second filing takes the next free id
    (`-1` after the stamp) in a record of its own: neither refused nor merged into the first."""
    fixed = datetime(2026, 11, 22, 12, 0, 0, tzinfo=UTC)
    monkeypatch.setattr(contracts.evidence, "now", lambda: fixed)
    ledger = tmp_path / "ledger"

    def once(n: int) -> int:
        if command == "eval":
            return main(["eval", str(run), "--text", str(crlf_file), "--evidence-dir", str(ledger)])
        out = tmp_path / f"hf-{n}"
        return main(["export", str(run), "--format", "hf", "--out", str(out), "--evidence-dir", str(ledger)])

    assert once(1) == 0
    [first] = sorted(ledger.iterdir())
    before = (first / EVIDENCE_FILE).read_bytes()
    assert once(2) == 0
    assert sorted(p.name for p in ledger.iterdir()) == [first.name, f"{first.name}-1"]
    assert (first / EVIDENCE_FILE).read_bytes() == before
    second = read_evidence(ledger / f"{first.name}-1" / EVIDENCE_FILE)
    assert second.run.id == f"{first.name}-1"


@pytest.mark.parametrize(("fmt", "weights"), [("hf", "model.safetensors"), ("onnx", "model.onnx")])
def test_export_writes_a_true_record_beside_the_files(
    run: Path, tmp_path: Path, fmt: str, weights: str
) -> None:
    out, ledger = tmp_path / "out", tmp_path / "ledger"
    assert main(["export", str(run), "--format", fmt, "--out", str(out), "--evidence-dir", str(ledger)]) == 0
    record = assert_true_record(out, f"export-{fmt}")
    assert_completed_and_passed(record)
    listed = {art.path for art in record.artifacts}
    assert listed == {p.name for p in out.iterdir()} - {EVIDENCE_FILE}
    assert {weights, "export.json"} <= listed
    assert record.checkpoint is not None and record.checkpoint.name == "step-0000005"
    filed = ledger / record.run.id
    assert sorted(p.name for p in filed.iterdir()) == ["export.json", EVIDENCE_FILE]
    assert_true_record(filed, f"export-{fmt}")


def swap_gate_up(model: torch.nn.Module, real: Converter) -> dict[str, torch.Tensor]:
    """The HF tensors with layer 0's gate and up projections swapped: a classic conversion bug."""
    tensors = real(model)
    gate, up = "model.layers.0.mlp.gate_proj.weight", "model.layers.0.mlp.up_proj.weight"
    tensors[gate], tensors[up] = tensors[up], tensors[gate]
    return tensors


@pytest.mark.gate("GATE-EXPORT-001")
def test_a_failed_parity_check_leaves_a_halted_record(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    real = hf.to_hf_tensors
    monkeypatch.setattr(hf, "to_hf_tensors", lambda model: swap_gate_up(model, real))
    out = tmp_path / "out"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 3
    assert (out / "model.unverified.safetensors").is_file() and not (out / "model.safetensors").exists()
    record = assert_true_record(out, "export-hf")
    assert record.run.status is RunStatus.HALTED and "GATE-EXPORT-001" in str(record.run.stop_reason)
    assert verdicts(record)["GATE-EXPORT-001"] == "FAIL" and verdicts(record)["GATE-CKPT-002"] == "PASS"
    assert "model.unverified.safetensors" in {art.path for art in record.artifacts}


def test_eval_of_a_compressed_text_scores_its_text(
    run: Path, crlf_file: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A gzip of the text scores as the text itself, byte for byte (`stack eval --text FILE.gz`
    is not refused as not UTF-8)."""
    packed = tmp_path / "text.txt.gz"
    packed.write_bytes(gzip.compress(crlf_file.read_bytes()))
    scores = []
    for path in (crlf_file, packed):
        assert main(["eval", str(run), "--text", str(path)]) == 0
        scores.append(json.loads(capsys.readouterr().out))
    assert scores[1]["bytes"] == crlf_file.stat().st_size and scores[1]["loss"] == scores[0]["loss"]


def test_an_export_states_the_version_of_the_code_that_ran(monkeypatch: pytest.MonkeyPatch) -> None:
    """export.json's versions.gatestack is pyproject.toml's version also where gatestack is not an
    installed package (a checkout on PYTHONPATH): the H100 reference run's export said None there,
    which the checker refuses against the commit's pyproject.toml."""

    def not_installed(name: str) -> str:
        raise metadata.PackageNotFoundError(name)

    monkeypatch.setattr(deps.metadata, "version", not_installed)
    project = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())
    assert deps.versions()[project["project"]["name"]] == project["project"]["version"]
