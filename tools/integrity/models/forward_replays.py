"""Numbers a record states that a forward or two of a committed model decide, run again on the CPU.

Some records keep only summaries of tensors they never wrote: a quantisation's GATE-HQQ-002 the
mean and largest KL(original ‖ quantised) over the built-in sample, an ablation's trace.json the
comparison of its intact and ablated logits (failing elements, cosine, SQNR, errors) and the effect
numbers of the same two forwards. A forger who restated one of them in the record and its report
alike (HQQ-002's max_kl_nats 0.0487 as 0.01; an ablation's logits.failing and logits.cosine)
left nothing the artifacts contradict. Where the
model is committed, the checker makes those forwards again with the stack's own functions, the
ones that wrote the numbers (`stack.cli.quantize.operate` for the quantisation,
`stack.trace.modes.ablation` for the ablation: tools/integrity/models/trace_tokens.py), and holds the record
to them: integers, strings and flags equal, every float within a tolerance that a forward summed in
another order stays inside (GATE-INTEG-001's replay_rtol, and replay_ratio_rtol for a ratio to an
intact logit: the spec says why those numbers).

The quantisations are held from HQQ_REPLAY_SINCE (each value of the agreement its gate's revision
states), the ablations from ABLATION_REPLAY_SINCE (every value the replay gives): a record of
another form is not today's code's to replay. Where a quantisation the replay covers cannot be
replayed (its source model is not committed, the replay refuses), a warning names it; an ablation
whose committed checkpoint refuses its replay, or whose trace.json lacks a value the replay gives,
is a violation. Each replay is made once per process for each model and request: the ledger's
quantisations and ablations each ask one (about 4 s of CPU for the whole ledger here).
"""

from __future__ import annotations

import argparse
import contextlib
import copy
import dataclasses
import io
import math
from pathlib import Path
from typing import Any

from contracts.derive.reports import PER_ITEM_SINCE, version_key
from contracts.errors import GateViolation
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.spec import Spec
from stack.cli.quantize import operate
from tools.integrity.models.committed_models import UNREADABLE, ReadModel, committed_directory, read_model

INTEG_GATE = "GATE-INTEG-001"
# The ratios to an intact logit, held to replay_ratio_rtol (an ablation's rel_error and min_rtol).
RATIO_KEYS = frozenset({"rel_error", "min_rtol"})
# The spec versions from which a record is held to its replay: a quantisation's from the version
# whose surgery.json carries the per-gate results (contracts.derive.reports.PER_ITEM_SINCE), an
# ablation's from the oldest the ledger keeps (1.28.0): no older form was checked against it.
HQQ_REPLAY_SINCE = PER_ITEM_SINCE
ABLATION_REPLAY_SINCE = "1.28.0"
HQQ_GATE = "GATE-HQQ-002"
# The settings of a quantisation a replay is made of (config keys of `stack quantize`'s record).
HQQ_SETTINGS = ("targets", "layers", "bits", "group_size", "sample_text")
# What the forwards of the agreement decide (the weights' digest is the quantiser's bits, not theirs).
AGREEMENT_REPLAYED = ("mean_kl_nats", "max_kl_nats", "mean_kl_recomputed", "positions")
# Where a replay refuses: the stack's own refusals, and a gate the replayed run would have halted on.
REFUSED = (*UNREADABLE, GateViolation)
MISSING = object()  # a key or item a stated table or list lacks


@dataclasses.dataclass(frozen=True)
class Tolerances:
    """How far a replayed float may lie from the record's, as a fraction of itself: `value` for
    any float, `ratio` under RATIO_KEYS (GATE-INTEG-001's replay_rtol and replay_ratio_rtol)."""

    value: float
    ratio: float


def replay_tolerances(spec: Spec) -> Tolerances:
    """The replay's tolerances, from the spec of the repository checked."""
    value, ratio = (float(spec.threshold(INTEG_GATE, name)) for name in ("replay_rtol", "replay_ratio_rtol"))
    return Tolerances(value, ratio)


