"""The judges of the LoRA gates (spec/gates/lora.yaml): adapters against the base they adapt."""

from __future__ import annotations

import re

from contracts.judges.base import (
    MAIN_CHECK,
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    flag,
    has,
    items,
    number,
)
from contracts.judges.export import tensors_within
from contracts.lora_scale import lora_scale
from contracts.peft_config import field_problems
from contracts.wording import first_few

judges = Judges()


def _names(m: Measured, key: str) -> list[str]:
    return [str(name) for name in items(m, key)]


def _some_adapters(m: Measured) -> list[str]:
    """A record over no adapter has shown nothing: the gate holds of something, or fails."""
    return [] if count(m, "adapters") else ["no LoRA adapter was checked"]


@judges("GATE-LORA-001", needs=("adapters", "differing_elements", "elements"))
def _identity_at_init(m: Measured, t: Thresholds) -> list[str]:
    problems = _some_adapters(m)
    differing, elements = count(m, "differing_elements"), count(m, "elements")
    if differing:
        problems.append(
            f"{differing} of {elements} logit(s) of the model with fresh adapters differ from the base's"
        )
    return problems


@judges("GATE-LORA-002", needs=("adapters", "max_abs_diff", "max_abs_logit", "mismatched_elements"))
def _merge_parity(m: Measured, t: Thresholds) -> list[str]:
    problems = _some_adapters(m)
    diff, scale = number(m, "max_abs_diff"), number(m, "max_abs_logit")
    allowed = t["logits_atol"] + t["logits_rtol"] * scale
    if not diff <= allowed:
        problems.append(
            f"merged logits differ from unmerged ones by up to {diff:.3g} (allowed {allowed:.3g})"
        )
    mismatched = m.get("mismatched_elements")
    if not isinstance(mismatched, dict):
        raise Malformed(f"'mismatched_elements' is {mismatched!r}, not a map of adapter to a count")
    # Per adapter, the elements of the merged weight that are not W_base + Δ rounded once.
    wrong = sorted(f"{name} ({n} elements)" for name, n in mismatched.items() if n != 0)
    if wrong:
        problems.append(f"the merged weight is not the base plus the delta once in: {', '.join(wrong)}")
    return problems


@judges("GATE-LORA-003", needs=("adapters", "differing"))
def _unmerge_restores(m: Measured, t: Thresholds) -> list[str]:
    problems = _some_adapters(m)
    differing = _names(m, "differing")
    if differing:
        problems.append(f"after unmerge the weight is not the base's (sha256) in: {', '.join(differing)}")
    return problems


# An adapter inside a routed expert (`layers.3.moe.expert1.up`): routing may give it no token.
_EXPERT = re.compile(r"(^|\.)moe\.expert\d+\.")


@judges("GATE-LORA-004", needs=("adapters", "base_moved", "zero_b", "trainable_base"))
def _adapters_trained(m: Measured, t: Thresholds) -> list[str]:
    """Every adapter trained, but one inside an expert that no token reached (`unfed`): a router's
    choice, not a lost gradient. Any other adapter must have trained, fed or not (records before
    1.7.0 hold no `unfed`)."""
    problems = _some_adapters(m)
    moved, zero, trainable = _names(m, "base_moved"), _names(m, "zero_b"), _names(m, "trainable_base")
    unfed = set(_names(m, "unfed")) if "unfed" in m else set()
    if moved:
        problems.append(f"the base weight moved during training in: {', '.join(moved)}")
    if trainable:
        problems.append(f"base tensor(s) left trainable: {', '.join(trainable)}")
    untrained = [name for name in zero if not (name in unfed and _EXPERT.search(name))]
    if untrained:
        problems.append(f"adapter(s) never trained (B is still zero): {', '.join(untrained)}")
    return problems


