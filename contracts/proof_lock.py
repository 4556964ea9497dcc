"""The proof lock: which code each gate's falsifiers were last proven against, and what they showed.

The proof by mutation (every falsifier of a gate passes with the gate on and at least one fails
with it forced off) is a fact about today's code, not a record of history, so it lives in one file
updated in place, like a package manager's lock file: `evidence/proofs.lock`. Per ACTIVE gate it
keeps

* `fingerprint`: the digest of the gate's judge, bindings, falsifier tests and spec entry that
  were proven (tools/fingerprints.py computes it from source, nothing imported);
* `falsifiers`: each test marked `gate(ID)`, with its outcome with the gate on and forced off;
* `holds`: for the gates the conformance kind judges, each test marked `holds(ID)` and its outcome;
* `conformance`: for those gates, the verdict their judge gives over the outcomes above.

Nothing else (no commit, no time), so the lock's diff after `make proofs` names exactly the gates
whose code changed. GATE-INTEG-002's judge decides each gate's entry from its outcomes, at run
time in the pytest plugin that writes the lock and again in the integrity check that reads it.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.judges import TEST_FAILED, TEST_PASSED, TEST_SKIPPED, judge
from contracts.spec import GateStatus, Spec

LOCK_FILE = Path("evidence") / "proofs.lock"
LOCK_SCHEMA = 1
FALSIFY_GATE = "GATE-INTEG-002"
CONFORMANCE_KIND = "conformance"
OUTCOMES = (TEST_PASSED, TEST_FAILED, TEST_SKIPPED)
ON, OFF = "on", "off"


def gate_entry(
    fingerprint: str,
    falsifiers: dict[str, tuple[str, str | None]],
    holds: dict[str, str] | None,
    conformance: str | None,
) -> dict[str, Any]:
    """One gate's entry: its fingerprint, each falsifier's outcome on and off (None off: it was not
    run off, as a test that failed with the gate on is not), and for a conformance gate its `holds`
    tests and verdict."""
    entry: dict[str, Any] = {
        "fingerprint": fingerprint,
        "falsifiers": {node: {ON: on, OFF: off} for node, (on, off) in sorted(falsifiers.items())},
    }
    if holds is not None:
        entry["holds"] = dict(sorted(holds.items()))
    if conformance is not None:
        entry["conformance"] = conformance
    return entry


# A test's outcomes as json.dumps(indent=2) spreads them, to be folded onto the test's own line.
_SPREAD_OUTCOME = re.compile(r'\{\n\s+"on": ("\w+"),\n\s+"off": ("\w+"|null)\n\s+\}')


def render(gates: dict[str, dict[str, Any]]) -> str:
    """The lock's text: sorted, a test and its outcomes a line, so that a diff names the gates and
    the tests that changed."""
    text = json.dumps({"schema": LOCK_SCHEMA, "gates": dict(sorted(gates.items()))}, indent=2)
    return _SPREAD_OUTCOME.sub(r'{"on": \1, "off": \2}', text) + "\n"


def write_lock(root: Path, gates: dict[str, dict[str, Any]]) -> Path:
    """Write the lock of the repository at `root` in place; returns its path."""
    path = root / LOCK_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(gates), encoding="utf-8")
    return path


def parse(text: str) -> dict[str, dict[str, Any]]:
    """The gates of a lock's text; BadInput naming what is wrong when it is not a lock."""
    try:
        data = json.loads(text)
    except ValueError as exc:
        raise BadInput(f"{LOCK_FILE} is not JSON ({exc}); run `make proofs` to write it again") from None
    if (
        not isinstance(data, dict)
        or data.get("schema") != LOCK_SCHEMA
        or not isinstance(data.get("gates"), dict)
    ):
        raise BadInput(f"{LOCK_FILE} is not a proof lock of schema {LOCK_SCHEMA}; run `make proofs`")
    gates = data["gates"]
    for gate_id, entry in gates.items():
        if not _well_formed(entry):
            raise BadInput(f"{LOCK_FILE}: the entry of {gate_id} is malformed; run `make proofs`")
    return gates


def read_lock(root: Path) -> dict[str, dict[str, Any]] | None:
    """The lock of the repository at `root` (None when it has none)."""
    path = root / LOCK_FILE
    if not path.is_file():
        return None
    try:
        text = path.read_text(encoding="utf-8")
    except UnicodeDecodeError:
        raise BadInput(f"{LOCK_FILE} is not UTF-8 text; run `make proofs` to write it again") from None
    return parse(text)


