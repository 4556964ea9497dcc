"""Judges of the differential-attention and mixture-of-depths gates (GATE-ARCH-005 … 011, 014).

Each is a pure function of what the start-up probes measured (stack/model/diff_checks.py,
stack/model/mod_checks.py) and the gate's thresholds. The formulas the gates are about (λ_init of
the Diff Transformer, ⌊C·T⌋) are written here again on purpose: the judge recomputes the rule
from the record instead of trusting the number the stack computed with it.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

from contracts.depth_routing import capacity_share, threshold_admits
from contracts.judges import MAIN_CHECK, Malformed, Measured, Thresholds, count, has, judges, number


def _layers(m: Measured, key: str) -> Mapping[str, object]:
    """A non-empty map of layer name → per-layer measurement."""
    value = m.get(key)
    if not isinstance(value, Mapping) or not value:
        raise Malformed(f"{key!r} must map each layer to what was measured there")
    return value


def _within(diff: float, allowed: float, what: str) -> list[str]:
    return [] if diff <= allowed else [f"{what} by {diff:.3g} (allowed {allowed:.3g})"]


@judges("GATE-ARCH-005", needs=("layers+",))
def _lambda_init(m: Measured, t: Thresholds) -> list[str]:
    """λ_init of block l is 0.8 − 0.6 · exp(−0.3 · l); l is the block's index, read from the record."""
    layers = m.get("layers")
    if not isinstance(layers, list) or not layers:
        raise Malformed("'layers' must list each block's index and λ_init")
    problems = []
    for entry in layers:
        if not isinstance(entry, Mapping):
            raise Malformed(f"{entry!r} is not {{index, lambda_init}}")
        index, value = count(entry, "index"), number(entry, "lambda_init")
        expected = 0.8 - 0.6 * math.exp(-0.3 * index)
        if not abs(value - expected) <= t["lambda_init_atol"]:
            problems.append(
                f"block {index} has λ_init {value:.9g}, not 0.8 − 0.6·exp(−0.3·{index}) = {expected:.9g}"
            )
    return problems


@judges("GATE-ARCH-006", "GATE-ARCH-011", needs=("max_abs_diff", "prefix"))
def _future_leak(m: Measured, t: Thresholds) -> list[str]:
    """Logits at or before `prefix` do not move when only later tokens change."""
    diff, prefix = number(m, "max_abs_diff"), count(m, "prefix")
    return _within(diff, t["causal_atol"], f"changing tokens after position {prefix} moved earlier logits")


@judges("GATE-ARCH-007", needs=("max_abs_diff", "ref_absmax"))
def _reduces_to_attention(m: Measured, t: Thresholds) -> list[str]:
    diff, scale = number(m, "max_abs_diff"), number(m, "ref_absmax")
    allowed = t["reduce_atol"] + t["reduce_rtol"] * scale
    return _within(diff, allowed, "with λ = 0 the layer differs from normalised ordinary attention")


def _threshold_problems(m: Measured) -> list[str]:
    """Check inference: per layer, {admitted, tokens, tied} of the training batch that set the
    threshold, held to `threshold_admits` (contracts/depth_routing.py)."""
    capacity = number(m, "capacity")
    problems = []
    for layer, split in _layers(m, "threshold_split").items():
        if not isinstance(split, Mapping):
            raise Malformed(f"{layer}: {split!r} is not a map of admitted, tokens and tied")
        admitted, tokens, tied = count(split, "admitted"), count(split, "tokens"), count(split, "tied")
        if not threshold_admits(capacity, tokens, admitted, tied):
            share = capacity_share(capacity, tokens)
            problems.append(
                f"{layer}'s inference threshold admits {admitted} of the {tokens} scores of the training "
                f"batch that set it ({tied} tied at the split), not ⌊{capacity:g}·{tokens}⌋ = {share}: "
                "evaluation and sampling route another share than mod_capacity"
            )
    return problems


