"""The integrity check reads every file as hostile: a file that does not read is a finding, never a crash.

Copies of ledger records of several kinds have one cited file corrupted (truncated, bytes that are
no text appended, a NUL byte or an invalid UTF-8 byte put in), each re-cited by its new sha256 and
size as a forger would, so what catches it is the reading of the file itself. The check must name
a GATE-INTEG-001 violation of that record and fail nowhere of its own (CHECKER-FAILED); the records
are copied once per module and each corruption is undone after its check.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from contracts.evidence import EVIDENCE_FILE, read_evidence
from contracts.reading import MAX_READ_BYTES
from contracts.registry import REGISTRY_FILE, read_registry
from contracts.spec import load_spec
from tests.support.ledger_support import CURRENT_RUN, RECORDS, ROOT, edited
from tools.integrity import check as check_integrity
from tools.integrity.check import CHECKER_FAILED, Checker, main, run_checks

INTEG = "GATE-INTEG-001"
# Ledger records of several kinds, each with the files of it a corruption is planted in: a training
# run's TOML config and JSON-lines log, a fine-tune's config, an evaluation's, a prepare's and a
# surgery's JSON results.
LEDGER_CASES = {
    CURRENT_RUN: ("config.toml", "metrics.jsonl"),
    "current/sft": ("config.toml",),
    "current/eval": ("eval.json",),
    "current/prepare": ("manifest.json",),
    "current/laser": ("surgery.json",),
}
# A record the tests make cite files of the formats no ledger record cites (YAML, safetensors, text).
PLANTED_RUN = "current/eval"
PLANTED = ("notes.yaml", "weights.safetensors", "notes.md")


@dataclass(frozen=True)
class Case:
    """One cited file of one copied record."""

    run_dir: Path
    name: str

    @property
    def run_id(self) -> str:
        return read_evidence(self.run_dir / EVIDENCE_FILE).run.id


def safetensors_bytes(tensors: dict[str, list[float]]) -> bytes:
    """A float32 safetensors file of `tensors`, as the format lays it out (header length, JSON, data)."""
    header: dict[str, Any] = {}
    data = b""
    for key, values in tensors.items():
        raw = struct.pack(f"<{len(values)}f", *values)
        header[key] = {
            "dtype": "F32",
            "shape": [len(values)],
            "data_offsets": [len(data), len(data) + len(raw)],
        }
        data += raw
    table = json.dumps(header).encode()
    return struct.pack("<Q", len(table)) + table + data


def cite(run_dir: Path, files: dict[str, bytes]) -> None:
    """Write `files` into `run_dir` and have its record cite each, hashed (`edited` re-hashes)."""

    def add(data: dict[str, Any], _dir: Path) -> None:
        for name, content in files.items():
            (run_dir / name).write_bytes(content)
            data["artifacts"].append({"path": name, "sha256": "0" * 64, "bytes": 0})

    edited(run_dir, add)


@pytest.fixture(scope="module")
def cases(tmp_path_factory: pytest.TempPathFactory) -> list[Case]:
    """Every record of LEDGER_CASES copied once, and one more copy citing the PLANTED files."""
    base = tmp_path_factory.mktemp("hostile")
    found = []
    for run, names in LEDGER_CASES.items():
        shutil.copytree(RECORDS / run, base / run)
        found += [Case(base / run, name) for name in names]
    planted = base / "planted" / PLANTED_RUN
    shutil.copytree(RECORDS / PLANTED_RUN, planted)
    cite(
        planted,
        {
            "notes.yaml": b"{kind: notes, steps: [1, 2, 3]}\n",
            "weights.safetensors": safetensors_bytes({"a": [1.0, 2.0], "b": [3.0]}),
            "notes.md": "# Notes\n\nThe run's own words, in UTF-8: café.\n".encode(),
        },
    )
    return found + [Case(planted, name) for name in PLANTED]


def violations_of(run_dir: Path) -> tuple[list[str], list[str]]:
    """(violation lines, failure lines) of the check of `run_dir` alone."""
    report = run_checks(ROOT, [run_dir], runs_only=True)
    return [f.line() for f in report.violations], [f.line() for f in report.failures]


@contextmanager
def corrupted(case: Case, content: bytes, rehash: bool = True) -> Iterator[None]:
    """`case`'s file holding `content` (its record re-citing it as a forger would, unless not
    `rehash`), and both as they were afterwards."""
    path, record = case.run_dir / case.name, case.run_dir / EVIDENCE_FILE
    kept, kept_record = path.read_bytes(), record.read_bytes()
    try:
        path.write_bytes(content)
        edited(case.run_dir, lambda _data, _dir: None, rehash)
        yield
    finally:
        path.write_bytes(kept)
        record.write_bytes(kept_record)


def is_text(data: bytes) -> bool:
    """Whether `data` is UTF-8 text without a NUL byte."""
    try:
        data.decode("utf-8")
    except UnicodeDecodeError:
        return False
    return b"\0" not in data


def truncated(data: bytes, at: float) -> bytes:
    """`data` cut inside what it holds (past its first byte, before its trailing whitespace)."""
    end = len(data.rstrip())
    return data[: 1 + int(at * (end - 2))]


def inserted(data: bytes, at: float, byte: bytes) -> bytes:
    """`data` with `byte` put in at a fraction `at` of its length."""
    cut = int(at * len(data))
    return data[:cut] + byte + data[cut:]


# How a file is corrupted: (kind, where as a fraction of its length, the bytes appended).
CORRUPTIONS = st.tuples(
    st.sampled_from(["truncated", "appended", "nul", "invalid-utf8"]),
    st.floats(min_value=0.0, max_value=1.0),
    st.binary(min_size=1, max_size=12).filter(lambda b: not is_text(b)),
)


def corruption(original: bytes, name: str, how: tuple[str, float, bytes]) -> bytes:
    """`original` corrupted `how`; a text file (.md) is never truncated, for its prefix is text."""
    kind, at, tail = how
    if kind == "truncated" and not name.endswith(".md"):
        return truncated(original, at)
    if kind == "nul":
        return inserted(original, at, b"\0")
    if kind == "invalid-utf8":
        return inserted(original, at, b"\xff")
    return original + tail


@pytest.mark.gate(INTEG)
@settings(max_examples=30, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(pick=st.integers(min_value=0), how=CORRUPTIONS)
def test_a_corrupted_file_is_a_violation_of_its_record_never_a_crash(
    cases: list[Case], pick: int, how: tuple[str, float, bytes]
) -> None:
    case = cases[pick % len(cases)]
    original = (case.run_dir / case.name).read_bytes()
    with corrupted(case, corruption(original, case.name, how)):
        found, failed = violations_of(case.run_dir)
    assert failed == [], "\n".join(failed)
    assert any(line.startswith(INTEG) and f"[{case.run_id}]" in line for line in found), (
        f"{case.name} corrupted {how[0]}: " + ("\n".join(found) or "(nothing found)")
    )


@pytest.mark.holds(INTEG)
def test_the_copies_uncorrupted_pass(cases: list[Case]) -> None:
    """The benign case: every copy, the one citing the planted files included, checks clean."""
    for run_dir in sorted({case.run_dir for case in cases}):
        assert violations_of(run_dir) == ([], []), run_dir


@pytest.mark.gate(INTEG)
def test_a_line_appended_to_a_config_is_a_named_violation_exit_3(
    cases: list[Case], capsys: pytest.CaptureFixture[str]
) -> None:
    """The case that once ended the check in tomllib's traceback with exit 1."""
    case = Case(cases[0].run_dir, "config.toml")
    original = (case.run_dir / case.name).read_bytes()
    with corrupted(case, original + b"this line = = is not TOML\n"):
        status = main(["--runs-only", "--run", str(case.run_dir)])
    out, err = capsys.readouterr()
    assert status == 3 and "Traceback" not in out + err, out + err
    assert f"config.toml [{case.run_id}]: is not valid TOML" in out, out


