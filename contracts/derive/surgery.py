"""The records of weight surgery (`stack laser`, `quantize`, `lora-merge`) from their per-matrix
results (`surgery.json`): the surgery gates judged again over every matrix.
"""

from __future__ import annotations

import tomllib
from typing import Any

from contracts.checkpoints import STATE_FILE, chat_template_sha256
from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.reports import (
    PER_ITEM_SINCE,
    WEIGHTS_FILE,
    cited_checkpoint,
    created_problems,
    judged,
    made_weights,
    report_of,
    short,
    source_parent_problems,
    written_under,
)
from contracts.model_shape import DEFAULTS as MODEL_DEFAULTS
from contracts.selection import selected_by
from contracts.truncation import rank_kept

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# Before 1.7.0 surgery.json held the measured blocks but not the gates' results: the gates whose
# values are one of those blocks, by block.
SURGERY_BLOCKS = {
    "GATE-LORA-002": "parity",
    "GATE-LORA-003": "unmerge",
    "GATE-LORA-006": "embedding",
    "GATE-HQQ-002": "agreement",
}


@derives("laser", "quantize", "lora-merge")
def surgery_record(inputs: Inputs) -> Derivation:
    """The metrics block is surgery.json's `measured`; every gate's values are its `gates` (since 1.7.0)."""
    derived = Derivation()
    report = report_of(inputs, derived, "surgery.json", "1.5.0")
    if report is None:
        return derived
    surgery_provenance(inputs, derived, report)
    measured = report.get("measured")
    if isinstance(measured, dict):
        derived.put(("metrics",), measured)
    gates = report.get("gates")
    rows = measured.get("matrices") if isinstance(measured, dict) else None
    rho = (report.get("settings") or {}).get("rho")
    if isinstance(rows, list) and isinstance(rho, int | float) and not isinstance(rho, bool):
        derived.problems += [
            f"surgery.json: {row.get('matrix')} kept {row.get('kept')} of {row.get('rank')} singular values, "
            f"but ρ = {rho:g} keeps {rank_kept(row['rank'], rho)} (⌈ρ·rank⌉)"
            for row in rows
            if isinstance(row, dict)
            and isinstance(row.get("rank"), int)
            and row.get("kept") != rank_kept(row["rank"], rho)
        ]
    if isinstance(gates, dict):
        for gate_id, values in sorted(gates.items()):
            if isinstance(values, dict):
                judged(inputs, derived, gate_id, values)
                if isinstance(rows, list):
                    derived.problems += [
                        f"surgery.json: gates.{gate_id}.{key} is {short(value)}, but its measured matrices "
                        f"give {short(want)}"
                        for key, want in matrix_lists(gate_id, rows, values).items()
                        if not same(value := values.get(key), want)
                    ]
        model, unread = _cited_model(inputs)
        derived.problems += unread + _selection_problems(inputs, derived, gates, model)
        _tied_config(derived, gates, model)
        derived.problems += _template_problems(inputs, derived, gates, report)
        settings = report.get("settings")
        if isinstance(settings, dict) and "group_size" in settings and "GATE-HQQ-001" in gates:
            # the size GATE-HQQ-001's check requested held the groups to is the settings' own,
            # whatever surgery.json's gate block restates of it
            group = settings["group_size"]
            derived.put(("gates", "GATE-HQQ-001", "measured", "group_requested"), group, optional=True)
    else:
        derived.missing.append(("surgery.json: per-gate results", PER_ITEM_SINCE))
        for gate_id, block in SURGERY_BLOCKS.items():
            judged_here = any(g.id == gate_id for g in inputs.record.gates)
            if judged_here and isinstance(measured, dict) and isinstance(measured.get(block), dict):
                judged(inputs, derived, gate_id, measured[block])
        if isinstance(rows, list):
            for result in inputs.record.gates:
                if result.id in inputs.stale or not isinstance(result.measured, dict):
                    continue
                for key, want in matrix_lists(result.id, rows, result.measured).items():
                    derived.put(("gates", result.id, "measured", key), want)
    return derived


def _cited_model(inputs: Inputs) -> tuple[dict[str, Any] | None, list[str]]:
    """The [model] table of the config.toml the record cites (a run directory's; a ledger's copy
    cites none), and what is wrong with the file."""
    text = inputs.artifacts.text("config.toml")
    if text is None:
        return None, []
    try:
        model = tomllib.loads(text).get("model")
    except tomllib.TOMLDecodeError:
        return None, ["config.toml is not TOML"]
    return (model if isinstance(model, dict) else None), []


def _tied_config(derived: Derivation, gates: dict[str, Any], model: dict[str, Any] | None) -> None:
    """GATE-HQQ-003 holds the head to the embedding only where the model ties them (`tied_config`),
    which the cited config decides (tied where it leaves the key out, as ModelConfig's default):
    a record that says untied has the check judge nothing, so the value is derived, not read."""
    if model is not None and isinstance(gates.get("GATE-HQQ-003"), dict):
        tied = model.get("tie_embeddings", MODEL_DEFAULTS["tie_embeddings"])
        derived.put(("gates", "GATE-HQQ-003", "measured", "tied_config"), tied, optional=True)


