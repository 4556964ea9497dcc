"""Gate probes a record states that are pure functions of the spec and its config, run again.

Some gates judge a planted case the run builds for itself rather than its data: GATE-KD-004 the
soft term's gradient at the probe temperature on logits drawn from a fixed seed
(`stack.tune.distill.temperature_probe`), GATE-ARCH-003 a one-expert mixture against the dense
feed-forward and each configured mixture against its written-out reference, drawn in float64 on the
CPU from seed 0 (`stack.model.moe_checks.check_mixtures` of the config's model). Such a number is
decided before the run starts, so the checker runs the same probe and holds the record to it,
a float within GATE-INTEG-001's replay_rtol of itself: another CPU's float64 kernels move the
last bits (an AMD EPYC gives ARCH-003's mixture deviation 3e-9 of itself away from the machine
that filed it), a restatement far more (KD-004's grad_ratio 0.981 restated as 1.0; ARCH-003's
references' largest magnitudes restated, which the tolerance grows with). The probes are the stack's own
functions: a probe is what the gate measured, not a rule the checker restates.

A probe that changed since a record was written is not the record's: KD-004's is held from
KD_PROBE_SINCE, the spec version its draws took today's form; ARCH-003's values are held where the
record states them (its mixtures from the revision that added them). A model config that does not
load is named, never passed.
"""

from __future__ import annotations

import functools
import json
from typing import Any

from pydantic import ValidationError

from contracts.derive.reports import version_key
from contracts.evidence import EvidenceRecord
from contracts.spec import Spec
from stack.model.config import ModelConfig
from stack.model.moe_checks import check_mixtures
from stack.tune.distill import PROBE_THRESHOLDS, temperature_probe
from tools.integrity.models.forward_replays import Tolerances, replay_differences, replay_tolerances

# GATE-KD-004's probe draws as today from this spec version (1.6.0's records state another float path).
KD_PROBE_SINCE = "1.7.0"


def probe_problems(record: EvidenceRecord, spec: Spec) -> list[str]:
    """Each value a re-run probe gives that the record's gate states otherwise (module docstring;
    `spec`: the repository's, whose replay tolerance holds)."""
    tolerances = replay_tolerances(spec)
    measured = {g.id: (g.measured, g.threshold) for g in record.gates if isinstance(g.measured, dict)}
    problems = []
    kd = measured.get("GATE-KD-004")
    if kd is not None and version_key(record.spec.version) >= version_key(KD_PROBE_SINCE):
        thresholds = kd[1] if isinstance(kd[1], dict) else {}
        if all(isinstance(thresholds.get(name), int | float) for name in PROBE_THRESHOLDS):
            probe = _kd_probe(tuple(float(thresholds[name]) for name in PROBE_THRESHOLDS))
            problems += _unequal(
                "GATE-KD-004", kd[0], probe, "stack.tune.distill.temperature_probe()", tolerances
            )
    arch = measured.get("GATE-ARCH-003")
    model = record.config.get("model") if isinstance(record.config, dict) else None
    if arch is not None and "ref_absmax" in arch[0] and isinstance(model, dict):
        try:
            probe = _mixture_probe(json.dumps(model, sort_keys=True))
        except (ValidationError, TypeError, ValueError) as exc:
            return [*problems, f"config.model does not load ({exc}): GATE-ARCH-003's probe is not run again"]
        how = "stack.model.moe_checks.check_mixtures(config.model)"
        problems += _unequal("GATE-ARCH-003", arch[0], probe, how, tolerances)
    return problems


@functools.cache
def _kd_probe(thresholds: tuple[float, float]) -> dict[str, Any]:
    return temperature_probe(dict(zip(PROBE_THRESHOLDS, thresholds, strict=True)))


@functools.cache
def _mixture_probe(model: str) -> dict[str, Any]:
    return check_mixtures(ModelConfig(**json.loads(model)), seed=0)


def _unequal(
    gate: str, stated: dict[str, Any], probe: dict[str, Any], how: str, tolerances: Tolerances
) -> list[str]:
    """Each value under a key of the probe's result the gate states otherwise (a float beyond the
    replay's tolerance), or states where the probe gives none, with the probe named."""
    found = []
    for key, value in probe.items():
        if key in stated:
            where = f"gates[{gate}].measured.{key}"
            found += replay_differences(stated[key], value, where, tolerances)
            found += _unprobed(stated[key], value, where)
    return [f"{problem} ({how}): the probe is decided before the run" for problem in found]


def _unprobed(stated: Any, probe: Any, where: str) -> list[str]:
    """Each key a stated table holds that the probe's table at the same place lacks: a value no
    probe gave (a mixture the run never checked, stated beside those it did)."""
    if not isinstance(stated, dict) or not isinstance(probe, dict):
        return []
    found = []
    for key, value in stated.items():
        if key in probe:
            found += _unprobed(value, probe[key], f"{where}.{key}")
        else:
            found.append(f"{where}.{key} is stated, but the probe gives no such value")
    return found