@pytest.mark.gate(INTEG)
def test_a_gigabyte_file_is_refused_unread(cases: list[Case]) -> None:
    """A cited file far over the cap (sparse: no gigabyte is written) is named before it is read."""
    case = next(c for c in cases if c.name == "eval.json")
    path = case.run_dir / case.name
    kept = path.read_bytes()
    try:
        os.truncate(path, 2**30)
        found, failed = violations_of(case.run_dir)
    finally:
        path.write_bytes(kept)
    assert failed == []
    assert any(
        f"eval.json [{case.run_id}]: is {2**30} bytes, more than the {MAX_READ_BYTES}" in f for f in found
    ), found


@pytest.mark.gate(INTEG)
def test_a_link_out_of_the_record_is_refused(cases: list[Case], tmp_path: Path) -> None:
    """A cited file that is a link to a file outside its record's directory is never read."""
    case = next(c for c in cases if c.name == "eval.json")
    path = case.run_dir / case.name
    outside = tmp_path / "outside.json"
    shutil.copyfile(path, outside)
    kept = path.read_bytes()
    try:
        path.unlink()
        path.symlink_to(outside)
        found, failed = violations_of(case.run_dir)
    finally:
        path.unlink()
        path.write_bytes(kept)
    assert failed == []
    assert any(f"[{case.run_id}]: path 'eval.json' leaves" in f for f in found), found


