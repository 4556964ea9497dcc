"""Judge of GATE-ARCH-012: a mixture of experts whose router collapsed.

Imported at the end of contracts.judges, which registers it. GATE-ARCH-002 warns when a share
leaves a mild band around uniform; this gate fails a run whose routing has collapsed: an expert
that takes (nearly) every token, or receives nothing or (nearly) nothing, for several evaluations
in a row. A collapse is a state the router stays in: one window of a router a few steps old is a
snapshot of its initialisation (a small model's similar tokens can all skip one expert), so every
finding needs the last collapse_evaluations windows. Pure: the windows' counts, top-k and the
balance coefficient are measured.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from contracts.judges import (
    Malformed,
    Measured,
    Thresholds,
    count,
    has,
    items,
    judges,
    number,
    routed_total_problems,
)


def _window(window: Any) -> dict[str, list[int]]:
    """One evaluation window's counts: MoE layer → per-expert assignments."""
    if not isinstance(window, Mapping) or not window:
        raise Malformed(f"a window is {window!r}, not a map of MoE layers to per-expert counts")
    layers = {}
    for layer, counts in window.items():
        if not isinstance(counts, list) or not counts:
            raise Malformed(f"{layer}: {counts!r} is not a list of counts")
        layers[str(layer)] = [count({"n": c}, "n") for c in counts]
    return layers


def _fix(balance_coef: float) -> str:
    """What to change, said once at the end of the message."""
    if balance_coef <= 0:
        return (
            "the load-balancing loss is off (model.moe_balance_coef=0): set it (0.01 is usual) and train "
            "again from a checkpoint before the collapse"
        )
    return (
        f"raise model.moe_balance_coef above {balance_coef:g} or lower train.lr, and train again from a "
        "checkpoint before the collapse"
    )


@judges(
    "GATE-ARCH-012",
    checks={
        "collapse": ("windows+", "top_k", "balance_coef"),
        # rev 2: the latest window's assignments are every token each MoE layer received × top_k
        "total": ("windows+", "routed_tokens+", "top_k"),
    },
)
def _router_collapse(m: Measured, t: Thresholds) -> list[str]:
    windows = [_window(w) for w in items(m, "windows")]
    if not windows:
        raise Malformed("'windows' holds no evaluation window")
    total = routed_total_problems(windows[-1], m) if has(m, "routed_tokens") else []
    return total + (_collapsed(windows, m, t) if has(m, "balance_coef") else [])


def _collapsed(windows: list[dict[str, list[int]]], m: Measured, t: Thresholds) -> list[str]:
    """Check `collapse`: a takeover, a starvation or an empty expert over the last windows."""
    top_k, coef = count(m, "top_k"), number(m, "balance_coef")
    if not top_k:
        raise Malformed("'top_k' is 0")
    latest, need = windows[-1], int(t["collapse_evaluations"])
    recent = windows[-need:] if len(windows) >= need else []
    problems = []
    for layer, counts in latest.items():
        if not sum(counts):
            problems.append(f"{layer}: no token was routed in the window")
            continue
        history = [w[layer] for w in recent if len(w.get(layer, [])) == len(counts) and sum(w[layer])]
        if not recent or len(history) < len(recent):  # too few windows, or one routed nothing
            continue
        for e in range(len(counts)):
            token_shares = [h[e] * top_k / sum(h) for h in history]
            ratios = [h[e] * len(h) / sum(h) for h in history]
            if all(s > t["max_token_share"] for s in token_shares):
                problems.append(
                    f"{layer}.expert{e} was routed {min(token_shares):.3g} or more of the tokens in each of "
                    f"the last {need} windows (allowed {t['max_token_share']:g})"
                )
            if not any(h[e] for h in history):
                problems.append(f"{layer}.expert{e} received no token in each of the last {need} windows")
            elif all(r < t["starved_share_ratio"] for r in ratios):
                problems.append(
                    f"{layer}.expert{e} received at most {max(ratios):.3g} × its uniform share in each of "
                    f"the last {need} windows (a starved expert is below {t['starved_share_ratio']:g})"
                )
    if problems:
        problems.append(f"the router collapsed; {_fix(coef)}")
    return problems