def _selection_problems(
    inputs: Inputs, derived: Derivation, gates: dict[str, Any], model: dict[str, Any] | None
) -> list[str]:
    """GATE-LASER-003's check selection (from 1.30.0): the tensors it held the targets to are what
    the record's command line (`run.argv`: --targets, --layers) selects of the model its config.toml
    describes, by contracts.selection; the record's and surgery.json's alike."""
    values = gates.get("GATE-LASER-003")
    if not (isinstance(values, dict) and "selected" in values and model is not None):
        return []
    want = selected_by(inputs.record.run.argv or [], model)
    derived.put(("gates", "GATE-LASER-003", "measured", "selected"), want)
    if same(values["selected"], want):
        return []
    return [
        f"surgery.json: gates.GATE-LASER-003.selected is {short(values['selected'])}, but the command "
        f"line's --targets and --layers select {short(want)} of its model"
    ]


def _template_problems(
    inputs: Inputs, derived: Derivation, gates: dict[str, Any], report: dict[str, Any]
) -> list[str]:
    """GATE-LASER-003's check template: the digest of the chat template the surgery's
    checkpoint carries is the one contracts.checkpoints.chat_template_sha256 gives of the state.json
    the record cites under surgery.json's `checkpoint`. A record filed into a ledger
    (`--evidence-dir`) cites surgery.json alone, not the run directory's checkpoint: there the
    digest is the in-run gate's measurement, which nothing stored decides; a cited state that is not
    a JSON object is named."""
    values = gates.get("GATE-LASER-003")
    if not (isinstance(values, dict) and "template_written" in values):
        return []
    state_file = f"{report.get('checkpoint')}/{STATE_FILE}"
    if not (isinstance(report.get("checkpoint"), str) and inputs.artifacts.has(state_file)):
        return []
    state = inputs.artifacts.json(state_file)
    if not isinstance(state, dict):
        return [f"surgery.json: {state_file} is not a checkpoint state to read the chat template in"]
    want = chat_template_sha256(state)
    derived.put(("gates", "GATE-LASER-003", "measured", "template_written"), want)
    if values["template_written"] == want:
        return []
    return [
        f"surgery.json: gates.GATE-LASER-003.template_written is {short(values['template_written'])}, but "
        f"{state_file} carries a chat template of digest {short(want)}"
    ]


def surgery_provenance(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> None:
    """What the record restates of surgery.json (stack.surgery.output): its config is the source
    and the settings, its checkpoint and source parent the source read, its status, spec and the
    weights it made the file's; the file was written once the record was settled."""
    settings = report.get("settings")
    if isinstance(settings, dict):
        for key, value in settings.items():
            derived.put(("config", key), value)
    source = report.get("source") or {}
    cited_checkpoint(
        inputs, derived, "surgery.json's source", source.get("checkpoint"), source.get("manifest_sha256")
    )
    if inputs.record.checkpoint is not None and isinstance(source.get("model_sha256"), str):
        derived.put(("checkpoint", "files", WEIGHTS_FILE, "sha256"), source["model_sha256"])
    derived.problems += source_parent_problems(inputs.record)
    if report.get("status") in ("completed", "halted"):
        derived.put(("run", "status"), report["status"])
    if report.get("status") == "completed" and isinstance(report.get("checkpoint"), str):
        made_weights(inputs, derived, report, f"{report['checkpoint']}/{WEIGHTS_FILE}")
    written_under(derived, report)
    derived.problems += created_problems(inputs.record, "surgery.json", report, settled_first=True)


# What each surgery gate lists of the matrices a surgery touched, by key: the keys of each row that
# surgery.json's `measured.matrices` holds too (the rest, an error measured, are the gate's own).
MATRIX_ROWS = {"GATE-LASER-002": ("matrix", "rank", "kept", "discarded_norm"), "GATE-HQQ-001": ("matrix",)}


def matrix_lists(gate_id: str, rows: list[Any], values: dict[str, Any]) -> dict[str, Any]:
    """What `gate_id`'s values must list of the surgery's matrices (`rows`, surgery.json's
    `measured.matrices`): GATE-LASER-001 their names, GATE-LASER-003 every tensor they hold as its
    targets, GATE-LASER-002 and GATE-HQQ-001 one row per matrix in order (each row's own measurements
    taken from the gate's row of the same matrix, the keys surgery.json holds from it)."""
    rows = [row for row in rows if isinstance(row, dict)]
    if gate_id == "GATE-LASER-001" and "matrices" in values:
        return {"matrices": [row.get("matrix") for row in rows]}
    if gate_id == "GATE-LASER-003" and "targets" in values:
        return {"targets": sorted(str(key) for row in rows for key in row.get("keys") or [])}
    shared = MATRIX_ROWS.get(gate_id)
    listed = values.get("matrices")
    if shared is None or not isinstance(listed, list):
        return {}
    own = {str(row.get("matrix")): row for row in listed if isinstance(row, dict)}
    expected = []
    for row in rows:
        mine = own.get(str(row.get("matrix")), {})
        expected.append({**mine, **{key: row.get(key) for key in shared if key in row}})
    return {"matrices": expected}
