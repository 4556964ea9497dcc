"""What the derivations of command records share (an evaluation matrix, a surgery, a prepare, an
export, ...): the report a record cites, the thresholds in force for it, and the checkpoint and
weights it names.

Each command writes its results as a file beside its record (`evalmatrix.json`, `surgery.json`,
`memorization.json`, `matrix.json`, `synth.json` and `synth.jsonl`, `eval.json`, `export.json`,
`trace.json`, a prepare's `manifest.json`). The derivation of each kind (its own module of this
package) reads that file and says what the record's metrics and the measured values of the gates
they decide must be; each gate so derived is judged again from the derived values (`judged`), so
its verdict follows from the files and not from the record. Files a kind gained in spec 1.7.0
(per-item scores, per-gate results, the manifest) are asked of records made under 1.7.0 or later
only (`PER_ITEM_SINCE`).
"""

from __future__ import annotations

import json
import math
from datetime import datetime
from functools import lru_cache
from typing import Any

from contracts.checkpoints import manifest_sha256
from contracts.derive.base import Derivation, Inputs
from contracts.evidence import EvidenceRecord, RunStatus
from contracts.judges import judge
from contracts.ledger import settle
from contracts.likelihood import bits_per_byte_of
from contracts.seeds import seeded_state_sha256
from contracts.spec import thresholds_digest

PER_ITEM_SINCE = "1.7.0"  # the spec version from which these kinds cite their raw per-item results


def judged(inputs: Inputs, derived: Derivation, gate_id: str, measured: dict[str, Any]) -> None:
    """A gate judged once from `measured`: its values and its verdict, derived."""
    spec = inputs.spec
    if gate_id not in spec.gates or gate_id in inputs.stale:
        return
    waived = any(w.gate == gate_id for w in inputs.record.waivers)
    ok = not judge(gate_id, measured, spec.gates[gate_id].threshold_values)
    result = settle(spec, gate_id, None, measured, ok, waived)
    assert result is not None
    derived.verdict(gate_id, result.verdict)
    derived.gate(gate_id, measured)


def thresholds_in_force(inputs: Inputs, gate_id: str) -> dict[str, float | int] | None:
    """The thresholds of the revision of `gate_id` the record judged under (the one its spec
    version had where it states no result of the gate): the values its result states where they
    hash to the digest spec/revisions.yaml keeps for that revision, else the spec's own where that
    revision's digest is today's. None where neither holds: an older revision's values are kept
    only as their digest, so what a result file restates of them is not derived."""
    spec, record = inputs.spec, inputs.record
    result = next((g for g in record.gates if g.id == gate_id), None)
    revision = result.revision if result is not None else spec.revision_at(gate_id, record.spec.version)
    entry = next((e for e in spec.revisions.get(gate_id, []) if e.revision == revision), None)
    if entry is None or gate_id not in spec.gates:
        return None
    if result is not None and thresholds_digest(result.threshold) == entry.thresholds_sha256:
        return dict(result.threshold)
    gate = spec.gates[gate_id]
    return gate.threshold_values if gate.thresholds_sha256 == entry.thresholds_sha256 else None


def report_of(inputs: Inputs, derived: Derivation, name: str, since: str) -> dict[str, Any] | None:
    """The command's result file as an object; None (with the file missing, or a problem) otherwise.

    A command a gate halted wrote no result, so only a completed record must cite one.
    """
    try:
        report = inputs.artifacts.json(name)
    except ValueError:
        derived.problems.append(f"{name} is not JSON")
        return None
    if report is None:
        if inputs.record.run.status is RunStatus.COMPLETED:
            derived.missing.append((name, since))
        return None
    if not isinstance(report, dict):
        derived.problems.append(f"{name} is not a JSON object")
        return None
    return report


def mirrored(derived: Derivation, report: dict[str, Any], keys: tuple[str, ...]) -> None:
    """Metrics the record copies from the report, key for key."""
    for key in keys:
        if key in report:
            derived.put(("metrics", key), report[key])


@lru_cache(maxsize=256)
def version_key(version: str) -> tuple[int, ...]:
    """A semantic version as a sortable tuple (its pre-release part ignored)."""
    core = version.split("-", 1)[0]
    return tuple(int(part) for part in core.split(".") if part.isdigit())


def whole(*values: Any) -> bool:
    """Whether every value is an integer (a count, a step), not a boolean."""
    return all(isinstance(v, int) and not isinstance(v, bool) for v in values)


WEIGHTS_FILE = "model.safetensors"


def basename(path: str) -> str:
    """The last part of a path as a result file writes it (the name a record gives a checkpoint)."""
    return path.rstrip("/").rsplit("/", 1)[-1]


def verified_checkpoint(inputs: Inputs, derived: Derivation, path: Any) -> None:
    """GATE-CKPT-002's name of the checkpoint a command loaded from directory `path` (its config's,
    or a result file's): the gate verifies a checkpoint as it is loaded and names it by that
    directory (stack.train.checkpoint), so a record cannot say another checkpoint verified."""
    if isinstance(path, str) and basename(path) and "GATE-CKPT-002" not in inputs.stale:
        derived.put(("gates", "GATE-CKPT-002", "measured", "checkpoint"), basename(path), optional=True)


