"""A record is a cache of a derivation: its numbers, recomputed from the artifacts it cites.

For every run kind that leaves raw results beside its record (a training run's metrics log, an
evaluation matrix's per-item scores, a surgery's per-matrix results, a falsify run's per-test
outcomes, ...), `derive(kind, inputs)` computes the record's summary fields, its metrics block
and the measured values of the gates those results decide. A run fills its record from the
same function where it can (`stack train` does at the end of a run), and
`tools/check_integrity.py` calls it again on every record it reads and reports each field that
differs: the file, the field, what the record says and what its artifacts say.

The derivations live by record kind, one module each (contracts/derive/training.py for the
training loop's kinds, evalmatrix.py, prepare.py, trace.py, ...), on what they share in
contracts/derive/base.py (the artifacts, the derivation, the comparison) and reports.py (what the
command records share). This module is the registry: it imports every kind's module and gathers
their tables into `DERIVERS`. No kind's module imports it, so the imports run one way: registry →
kinds → shared.

A derivation is a pure function of what it is given: the artifacts the record cites (read only
through `Artifacts`, which knows just those files), the record's own inputs (its config, its
waivers) and the spec. It reads no clock, runs no model and imports nothing from the stack.
Fields it cannot derive (a count no artifact holds) are left out, never guessed; new keys in an
artifact (a metric another part of the stack starts logging) are ignored, not refused.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from contracts.derive import (
    benchmarks,
    es,
    eval,
    evalmatrix,
    export,
    gpu_check,
    lens_train,
    memorization,
    options_matrix,
    prepare,
    sample,
    surgery,
    synth,
    trace,
    training,
)
from contracts.derive.base import (
    Artifacts,
    Derivation,
    Deriver,
    Difference,
    Inputs,
    differences,
    field_name,
    recorded,
)
from contracts.derive.restated import OPTIONS_WRITTEN_OUT_SINCE
from contracts.derive.training import LOOP_KINDS
from contracts.evidence import EvidenceRecord, canonical_sha256, stamped_at
from contracts.gate_counts import least_max_gap
from contracts.model_shape import routed_blocks

__all__ = [
    "DERIVERS",
    "Artifacts",
    "Derivation",
    "Difference",
    "Inputs",
    "derive",
    "differences",
    "field_name",
    "recorded",
]

# Run kinds whose config_sha256 is compared with their config only from a spec version on: before
# 1.7.0 `stack synth` hashed its config and then added its counts to it.
CONFIG_DIGEST_SINCE = {"synth": "1.7.0"}


# How long after the second its id names a record with a stamped id (`contracts.evidence.run_id`)
# may say it started: the id is stamped first, then the ledger is claimed and the spec loaded before
# the record reads the clock (stack.eval.evidence, stack.trace.record); seconds, never a minute.
STAMP_SLACK = timedelta(seconds=60)


def _gathered() -> dict[str, Deriver]:
    """Every kind's derivation in one table; a kind two modules derive is refused."""
    table: dict[str, Deriver] = {}
    for module in (
        benchmarks,
        es,
        eval,
        evalmatrix,
        export,
        gpu_check,
        lens_train,
        memorization,
        options_matrix,
        prepare,
        sample,
        surgery,
        synth,
        trace,
        training,
    ):
        for kind, deriver in module.DERIVERS.items():
            if kind in table:
                raise ValueError(f"records of kind {kind} are derived twice (the second: {module.__name__})")
            table[kind] = deriver
    return table


DERIVERS = _gathered()


def derive(kind: str, inputs: Inputs) -> Derivation:
    """Everything the artifacts of a record of `kind` say about its fields, and, for every kind,
    the digest of its config (`config_sha256` is the canonical sha256 of the config it states, or
    of the config file it cites)."""
    deriver = DERIVERS.get(kind)
    derivation = Derivation() if deriver is None else deriver(inputs)
    if kind not in LOOP_KINDS:  # a training run's id is its run directory's name, not a stamp
        derivation.problems += stamp_problems(inputs.record)
    derivation.problems += spread_problems(inputs.record)
    derivation.problems += shared_reference_problems(inputs.record)
    _architecture_written_out(inputs, derivation)
    if inputs.record.config_sha256 is not None or inputs.artifacts.has("config.toml"):
        config = derivation.fields.get(("config",), inputs.record.config)
        since = CONFIG_DIGEST_SINCE.get(kind)
        derivation.put(("config_sha256",), canonical_sha256(config), since=since)
    return derivation