@pytest.mark.parametrize(
    ("card", "problem"),
    [("evidence/models/x\0y/README.md", "NUL byte"), ("../../outside/README.md", "leaves")],
    ids=["nul-byte", "climbs-out"],
)
@pytest.mark.gate(INTEG)
def test_a_registry_card_path_that_does_not_read_is_named(card: str, problem: str) -> None:
    """A release whose card path holds a NUL byte (once a ValueError out of pathlib) or climbs out
    of the repository is a violation of that release, and the other releases are still checked."""
    registry = read_registry(ROOT / REGISTRY_FILE)
    first, *rest = registry.models
    bad = first.model_copy(update={"card": card})
    checker = Checker(ROOT, load_spec())
    checker.check_registry(registry.model_copy(update={"models": [bad, *rest]}), {})
    assert checker.failures == []
    lines = [f.line() for f in checker.verdict()]  # as the gate's judge decides over them
    assert any(f"[{first.key}]: model card" in line and problem in line for line in lines), lines
    assert all(any(f"[{model.key}]" in line for line in lines) for model in rest), lines


@pytest.fixture
def crash_dir(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Where the checker saves the tracebacks of the crashes these tests plant: the test's own
    folder, not the machine's temporary directory, which a test run should leave as it found it."""
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    return tmp_path


def test_a_crash_on_one_record_is_named_and_the_rest_checked(
    cases: list[Case], crash_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bug of the checker on one record is that record's failure (its traceback saved), never a
    verdict: the other records are checked, and the exit status is 1, an internal error."""
    crashing, other = cases[0].run_dir, next(c.run_dir for c in cases if c.name == "eval.json")
    truth = check_integrity.check_record_truth

    def buggy(record: Any, run_dir: Path, *args: Any) -> Any:
        if run_dir == crashing:
            raise RuntimeError("a bug of the checker")
        return truth(record, run_dir, *args)

    monkeypatch.setattr(check_integrity, "check_record_truth", buggy)
    report = run_checks(ROOT, [crashing, other], runs_only=True)
    assert report.violations == [] and len(report.failures) == 1, report.failures
    failure = report.failures[0]
    assert failure.rule == CHECKER_FAILED and failure.record == read_evidence(crashing / EVIDENCE_FILE).run.id
    saved = Path(failure.message.rsplit("traceback saved to ", 1)[1])
    assert saved.parent == crash_dir
    assert "RuntimeError: a bug of the checker" in saved.read_text(encoding="utf-8")
    assert main(["--runs-only", "--run", str(crashing), "--run", str(other)]) == 1
    assert "integrity: NO VERDICT" in capsys.readouterr().out


def test_a_crash_outside_any_record_exits_1_naming_its_traceback(
    cases: list[Case], crash_dir: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    def broken(*_args: Any, **_kwargs: Any) -> None:
        raise KeyError("a bug of the checker")

    monkeypatch.setattr(check_integrity, "run_checks", broken)
    assert main(["--runs-only", "--run", str(cases[0].run_dir)]) == 1
    out, err = capsys.readouterr()
    assert out == "" and err.count("\n") == 1 and "internal error, no verdict" in err, err
    saved = Path(err.strip().rsplit("traceback saved to ", 1)[1])
    assert saved.parent == crash_dir
    assert "KeyError: 'a bug of the checker'" in saved.read_text(encoding="utf-8")