def cited_checkpoint(inputs: Inputs, derived: Derivation, where: str, path: Any, manifest: Any) -> None:
    """A result file that cites the checkpoint it read by its directory (`path`) and by the sha256
    of its manifest.json (`manifest`, at `where`) cites the record's checkpoint: the record names
    it by that directory, and the manifest its step and files make again (contracts.checkpoints)
    hashes as cited, so neither its step nor a file's hash can be swapped for another's."""
    checkpoint = inputs.record.checkpoint
    if checkpoint is None:
        return
    if isinstance(path, str) and basename(path):
        derived.put(("checkpoint", "name"), basename(path))
    made = manifest_sha256(checkpoint)
    if isinstance(manifest, str) and manifest != made:
        derived.problems.append(
            f"checkpoint.files: the manifest of step {checkpoint.step} and its files hashes to {made[:12]}, "
            f"but {where} cites {manifest[:12]}: the record names another checkpoint than the one read"
        )


def source_parent_problems(record: EvidenceRecord) -> list[str]:
    """A derived model's `source` parent (stack.train.lineage) is the checkpoint its record read:
    the weights the lineage names are that checkpoint's (`checkpoint.files`)."""
    hashed = record.checkpoint.files.get(WEIGHTS_FILE) if record.checkpoint is not None else None
    parents = record.lineage.parents if record.lineage is not None else []
    return [
        f"lineage's source parent names the weights {ref.checkpoint_sha256[:12]}, but the checkpoint it "
        f"read (checkpoint.files) holds {hashed.sha256[:12]}"
        for ref in parents
        if ref.role == "source" and hashed is not None and ref.checkpoint_sha256 != hashed.sha256
    ]


def made_weights(inputs: Inputs, derived: Derivation, report: dict[str, Any], name: str) -> None:
    """`lineage.model_sha256`, the weights a command made, is the sha256 its result file lists for
    them (`name`, relative to its output) when it made them."""
    listed = (report.get("files") or {}).get(name)
    if inputs.record.lineage is not None and isinstance(listed, dict) and "sha256" in listed:
        derived.put(("lineage", "model_sha256"), listed["sha256"])


def created_problems(
    record: EvidenceRecord, name: str, report: dict[str, Any], settled_first: bool
) -> list[str]:
    """When a command wrote its result file (its `created`), against the run's start and finish:
    after the run started, and before it finished, or, for a command that settles its record before
    it writes the file (`settled_first`: a surgery), no earlier than the finish."""
    try:
        created = datetime.fromisoformat(str(report["created"]))
    except (KeyError, ValueError):
        return []
    run = record.run
    problems = []
    if created < run.started:
        problems.append(
            f"run.started is {run.started.isoformat()}, after {name} was created ({created.isoformat()})"
        )
    finished = run.finished
    if finished is not None and (created < finished if settled_first else created > finished):
        order = "after" if settled_first else "before"
        problems.append(
            f"run.finished is {finished.isoformat()}, {order} {name} was created ({created.isoformat()})"
        )
    return problems


def written_under(derived: Derivation, report: dict[str, Any]) -> None:
    """The spec a command wrote its result file under is the one its record names."""
    if isinstance(report.get("spec_version"), str):
        derived.put(("spec", "version"), report["spec_version"])


def bpb_identity(loss: Any, tokens: Any, n_bytes: Any) -> float | None:
    """Bits per byte of a mean loss over `tokens` predicted tokens of a text of `n_bytes` bytes: the
    one formula (`bits_per_byte_of`) over the loss's total; None when an input is not a number."""
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in (loss, tokens, n_bytes)):
        return None
    if n_bytes <= 0 or not math.isfinite(loss):
        return None
    return bits_per_byte_of(loss * tokens, n_bytes)


def seeded(inputs: Inputs, derived: Derivation, gate_id: str, seed: Any) -> None:
    """A check seeded's values the record's config decides (where the record shows the check): the
    seed is the one `seed` states, and the state a generator freshly seeded with it holds, on the
    device the record's generator drew on, is contracts.seeds' (not derived where this machine has
    no generator of that device)."""
    measured = next((g.measured for g in inputs.record.gates if g.id == gate_id), None)
    if gate_id in inputs.stale or not isinstance(measured, dict) or "seed" not in measured or not whole(seed):
        return
    derived.put(("gates", gate_id, "measured", "seed"), seed, optional=True)
    device = measured.get("generator_device")
    digest = seeded_state_sha256(seed, device) if isinstance(device, str) else None
    if digest is not None:
        derived.put(("gates", gate_id, "measured", "seeded_state_sha256"), digest, optional=True)


def short(value: Any, limit: int = 80) -> str:
    text = json.dumps(value, sort_keys=True, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


MANIFEST = "manifest.json"
