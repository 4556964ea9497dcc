"""The record of `stack lens-train` from the trace.json it cites, the manifest of the data the lens
was fitted on, and the epoch plan it read, held as a training record's plan is."""

from __future__ import annotations

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.restated import measured_of, whole
from contracts.derive.settling import Settler
from contracts.derive.trace import trace_record
from contracts.derive.training import epoch_length_problems, plan_windows
from contracts.gate_counts import heldout_windows

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# A lens fitted on a DATA_DIR cites that data's manifest (data.manifest_sha256) from spec 1.28.0.
LENS_DATA_SINCE = "1.28.0"


@derives("lens-train")
def lens_train_record(inputs: Inputs) -> Derivation:
    """A lens-train record's trace.json and gates (`trace_record`); the manifest of the data it was
    fitted on, cited as a training record cites its own (the ledger's check then holds its
    GATE-DATA-001 quota windows to that manifest, tools/lineage.py); and its epoch plan's windows,
    restated by GATE-DATA-002 as a training record's are (`plan_windows`), and its steps per epoch
    held to that plan's windows over its batch (`epoch_length_problems`)."""
    derived = trace_record(inputs)
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    batches, size = config.get("heldout_batches"), config.get("batch_size")
    windows = measured_of(inputs.record, "GATE-DATA-005")
    if "GATE-DATA-005" not in inputs.stale and whole(batches, size):
        for key in ("heldout_windows", "set_windows", "read_windows"):  # each count the record states
            if key in windows:
                derived.put(("gates", "GATE-DATA-005", "measured", key), heldout_windows(batches, size))
    if inputs.record.data is None or not inputs.record.data.manifest_sha256:
        derived.missing.append(("data.manifest_sha256 (the manifest of its --data)", LENS_DATA_SINCE))
    plan_windows(inputs, Settler(inputs, derived))
    derived.problems += epoch_length_problems(inputs, (inputs.record.config or {}).get("batch_size"))
    return derived