def _well_formed(entry: object) -> bool:
    """Whether an entry has the shape `gate_entry` writes."""
    if not isinstance(entry, dict) or not isinstance(entry.get("fingerprint"), str):
        return False
    tests = entry.get("falsifiers")
    if not isinstance(tests, dict):
        return False
    for outcome in tests.values():
        if not isinstance(outcome, dict) or outcome.get(ON) not in OUTCOMES:
            return False
        if outcome.get(OFF) not in (*OUTCOMES, None):
            return False
    holds = entry.get("holds", {})
    return isinstance(holds, dict) and all(v in OUTCOMES for v in holds.values())


def falsify_detail(entry: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """One gate's per-test detail in the form GATE-INTEG-002's summary reads (`falsify_summary`)."""
    tests = entry["falsifiers"]
    return {
        "falsifiers": {node: t[ON] for node, t in tests.items()},
        "red_with_gate_off": {node: t[OFF] == TEST_FAILED for node, t in tests.items()},
    }


def falsify_summary(detail: dict[str, dict[str, dict[str, Any]]]) -> dict[str, dict[str, int | bool]]:
    """GATE-INTEG-002's measured value: per gate, how many falsifiers, green with it on, red with it
    off, and how many passed with it on yet stayed green with it off (each one a test that cannot
    show its gate firing)."""
    summary: dict[str, dict[str, int | bool]] = {}
    for gate_id, gate in detail.items():
        outcomes = list(gate["falsifiers"].values())
        red = gate["red_with_gate_off"]
        summary[gate_id] = {
            "falsifiers": len(outcomes),
            "passed_on": TEST_PASSED in outcomes and TEST_FAILED not in outcomes,
            "red_off": any(red.values()),
            "stayed_green": sum(
                outcome == TEST_PASSED and not red.get(name) for name, outcome in gate["falsifiers"].items()
            ),
        }
    return summary


def conformance_measured(entry: dict[str, Any]) -> dict[str, dict[str, str]]:
    """What a conformance gate's judge reads: every falsifier's and `holds` test's outcome."""
    outcomes = {node: t[ON] for node, t in entry["falsifiers"].items()}
    return {"falsifiers": dict(sorted({**outcomes, **entry.get("holds", {})}.items()))}


def conformance_verdict(spec: Spec, gate_id: str, entry: dict[str, Any]) -> str:
    """PASS or FAIL, as the gate's own judge decides over its tests' outcomes."""
    problems = judge(gate_id, conformance_measured(entry), spec.gates[gate_id].threshold_values)
    return "FAIL" if problems else "PASS"


def entry_problems(spec: Spec, gate_id: str, entry: dict[str, Any]) -> list[str]:
    """Why a gate's entry does not prove it (empty when it does): GATE-INTEG-002's judge over its
    falsifiers, and for a conformance gate its stated verdict against its judge's."""
    summary = falsify_summary({gate_id: falsify_detail(entry)})
    thresholds = spec.gates[FALSIFY_GATE].threshold_values
    problems = judge(FALSIFY_GATE, {"gates": summary}, thresholds)
    if gate_id in spec.required_gates(CONFORMANCE_KIND):
        verdict = conformance_verdict(spec, gate_id, entry)
        if entry.get("conformance") != verdict:
            problems.append(f"states conformance {entry.get('conformance')!r}, but its judge says {verdict}")
        elif verdict != "PASS":
            problems.append("its conformance tests do not pass")
    return problems


def lock_problems(
    spec: Spec, gates: dict[str, dict[str, Any]], fingerprints: dict[str, str]
) -> dict[str, list[str]]:
    """gate id → why the lock does not prove it for the code whose `fingerprints` are given: every
    ACTIVE gate has an entry, for today's fingerprint, that its judges accept."""
    found: dict[str, list[str]] = {}
    for gate_id, gate in sorted(spec.gates.items()):
        if gate.status is not GateStatus.ACTIVE:
            continue
        entry = gates.get(gate_id)
        if entry is None:
            found[gate_id] = ["has no entry"]
            continue
        problems = entry_problems(spec, gate_id, entry)
        if fingerprints.get(gate_id) != entry["fingerprint"]:
            problems.insert(0, "was proven for other code than today's (its fingerprint differs)")
        if problems:
            found[gate_id] = problems
    for gate_id in sorted(set(gates) - set(spec.gates)):
        found[gate_id] = ["is not a gate of the spec"]
    return found
