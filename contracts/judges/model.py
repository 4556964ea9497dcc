"""The judges of the model gates (spec/gates/model.yaml): attention paths, a tiny model that
overfits, and the architecture a config names.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

from contracts.judges.base import (
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    deviations,
    flag,
    has,
    number,
)
from contracts.judges.integ import falsifiers_pass
from contracts.wording import first_few

judges = Judges()


@judges("GATE-MODEL-001", needs=("paths+",))
def _attention_paths(m: Measured, t: Thresholds) -> list[str]:
    problems = deviations(m.get("paths"), "path", t["path_atol"], t["path_rtol"])
    if problems:
        problems.append("is 1/sqrt(head_dim) applied twice, or not at all, somewhere?")
    return problems


@judges(
    "GATE-MODEL-003",
    checks={
        "architecture": ("checked", "forms"),
        "init": ("init+",),
        # the parameters the model holds are those its config implies (contracts.model_parameters)
        "structure": ("parameters_held+", "parameters_named+"),
    },
)
def _architecture(m: Measured, t: Thresholds) -> list[str]:
    """Each form's logits (train and eval mode, plain and packed, decoded through the KV cache)
    within model_atol + model_rtol × the reference's largest magnitude; a model with an option the
    reference does not write out is not compared with it (`checked` false, the options named): its
    forms, when the record has them, are its causality and isolation, logits that must not move
    when other positions' tokens change. And each parameter of a fresh model as its initialisation
    names it (`init`), and every parameter the model holds, with its shape and whether it trains,
    exactly those its config implies (`structure`)."""
    problems = []
    if has(m, "checked") and (flag(m, "checked") or m.get("forms")):
        problems = deviations(m.get("forms"), "form", t["model_atol"], t["model_rtol"])
        if problems and flag(m, "checked"):
            problems.append(
                "the model's logits are not those of the architecture its config names (RoPE, a "
                "residual, a norm's gain, the SwiGLU, the embedding, the head, the KV cache, a "
                "document mask or a LoRA adapter's scale), which stack/model/reference.py writes out"
            )
        elif problems:
            problems.append(
                "logits moved when only later positions' tokens, or another document's, changed: "
                "attention reads what its mask hides"
            )
    if has(m, "init"):
        problems += _initialisation_problems(m["init"], t["init_max_z"])
    if has(m, "parameters_held", "parameters_named"):
        problems += _structure_problems(m["parameters_held"], m["parameters_named"])
    return problems


def _structure_problems(held: Any, named: Any) -> list[str]:
    """The parameters the model holds against those its config implies: by name, then each common
    one's shape and whether it trains (contracts.model_parameters.implied_parameters' form)."""
    if not (isinstance(held, Mapping) and isinstance(named, Mapping)):
        raise Malformed("'parameters_held' and 'parameters_named' must map each parameter to its shape")
    problems = []
    if missing := sorted(set(named) - set(held)):
        problems.append(
            f"the model lacks {len(missing)} parameter(s) its config implies: {first_few(missing, 6)}"
        )
    if extra := sorted(set(held) - set(named)):
        problems.append(f"the model holds {len(extra)} parameter(s) its config lacks: {first_few(extra, 6)}")
    for key in ("shape", "trainable"):
        off = [
            f"{name} {_field(held[name], key)!r} (config: {_field(named[name], key)!r})"
            for name in sorted(set(held) & set(named))
            if _field(held[name], key) != _field(named[name], key)
        ]
        if off:
            problems.append(f"{len(off)} parameter(s) differ in {key}: {first_few(off, 6)}")
    if problems:
        problems.append(
            "the model is not built as its config names (a module never created or one too many, a "
            "head tied or untied, a router on another block, adapters on other matrices than lora.targets)"
        )
    return problems


def _field(entry: Any, key: str) -> Any:
    """One parameter's `shape` or `trainable`, as stated."""
    if not isinstance(entry, Mapping) or key not in entry:
        raise Malformed(f"a parameter's entry {entry!r} has no {key!r}")
    return entry[key]


def _initialisation_problems(tensors: Any, max_z: float) -> list[str]:
    """Each drawn tensor's mean and root mean square within `max_z` standard errors of N(0, σ²)'s
    (σ/√n and σ/√(2n) for n draws); each constant one exactly its named value."""
    if not isinstance(tensors, Mapping):
        raise Malformed("'init' must map each parameter to its named initialisation and what it holds")
    problems = []
    for name, values in sorted(tensors.items()):
        if not isinstance(values, Mapping):
            raise Malformed(f"parameter {name!r} has no values")
        if "named_value" in values:
            diff = number(values, "max_abs_diff")
            if diff != 0:
                problems.append(f"{name} is {diff:.3g} off the constant {number(values, 'named_value'):g}")
            continue
        std, n = number(values, "named_std"), count(values, "elements")
        if std <= 0 or n == 0:
            raise Malformed(f"parameter {name!r}: named std {std} over {n} element(s)")
        mean, rms = number(values, "mean"), number(values, "rms")
        z = max(abs(mean) / (std / math.sqrt(n)), abs(rms - std) / (std / math.sqrt(2 * n)))
        if not z <= max_z:
            problems.append(
                f"{name} holds mean {mean:.3g}, rms {rms:.3g} over {n} element(s), not N(0, {std:.3g}²) "
                f"({z:.1f} standard errors, allowed {max_z:g})"
            )
    if problems:
        problems.append(
            "the model does not start from the initialisation GPT's docstring names (init_weights)"
        )
    return problems


@judges("GATE-MODEL-002", checks={"overfit": ("best_loss", "steps"), "falsifiers": ("falsifiers+",)})
def _tiny_model_overfits(m: Measured, t: Thresholds) -> list[str]:
    problems = falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "best_loss", "steps"):
        loss, steps = number(m, "best_loss"), count(m, "steps")
        if not loss < t["overfit_max_loss"]:
            problems.append(f"the tiny model's best loss {loss:.4g} is not below {t['overfit_max_loss']}")
        if steps > t["overfit_max_steps"]:
            problems.append(f"it took {steps} steps, more than the budget of {t['overfit_max_steps']:g}")
    return problems