@judges(
    "GATE-ARCH-008",
    checks={
        MAIN_CHECK: ("capacity", "length", "routed+"),
        # rev 3: the inference threshold each block saved splits the batch that set it at capacity
        "inference": ("capacity", "threshold_split+"),
    },
)
def _capacity(m: Measured, t: Thresholds) -> list[str]:
    """Each sequence of each layer routed ⌊capacity · length⌋ tokens, within max_count_error; the
    threshold inference routes by admits ⌊C·N⌋ of the N scores that set it (check inference)."""
    problems = _threshold_problems(m) if has(m, "threshold_split") else []
    if not has(m, "length", "routed"):
        return problems
    capacity, length = number(m, "capacity"), count(m, "length")
    expected = capacity_share(capacity, length)
    for layer, counts in _layers(m, "routed").items():
        if not isinstance(counts, list) or not counts:
            raise Malformed(f"{layer}: {counts!r} is not a list of per-sequence counts")
        for row, n in enumerate(count({"n": c}, "n") for c in counts):
            if not abs(n - expected) <= t["max_count_error"]:
                problems.append(
                    f"{layer} routed {n} tokens of sequence {row}, not ⌊{capacity:g}·{length}⌋ = {expected}"
                )
    return problems


@judges("GATE-ARCH-009", needs=("changed+",))
def _skipped_unchanged(m: Measured, t: Thresholds) -> list[str]:
    """No more than max_changed_skipped skipped tokens differ from their input, per layer and mode."""
    problems = []
    for layer, modes in _layers(m, "changed").items():
        if not isinstance(modes, Mapping) or not modes:
            raise Malformed(f"{layer}: {modes!r} is not a map of routing mode to a count")
        for mode in modes:
            n = count(modes, mode)
            if n > t["max_changed_skipped"]:
                problems.append(f"{layer} changed {n} tokens it skipped ({mode} routing)")
    return problems


@judges("GATE-ARCH-010", needs=("grad_absmax+",))
def _router_gradient(m: Measured, t: Thresholds) -> list[str]:
    """Every router's weight received gradient; with no token routed (⌊C·T⌋ = 0) it cannot, and
    the problem says so rather than blame the weighting (records before 1.7.0 hold no capacity)."""
    routed = None
    if has(m, "capacity", "length"):
        capacity, length = number(m, "capacity"), count(m, "length")
        routed = capacity_share(capacity, length)
    problems = []
    for layer in _layers(m, "grad_absmax"):
        grad = number(m["grad_absmax"], layer)
        if grad > t["min_router_grad"]:
            continue
        if routed == 0:
            problems.append(
                f"{layer}.router received gradient {grad:.3g}: mod_capacity {capacity:g} routes "
                f"⌊{capacity:g}·{length}⌋ = 0 of the probe's {length} tokens, so no token passes through "
                f"the router's weight; raise mod_capacity to at least 1/{length}"
            )
        else:
            problems.append(
                f"{layer}.router received gradient {grad:.3g} (must exceed {t['min_router_grad']:g}): "
                "the router weight does not scale the routed outputs"
            )
    return problems


@judges("GATE-ARCH-014", needs=("capacity", "routed+"))
def _inference_capacity(m: Measured, t: Thresholds) -> list[str]:
    """On held-out text each block routes a fraction of the tokens within capacity_rtol · C of C."""
    capacity = number(m, "capacity")
    problems = []
    for layer, counts in _layers(m, "routed").items():
        if not isinstance(counts, list) or len(counts) != 2:
            raise Malformed(f"{layer}: {counts!r} is not [routed, seen]")
        routed, seen = (count({"n": c}, "n") for c in counts)
        if seen == 0:
            raise Malformed(f"{layer} saw no token")
        fraction = routed / seen
        if not abs(fraction - capacity) <= t["capacity_rtol"] * capacity:
            problems.append(
                f"{layer} routed {fraction:.3g} of {seen} held-out tokens at inference, not about "
                f"mod_capacity {capacity:g} (allowed {capacity * (1 - t['capacity_rtol']):.3g} to "
                f"{capacity * (1 + t['capacity_rtol']):.3g}): its threshold does not split this text "
                "as training split its batches"
            )
    return problems
