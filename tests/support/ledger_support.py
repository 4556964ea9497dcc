"""Planting a tampering in a copy of one ledger record, and asking the integrity check about it.

A forger edits a record and then re-hashes every artifact it cites, so the checksums still
match; what must catch the edit is the record's truth. The tests of re-derivation share these.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from contracts.derive import Artifacts, Inputs, derive
from contracts.evidence import EVIDENCE_FILE, EvidenceRecord, read_evidence
from contracts.judges import CHECKS, check_readers, judge
from contracts.ledger import judged_message, verdict_of
from contracts.release_rules import stale_gates
from contracts.spec import load_spec
from tools.integrity.check import run_checks

ROOT = Path(__file__).resolve().parents[2]
# The records the tests read (tests/fixtures/records/): the current set, one record of each command
# under today's spec (`make fixtures` regenerates it in place, tools/current_records.py), and older
# records kept for the checks that still judge records of their revisions.
RECORDS = ROOT / "tests" / "fixtures" / "records"
Change = Callable[[dict[str, Any], Path], None]
# A training record of the current spec: its gates are judged at today's revisions, so what their
# values restate of the log is derived (a record of an older revision is stale there).
CURRENT_RUN = "current/mix-run"
# The current record of each other command, named for the tests that tamper with copies of them.
SFT_RUN = "current/sft"
DPO_RUN = "current/dpo"
DISTILL_RUN = "current/distill"
EXPORT_RUN = "current/export"  # read release 0.2.0 by its repository path
TRACE_RUN = "current/trace"
LASER_RUN = "current/laser"
QUANTIZE_RUN = "current/quantize"
MEMORIZATION_RUN = "current/memorization"
PATCH_RUN = "current/patch"  # a sweep of "import os" against "import re"
SAMPLE_RUN = "current/sample"  # `stack sample` of release 0.2.0 by its repository path
ABLATION_RUN = "current/ablate"  # `stack trace --ablate` of release 0.2.0
LENS_RUN = "current/lens"  # a tuned-lens reading of release 0.2.0, of the lens LENS_TRAIN_RUN saved
LENS_TRAIN_RUN = "current/lens-train"
FINETUNE_RUN = "current/finetune"  # every parameter trained
PREPARE_RUN = "current/prepare"
ES_RUN = "current/es"  # ES from release 0.2.0 on the data PREPARE_RUN made


def planted(tmp_path: Path, run: str, change: Change, rehash: bool = True) -> Path:
    """A copy of ledger record `run` with `change` applied to its JSON (and its directory), every
    cited artifact re-hashed as a forger would; returns the copy's directory."""
    target = tmp_path / run
    shutil.copytree(RECORDS / run, target)
    return edited(target, change, rehash)


def edited(run_dir: Path, change: Change, rehash: bool = True) -> Path:
    """Run directory `run_dir` (a ledger copy, or a run a test just made) with `change` applied to
    its record, every cited artifact re-hashed as a forger would; returns the directory."""
    path = run_dir / EVIDENCE_FILE
    data = json.loads(path.read_text(encoding="utf-8"))
    change(data, run_dir)
    if rehash:
        _rehash(run_dir, data)
    path.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
    return run_dir