def spread_problems(record: EvidenceRecord) -> list[str]:
    """GATE-DATA-005's max_gap, where the record states it, is no smaller than its held-out windows'
    first and last ids allow (contracts.gate_counts.least_max_gap): a more even spread than n ids can
    make over that span is a restated one."""
    measured = next((g.measured for g in record.gates if g.id == "GATE-DATA-005"), None)
    if not isinstance(measured, dict):
        return []
    first, last, gap, n = (measured.get(k) for k in ("first_id", "last_id", "max_gap", "heldout_windows"))
    if not all(isinstance(v, int) and not isinstance(v, bool) for v in (first, last, gap, n)) or n < 2:
        return []
    least = least_max_gap(first, last, n)
    if gap >= least:
        return []
    return [
        f"gates[GATE-DATA-005].measured.max_gap is {gap}, but {n} held-out window ids from {first} to "
        f"{last} leave a gap of at least {least}"
    ]


def stamp_problems(record: EvidenceRecord) -> list[str]:
    """A record whose id names the second it was stamped in started then, or within STAMP_SLACK."""
    stamp = stamped_at(record.run.id)
    started = record.run.started
    if stamp is None or stamp <= started < stamp + STAMP_SLACK:
        return []
    return [
        f"run.started is {started.isoformat()}, but its id {record.run.id} was stamped at "
        f"{stamp.isoformat()}: a run starts when its id is stamped"
    ]


def _architecture_written_out(inputs: Inputs, derivation: Derivation) -> None:
    """GATE-MODEL-003 compares every model with stack/model/reference.py's writing out of it from
    revision OPTIONS_WRITTEN_OUT_SINCE on, whatever its options and whichever command judged it:
    at such a revision `checked` is true and no option was skipped. A record of any kind (an
    evaluation, an export, a sample, as well as a training run) that states otherwise would tell
    the judge the forms were not compared with the architecture."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-MODEL-003"), None)
    if result is None or result.revision < OPTIONS_WRITTEN_OUT_SINCE or result.id in inputs.stale:
        return
    measured = result.measured if isinstance(result.measured, dict) else {}
    for key, value in (("checked", True), ("skipped_options", [])):
        if key in measured:
            derivation.put(("gates", result.id, "measured", key), value, optional=True)


# GATE-MODEL-003's forms compared with the packed-document reference are named "<mode> packed"; the
# others (train, eval, cached) with the plain one (stack.model.checks.check_architecture). The
# cached form decodes in evaluation mode.
PACKED_FORM = " packed"
CACHED_FORM, EVAL_MODE = "cached", "eval"


def _reference_of(form: str, by_mode: bool) -> tuple[bool, str]:
    """Which of check_architecture's references a form is compared with: the packed or the plain
    one, and, where the references of the two modes may differ, its mode's."""
    packed = form.endswith(PACKED_FORM)
    mode = form.removesuffix(PACKED_FORM)
    return packed, (EVAL_MODE if mode == CACHED_FORM else mode) if by_mode else ""


def shared_reference_problems(record: EvidenceRecord) -> list[str]:
    """GATE-MODEL-003 compares the forms of a checked architecture with float64 references of the
    same probe weights and tokens (the packed forms with one of the same tokens in documents), so
    the forms of one reference state one ref_absmax, its largest magnitude: a form's scale, which
    its tolerance grows with, is not the form's to state (the cached form's ref_absmax restated
    4.336 → 5.0 beside train's and eval's 4.336). Each mode has a reference of its own, and they
    are one only in a model without depth-routed blocks (one of those routes each sequence's top-k
    in training and by a threshold in evaluation, so the probe's largest logit may differ): the
    modes are held to one number where the record's config says the model has none, and each mode
    to its own elsewhere (a model with routed blocks, or one the record does not describe)."""
    result = next((g for g in record.gates if g.id == "GATE-MODEL-003"), None)
    measured = result.measured if result is not None and isinstance(result.measured, dict) else {}
    forms = measured.get("forms")
    if measured.get("checked") is not True or not isinstance(forms, dict):
        return []
    model = record.config.get("model") if isinstance(record.config, dict) else None
    try:
        by_mode = not isinstance(model, dict) or bool(routed_blocks(model))
    except (KeyError, TypeError, ValueError):
        by_mode = True
    scales: dict[tuple[bool, str], dict[str, Any]] = {}
    for name, values in forms.items():
        scale = values.get("ref_absmax") if isinstance(values, dict) else None
        scales.setdefault(_reference_of(str(name), by_mode), {})[name] = scale
    return [
        f"gates[GATE-MODEL-003].measured.forms state ref_absmax {stated}, but those forms are compared "
        "with one reference, whose largest magnitude is one number"
        for stated in scales.values()
        if len({repr(v) for v in stated.values()}) > 1
    ]
