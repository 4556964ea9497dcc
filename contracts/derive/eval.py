"""The record of `stack eval` from the `eval.json` it cites: the scores, bits per byte and the gates
they decide.
"""

from __future__ import annotations

from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.reports import basename, bpb_identity, mirrored, report_of, verified_checkpoint, whole
from contracts.evidence import EvidenceRecord, Verdict
from contracts.likelihood import predicted_positions_sha256

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# What an evaluation scores, as eval.json, the record's metrics and GATE-EVAL-003 each state it.
EVAL_SCORES = ("loss", "bits_per_byte", "tokens", "predicted_tokens", "bytes")


@derives("eval")
def eval_record(inputs: Inputs) -> Derivation:
    """The scores and overlap the record repeats from eval.json, and the scores and overlap
    GATE-EVAL-003 judged; the checkpoint is the one its config names."""
    derived = Derivation()
    report = report_of(inputs, derived, "eval.json", "1.4.0")
    if report is not None:
        mirrored(derived, report, (*EVAL_SCORES, "overlap"))
        if "GATE-EVAL-003" not in inputs.stale:
            scores = {key: report[key] for key in EVAL_SCORES if key in report}
            derived.gate("GATE-EVAL-003", scores, optional=True)
            if "overlap" in report:  # the overlap check judged the overlap the report states
                derived.put(
                    ("gates", "GATE-EVAL-003", "measured", "overlap_stated"), report["overlap"], optional=True
                )

        bpb = bpb_identity(report.get("loss"), report.get("predicted_tokens"), report.get("bytes"))
        if bpb is not None and not same(report.get("bits_per_byte"), bpb):
            derived.problems.append(
                f"eval.json: bits_per_byte is {report.get('bits_per_byte')}, but its loss over "
                f"{report.get('predicted_tokens')} predicted tokens and {report.get('bytes')} bytes "
                f"gives {bpb}"
            )
    read = inputs.record.config.get("checkpoint")
    if inputs.record.checkpoint is not None and isinstance(read, str) and basename(read):
        derived.put(("checkpoint", "name"), basename(read))
        verified_checkpoint(inputs, derived, read)
    derived.problems += scored_text_problems(inputs.record)
    _scored_positions(inputs, derived)
    return derived


def _scored_positions(inputs: Inputs, derived: Derivation) -> None:
    """What GATE-EVAL-003 states that the text's token count and the record's config decide, at any
    revision: the digest of the positions a score of N tokens predicts (contracts.likelihood: a
    record could restate it with its twin), and, where the gate passed, the scored
    positions' digest too (it passes only when the two are one); and (check window) the
    context the windows were held to, config.seq_len."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-EVAL-003"), None)
    measured = result.measured if result is not None else None
    if not isinstance(measured, dict):
        return
    tokens = measured.get("tokens")
    if "predicted_positions_sha256" in measured and whole(tokens):
        predicted = predicted_positions_sha256(tokens)
        derived.gate("GATE-EVAL-003", {"predicted_positions_sha256": predicted})
        if result is not None and result.verdict is Verdict.PASS:
            derived.gate("GATE-EVAL-003", {"scored_positions_sha256": predicted})
    if "context" in measured:
        derived.gate("GATE-EVAL-003", {"context": (inputs.record.config or {}).get("seq_len")})


def scored_text_problems(record: EvidenceRecord) -> list[str]:
    """`stack eval` hashes the text it scored once, into `metrics.text_sha256` and GATE-EVAL-003's
    `text_sha256` alike (stack/cli/eval.py, stack.eval.file_check, stack.eval.split_check): two
    digests of one text that differ name two texts (a gate of any revision states it)."""
    scored = next((g.measured for g in record.gates if g.id == "GATE-EVAL-003"), None)
    judged = scored.get("text_sha256") if isinstance(scored, dict) else None
    stated = record.metrics.get("text_sha256")
    if not isinstance(judged, str) or not isinstance(stated, str) or judged == stated:
        return []
    return [
        f"metrics.text_sha256 is {stated!r}, but GATE-EVAL-003 judged the text {judged!r}: the evaluation "
        "hashes the one text it scored into both"
    ]