def replay_differences(
    stated: Any, replayed: Any, where: str, tolerances: Tolerances, rtol: float | None = None
) -> list[str]:
    """Each leaf of `replayed` (JSON-like: tables, lists, numbers, strings, None) that `stated`
    gives otherwise, named by its path under `where`: a float by more than `rtol` of itself
    (tolerances.value, or tolerances.ratio under a key of RATIO_KEYS), anything else unequal (a
    bool is not a number); a key or item `stated` lacks differs."""
    rtol = tolerances.value if rtol is None else rtol
    if isinstance(replayed, dict) and isinstance(stated, dict):
        return [
            found
            for key, value in replayed.items()
            for found in replay_differences(
                stated.get(key, MISSING),
                value,
                f"{where}.{key}",
                tolerances,
                tolerances.ratio if key in RATIO_KEYS else rtol,
            )
        ]
    if isinstance(replayed, list) and isinstance(stated, list) and len(stated) == len(replayed):
        return [
            found
            for i, (given, value) in enumerate(zip(stated, replayed, strict=True))
            for found in replay_differences(given, value, f"{where}[{i}]", tolerances, rtol)
        ]
    if _agrees(stated, replayed, rtol):
        return []
    said = "missing" if stated is MISSING else repr(stated)
    return [f"{where} is {said}, but the replay gives {replayed!r}"]


def _agrees(stated: Any, replayed: Any, rtol: float) -> bool:
    """One leaf: floats within `rtol`, any other value equal and of the same type."""
    if isinstance(replayed, float) and isinstance(stated, int | float) and not isinstance(stated, bool):
        return math.isclose(stated, replayed, rel_tol=rtol, abs_tol=0.0)
    return type(stated) is type(replayed) and stated == replayed


_AGREEMENTS: dict[tuple[Any, ...], dict[str, Any]] = {}


def _agreement(model: ReadModel, settings: tuple[Any, ...], argv: list[str]) -> dict[str, Any]:
    """What `stack quantize` measured of the committed model with `settings` (HQQ_SETTINGS' values),
    by its own `operate` on a copy of the model (its progress lines kept off the checker's output),
    once per process for each model and settings: the command line only feeds the replay's own
    GATE-LASER-003 check, never its numbers, so it is no part of the key."""
    key = (model, settings)
    if key not in _AGREEMENTS:
        args = argparse.Namespace(**dict(zip(HQQ_SETTINGS, settings, strict=True)), argv=argv)
        trained = dataclasses.replace(model.trained, model=copy.deepcopy(model.trained.model))
        with contextlib.redirect_stderr(io.StringIO()):
            _AGREEMENTS[key] = operate(args, trained).measured
    return _AGREEMENTS[key]


def hqq_replay_findings(
    record: EvidenceRecord, spec: Spec, root: Path = REPO_ROOT
) -> tuple[list[str], list[str]]:
    """A quantisation's GATE-HQQ-002 values the forwards decide, and its metrics.agreement, against
    the quantisation of its committed source made again (module doc); violations and warnings."""
    measured = next((g.measured for g in record.gates if g.id == HQQ_GATE), None)
    since = version_key(record.spec.version) >= version_key(HQQ_REPLAY_SINCE)
    if record.run.kind != "quantize" or not since or not isinstance(measured, dict):
        return [], []
    config = record.config if isinstance(record.config, dict) else {}
    directory = committed_directory(record, config.get("source"), root)
    if directory is None:
        source = config.get("source")
        return [], [f"{HQQ_GATE}'s KL is not replayed: its source {source!r} is no committed model here"]
    try:
        replayed = _agreement(
            read_model(directory), tuple(config.get(k) for k in HQQ_SETTINGS), list(record.run.argv or [])
        )
    except REFUSED as exc:
        return [], [f"{HQQ_GATE}'s KL is not replayed: the quantisation of {directory.name} refuses ({exc})"]
    metrics = record.metrics if isinstance(record.metrics, dict) else {}
    if replayed["sample"] != metrics.get("sample"):
        return [], [
            f"{HQQ_GATE}'s KL is not replayed: its metrics.sample is {metrics.get('sample')!r}, but the "
            f"replay compares on {replayed['sample']!r}"
        ]
    how = f"(`stack quantize` of {config.get('source')} again, two CPU forwards over its sample)"
    blocks = {f"gates[{HQQ_GATE}].measured": measured, "metrics.agreement": metrics.get("agreement")}
    problems = [
        problem
        for where, stated in blocks.items()
        if isinstance(stated, dict)
        # each value the record's revision states (mean_kl_recomputed came with GATE-HQQ-002 rev 3)
        for problem in replay_differences(
            stated,
            {key: replayed["agreement"][key] for key in AGREEMENT_REPLAYED if key in stated},
            where,
            replay_tolerances(spec),
        )
    ]
    return [f"{problem} {how}" for problem in problems], []