def config_edited(old: str, new: str) -> Change:
    """config.toml's line `old` made `new`, and the record made to agree by a perfect forger."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "config.toml"
        text = path.read_text(encoding="utf-8")
        assert old in text
        path.write_text(text.replace(old, new, 1), encoding="utf-8")
        rederive(data, run_dir)

    return change


def fixture_dirs() -> list[Path]:
    """Every record directory of the fixtures: what a checked run is joined to beside the ledger."""
    return sorted(p.parent for p in RECORDS.rglob(EVIDENCE_FILE))


def findings(*run_dirs: Path, root: Path = ROOT) -> list[str]:
    """What the integrity check of the repository at `root` reports of run directories checked
    together (a run with the parents its lineage names), joined to the ledger and the fixtures, as
    printed lines."""
    report = run_checks(root, list(run_dirs), runs_only=True, context=fixture_dirs())
    return [f.line() for f in report.violations]


def as_run_ids(fragments: tuple[str, ...]) -> list[str]:
    """Each fragment with the name of a fixture of the current set (`current/<command>`) replaced by
    its record's run id, which is what the check's findings name."""
    named = {
        f"current/{p.name}": read_evidence(p / EVIDENCE_FILE).run.id for p in (RECORDS / "current").iterdir()
    }
    out = []
    for fragment in fragments:
        for name in sorted(named, key=len, reverse=True):  # current/lens-train before current/lens
            fragment = fragment.replace(name, named[name])
        out.append(fragment)
    return out


def assert_found(found: list[str], *fragments: str) -> None:
    """Some line of `found` (the check's printed findings) names every fragment."""
    wanted = as_run_ids(fragments)
    assert any(all(f in line for f in wanted) for line in found), "\n".join(found) or "(nothing found)"


def forger_finished(plant: Change) -> Change:
    """`plant`, then a perfect forger's finish (`rederive`): what is left to catch is what the
    artifacts cannot re-derive."""

    def change(data: dict[str, Any], run_dir: Path) -> None:
        plant(data, run_dir)
        rederive(data, run_dir, rounds=4)

    return change


def assert_caught(run_dir: Path, *fragments: str, root: Path = ROOT) -> None:
    assert_found(findings(run_dir, root=root), *fragments)


def gate(data: dict[str, Any], gate_id: str) -> dict[str, Any]:
    return next(g for g in data["gates"] if g["id"] == gate_id)


# The options a smoke run turns on (a warmup, early stopping): what a record the tests make of a
# dense model shows the checks of.
SMOKE_OPTIONS = ("train.warmup_steps", "eval.early_stop")


# Options that need an optional package (the tensorboard extra): a record of the tests' making
# leaves them off, and the package's own tests show their checks required
# (tests/train/test_tensorboard_curves.py).
EXTRA_OPTIONS = ("train.tensorboard",)


def each_required_check(kind: str, options: tuple[str, ...] | None = None) -> pytest.MarkDecorator:
    """A test parametrised by every (gate_id, check) spec/run_kinds.yaml asks a completed record of
    `kind` to show, those of its options included: every option but EXTRA_OPTIONS (None), or the
    ones named, which the record the test makes runs with on."""
    entry = load_spec().run_kinds[kind]
    chosen = [
        o
        for o in entry.options
        if (o.option not in EXTRA_OPTIONS if options is None else o.option in options)
    ]
    tables = [entry.checks, *(option.checks for option in chosen)]
    cases = sorted({(g, c) for table in tables for g, names in table.items() for c in names})
    return pytest.mark.parametrize(("gate_id", "check"), cases, ids=[f"{g}-{c}" for g, c in cases])


def assert_check_required(
    run_dir: Path, copy: Path, kind: str, gate_id: str, check: str, root: Path = ROOT
) -> None:
    """A copy (at `copy`) of run `run_dir` with `check_taken_out` is caught, checked against the
    repository at `root`, as a completed `kind` run that does not show the check."""
    shutil.copytree(run_dir, copy)
    edited(copy, lambda data, _dir: check_taken_out(data, gate_id, check))
    assert_caught(copy, f"a completed {kind} run must show {gate_id}'s check {check}", root=root)


def check_taken_out(data: dict[str, Any], gate_id: str, check: str) -> None:
    """The values only `check` of `gate_id` holds, taken out of a record's JSON: what is left is
    judged as if the check never ran."""
    own = next(r.own for r in check_readers(CHECKS[gate_id]) if r.name == check)
    measured = gate(data, gate_id)["measured"]
    assert own and own <= measured.keys(), (
        f"the record lacks {gate_id}'s check {check}, or it has no own value"
    )
    for key in own:
        del measured[key]


def log_lines(run_dir: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (run_dir / "metrics.jsonl").read_text().splitlines() if line.strip()]


def write_log(run_dir: Path, lines: list[dict[str, Any]]) -> None:
    (run_dir / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))


def _rehash(run_dir: Path, data: dict[str, Any]) -> None:
    """Every cited artifact's sha256 and size written again, as a forger would after editing it."""
    for art in data["artifacts"]:
        file = (run_dir / art["path"]).resolve()
        if file.is_file() and file.is_relative_to(run_dir.resolve()):
            art.update(sha256=hashlib.sha256(file.read_bytes()).hexdigest(), bytes=file.stat().st_size)


def put_field(data: dict[str, Any], path: tuple[str, ...], value: Any) -> None:
    """Set a record's field by its derivation path (a gate's by its id), making parents as needed."""
    if path[0] == "gates":
        target: Any = gate(data, path[1])
        path = path[2:]
    else:
        target = data
    for part in path[:-1]:
        target = target.setdefault(part, {})
    target[path[-1]] = value


def rederive(data: dict[str, Any], run_dir: Path, rounds: int = 2) -> dict[str, Any]:
    """A perfect forger's finish: every field the record's artifacts derive copied into the record,
    every verdict they settle set, then every verdict judged again from its measured values (and its
    message rewritten), every artifact re-hashed. What still catches the plant is then a rule that
    reads something the forger did not (or could not) make agree."""
    spec = load_spec()
    stale: frozenset[str] = frozenset()
    for _ in range(rounds):
        _rehash(run_dir, data)
        record = EvidenceRecord.model_validate(data)
        stale = frozenset(stale_gates(record, spec))
        artifacts = Artifacts(run_dir, [a.path for a in record.artifacts])
        derivation = derive(record.run.kind, Inputs(record, artifacts, spec, stale))
        present = {g["id"] for g in data["gates"]}
        for path, value in derivation.fields.items():
            if path[0] != "gates" or path[1] in present:
                put_field(data, path, value)
        for gate_id, (verdict, exact) in derivation.verdicts.items():
            if exact and gate_id in present:
                gate(data, gate_id)["verdict"] = verdict.value
    waived = {w["gate"] for w in data.get("waivers", [])}
    for result in data["gates"]:
        if result["verdict"] == "NOT_RUN" or result["id"] not in spec.gates or result["id"] in stale:
            continue
        problems = judge(result["id"], result["measured"], spec.gates[result["id"]].threshold_values)
        result["verdict"] = verdict_of(spec, result["id"], not problems, result["id"] in waived).value
        result["message"] = judged_message(problems)
    _rehash(run_dir, data)
    return data
