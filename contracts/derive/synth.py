"""The record of `stack synth` from the lines it wrote (`synth.json` and `synth.jsonl`): each sample
kept or dropped for a named reason, and the budgets the synthetic-data gates judge.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from contracts.coherence import coherence_score
from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.reports import cited_checkpoint, judged, report_of, seeded
from contracts.evidence import RunStatus
from contracts.judges import judge

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


def _synth_counts(report: dict[str, Any]) -> list[str]:
    """A synthesis draws `settings.samples` samples, and keeps or drops each one for a reason."""
    problems, samples = [], (report.get("settings") or {}).get("samples")
    generated, kept, dropped = report.get("generated"), report.get("kept"), report.get("dropped")
    if isinstance(samples, int) and isinstance(generated, int) and generated != samples:
        problems.append(f"synth.json: generated is {generated}, but its settings draw {samples} samples")
    counted = isinstance(dropped, dict) and all(isinstance(n, int) for n in dropped.values())
    if isinstance(generated, int) and isinstance(kept, int) and counted:
        gone = sum(dropped.values())  # type: ignore[union-attr]
        if kept + gone != generated:
            problems.append(f"synth.json: {kept} kept and {gone} dropped, but {generated} generated")
    return problems


def synth_pair(line: Any) -> tuple[str, str] | None:
    """(instruction, response) of one line of synth.jsonl: a chat record's user and assistant
    messages, or (before chat records) its `instruction` and `response`."""
    if not isinstance(line, dict):
        return None
    messages = line.get("messages")
    if isinstance(messages, list) and len(messages) == 2 and all(isinstance(m, dict) for m in messages):
        pair = (messages[0].get("content"), messages[1].get("content"))
    else:
        pair = (line.get("instruction"), line.get("response"))
    return pair if all(isinstance(x, str) for x in pair) else None  # type: ignore[return-value]


def _synth_lines(text: str, settings: dict[str, Any]) -> list[str]:
    """Every kept line passed the filters `stack synth` drops by (stack.tune.synth.drop_reason): no
    shorter than min_chars, no less coherent than min_coherence (the monitor's scorer), and none the
    same as an earlier one."""
    problems, seen = [], set()
    least, coherent = settings.get("min_chars"), settings.get("min_coherence")
    for number, line in enumerate((x for x in text.splitlines() if x.strip()), 1):
        try:
            pair = synth_pair(json.loads(line))
        except ValueError:
            pair = None
        if pair is None:
            problems.append(f"synth.jsonl line {number} is not an instruction and a response")
            continue
        if isinstance(least, int) and min(len(pair[0]), len(pair[1])) < least:
            problems.append(f"synth.jsonl line {number} is shorter than min_chars {least}, yet kept")
        elif isinstance(coherent, int | float) and min(map(coherence_score, pair)) < coherent:
            problems.append(f"synth.jsonl line {number} scores below min_coherence {coherent}, yet kept")
        if pair in seen:
            problems.append(f"synth.jsonl line {number} repeats an earlier line, yet kept")
        seen.add(pair)
    return problems


# The spec version from which synth.json keeps every continuation as drawn (GATE-SYNTH-002).
SYNTH_CONTINUATIONS_SINCE = "1.33.0"


def _synth_budgets(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], settings: dict[str, Any]
) -> None:
    """GATE-SYNTH-002's check budgets from synth.json: every continuation it keeps, the model's
    context, and the length settings it states (the record's config.settings), judged again by the
    same judge, so a budget read from the wrong setting is a problem here whatever the record says;
    one instruction drawn per sample generated."""
    if "continuations" not in report:
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append(("synth.json: continuations", SYNTH_CONTINUATIONS_SINCE))
        return
    measured = {
        "continuations": report["continuations"],
        "ctx": report.get("ctx"),
        "max_instruction_tokens": settings.get("max_instruction_tokens"),
        "max_response_tokens": settings.get("max_response_tokens"),
    }
    if "GATE-SYNTH-002" not in inputs.stale:
        derived.gate("GATE-SYNTH-002", measured)
    derived.problems += [f"synth.json: {p}" for p in judge("GATE-SYNTH-002", measured)]
    parts = [c.get("part") for c in report["continuations"] if isinstance(c, dict)]
    if isinstance(report.get("generated"), int) and parts.count("instruction") != report["generated"]:
        derived.problems.append(
            f"synth.json keeps {parts.count('instruction')} instruction continuation(s), but "
            f"{report['generated']} samples were generated"
        )


# What `stack synth` states as its config: synth.json before the counts were added to it.
SYNTH_CONFIG = ("model", "template", "settings", "clamped")


@derives("synth")
def synth_record(inputs: Inputs) -> Derivation:
    """The counts from synth.json, and the lines GATE-SYNTH-001 counts from synth.jsonl itself; the
    config and the checkpoint the file says the synthesis drew from."""
    derived = Derivation()
    report = report_of(inputs, derived, "synth.json", "1.6.0")
    text = inputs.artifacts.text("synth.jsonl")
    if text is None and inputs.record.run.status is RunStatus.COMPLETED:
        derived.missing.append(("synth.jsonl", "1.6.0"))
    if report is None:
        return derived
    for key in SYNTH_CONFIG:
        if key in report:
            derived.put(("config", key), report[key])
    model = report.get("model") or {}
    cited_checkpoint(
        inputs, derived, "synth.json's model", model.get("checkpoint"), model.get("manifest_sha256")
    )
    counts = {key: report[key] for key in ("generated", "kept", "dropped") if key in report}
    for key, value in counts.items():
        derived.put(("metrics", key), value)
    derived.problems += _synth_counts(report)
    if text is not None:
        derived.problems += _synth_lines(text, report.get("settings") or {})
        lines = sum(1 for line in text.splitlines() if line.strip())
        digest = hashlib.sha256(text.encode("utf-8")).hexdigest()
        if report.get("records_sha256") not in (None, digest):
            derived.problems.append("synth.json's records_sha256 is not the sha256 of synth.jsonl")
        judged(inputs, derived, "GATE-SYNTH-001", {**counts, "lines": lines})
    if "generated" in report:
        derived.gate("GATE-SYNTH-002", {"generated": report["generated"]})
    settings = report.get("settings") or {}
    seeded(inputs, derived, "GATE-SYNTH-002", settings.get("seed"))
    _synth_budgets(inputs, derived, report, settings)
    if "GATE-TRAIN-005" not in inputs.stale and "temperature" in settings:
        # the draws are replayed at the temperature the synthesis states (GATE-TRAIN-005)
        derived.put(
            ("gates", "GATE-TRAIN-005", "measured", "temperature"), settings["temperature"], optional=True
        )
    return derived