@judges(
    "GATE-LORA-005",
    checks={
        MAIN_CHECK: ("missing", "unexpected", "mismatched"),
        # each wrapper's rank and scale against contracts.lora_scale of the stated settings
        "scale": ("settings_stated", "wrapper_scales"),
    },
)
def _strict_load(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    for key, what in (
        ("missing", "the adapter file lacks"),
        ("unexpected", "the model has no adapter for"),
        ("mismatched", "shapes differ for"),
    ):
        names = _names(m, key)
        if names:
            problems.append(f"{what} {', '.join(names)}")
    recorded, base = str(m.get("adapter_base_sha256")), str(m.get("base_sha256"))
    if recorded != base:
        problems.append(f"the adapter belongs to base {recorded[:12]}…, not to this base {base[:12]}…")
    if "wrapper_scales" in m:
        problems += _scale_problems(m)
    return problems


def _scale_problems(m: Measured) -> list[str]:
    """Wrappers whose rank or scale is not what the adapter's stated r, alpha and rslora give."""
    stated = m.get("settings_stated")
    scales = m.get("wrapper_scales")
    if not isinstance(stated, dict) or not isinstance(scales, dict):
        raise Malformed("settings_stated and wrapper_scales must be tables")
    r, alpha, rslora = int(stated["r"]), float(stated["alpha"]), bool(stated["rslora"])
    wanted = lora_scale(r, alpha, rslora)
    wrong = sorted(name for name, (rank, scale) in scales.items() if int(rank) != r or float(scale) != wanted)
    if not wrong:
        return []
    rank, scale = scales[wrong[0]]
    return [
        f"{len(wrong)} adapter wrapper(s) compute another function than the adapter states "
        f"(r {r}, alpha {alpha:g}, rslora {rslora}: scale {wanted:.6g}); {first_few(wrong, 3)} run at "
        f"rank {rank}, scale {float(scale):.6g}"
    ]


@judges("GATE-LORA-006", needs=("embed_changed",))
def _embedding_kept(m: Measured, t: Thresholds) -> list[str]:
    problems = ["the merge changed the input embedding"] if flag(m, "embed_changed") else []
    if flag(m, "tied") and not flag(m, "head_is_embed"):
        problems.append("lm_head is no longer the tied embedding's tensor")
    return problems


@judges(
    "GATE-LORA-007",
    checks={
        MAIN_CHECK: ("adapters", "not_loaded", "max_abs_diff", "finite"),
        # adapter_config.json as written, against the run's recorded [lora] section and the
        # modules its target_modules select (contracts.peft_config), against those the file adapts
        "config": ("config_written", "config_recorded", "modules_targeted", "modules_adapted"),
        # the largest difference recomputed from the two logits tensors (contracts.logits_parity)
        "tensors": ("max_abs_diff", "max_abs_diff_tensors"),
    },
)
def _peft_parity(m: Measured, t: Thresholds) -> list[str]:
    problems = _config_problems(m) if has(m, *judges.checks["GATE-LORA-007"]["config"]) else []
    if has(m, *judges.checks["GATE-LORA-007"]["tensors"]):
        problems += tensors_within(m, "", t["logits_atol"], "peft's")
    if not has(m, *judges.checks["GATE-LORA-007"][MAIN_CHECK]):
        return problems
    problems += _some_adapters(m)
    unloaded = _names(m, "not_loaded")
    if unloaded:
        problems.append(f"peft loaded no tensor for: {', '.join(unloaded)}")
    diff, finite = number(m, "max_abs_diff"), flag(m, "finite")
    if not (finite and diff <= t["logits_atol"]):
        problems.append(
            f"peft's logits differ from the stack's by up to {diff:.3g} (atol {t['logits_atol']}; "
            f"finite: {finite})"
        )
    return problems


def _config_problems(m: Measured) -> list[str]:
    """GATE-LORA-007's check config: every field peft reads from adapter_config.json is the one the
    run's [lora] section gives (contracts.peft_config.field_problems), and the modules its
    target_modules select by peft's rule are exactly those the adapter file holds tensors for."""
    written, recorded = m.get("config_written"), m.get("config_recorded")
    if not (isinstance(written, dict) and isinstance(recorded, dict)):
        raise Malformed("'config_written' and 'config_recorded' must be objects of field → value")
    problems = [f"adapter_config.json: {p}" for p in field_problems(written, recorded)]
    targeted, adapted = sorted(_names(m, "modules_targeted")), sorted(_names(m, "modules_adapted"))
    if targeted != adapted:
        problems.append(
            f"adapter_config.json's target_modules select {len(targeted)} modules of the base by peft's "
            f"rule, but the adapter file holds tensors for {len(adapted)} (selected, not adapted: "
            f"{sorted(set(targeted) - set(adapted))[:3]}; adapted, not selected: "
            f"{sorted(set(adapted) - set(targeted))[:3]})"
        )
    return problems
