"""The judges of the architecture options' gates (spec/gates/arch.yaml): mixture of experts,
differential attention, mixture-of-depths, the router's collapse and the options matrix.

Each is a pure function of what the start-up probes, the training loop or `stack options-matrix`
measured and the gate's thresholds. The formulas the gates are about (λ_init of the Diff
Transformer, ⌊C·T⌋) are written here again on purpose: the judge recomputes the rule from the
record instead of trusting the number the stack computed with it.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from contracts.depth_routing import capacity_share, threshold_admits
from contracts.judges.base import (
    MAIN_CHECK,
    Judges,
    Malformed,
    Measured,
    Thresholds,
    count,
    deviations,
    has,
    items,
    number,
)
from contracts.wording import first_few

judges = Judges()


@judges("GATE-ARCH-001", needs=("objective", "ce", "terms+"))
def _aux_in_loss(m: Measured, t: Thresholds) -> list[str]:
    """The back-propagated loss must be the cross-entropy plus each term (coefficient > 0) weighted
    by its configured coefficient; where the record holds them, each term's value must be the one
    its definition gives from the router logits, and the derivative the backward took of each term
    must be that coefficient."""
    objective, ce, terms = number(m, "objective"), number(m, "ce"), m.get("terms")
    if not isinstance(terms, Mapping) or not terms:
        raise Malformed("'terms' must map each auxiliary loss to its coefficient and value")
    expected, added, problems = ce, [], []
    for name, term in terms.items():
        if not isinstance(term, Mapping):
            raise Malformed(f"term {name!r} is {term!r}, not {{coefficient, value}}")
        coefficient, value = number(term, "coefficient"), number(term, "value")
        if coefficient > 0:
            expected += coefficient * value
            added.append(f"{coefficient:g} × {name} {value:.4g}")
        if term.get("defined") is not None:
            defined = number(term, "defined")
            if not abs(value - defined) <= t["definition_tol"] * max(1.0, abs(defined)):
                problems.append(
                    f"{name} is {value:.6g}, but its definition gives {defined:.6g} from the router "
                    f"logits (tol {t['definition_tol']:g}): the term trained on is not the one defined"
                )
        if term.get("derivative") is not None:
            derivative = number(term, "derivative")
            if not abs(derivative - coefficient) <= t["derivative_rtol"] * coefficient:
                problems.append(
                    f"the backward weighted {name} by {derivative:.6g}, not its configured coefficient "
                    f"{coefficient:g} (rtol {t['derivative_rtol']:g})"
                )
    allowed = t["objective_atol"] + t["objective_rtol"] * abs(expected)
    if not abs(objective - expected) <= allowed:
        problems.insert(
            0,
            f"the step back-propagated {objective:.6g}, not cross-entropy {ce:.6g} + "
            f"{' + '.join(added) or 'nothing'} = {expected:.6g} (allowed {allowed:.3g}): "
            "an auxiliary loss was computed but not trained on, or weighted otherwise than configured",
        )
    return problems


@judges(
    "GATE-ARCH-002",
    checks={
        "shares": ("routed+",),
        # the window's assignments are every token each MoE layer received × top_k
        "total": ("routed+", "routed_tokens+", "top_k"),
    },
)
def _expert_shares(m: Measured, t: Thresholds) -> list[str]:
    """Each expert's share of assignments within [min, max] × 1/E, per MoE layer (`shares`), and
    the window's assignments per layer exactly the tokens it received × top_k (`total`)."""
    routed = m.get("routed")
    if not isinstance(routed, Mapping) or not routed:
        raise Malformed("'routed' must map each MoE layer to its per-expert counts")
    problems = routed_total_problems(routed, m) if has(m, "routed_tokens", "top_k") else []
    for layer, counts in routed.items():
        if not isinstance(counts, list) or not counts:
            raise Malformed(f"{layer}: {counts!r} is not a list of counts")
        values = [count({"n": c}, "n") for c in counts]
        total, uniform = sum(values), 1 / len(values)
        if total == 0:
            problems.append(f"{layer}: no token was routed in the window")
            continue
        low, high = t["min_share_ratio"] * uniform, t["max_share_ratio"] * uniform
        for e, n in enumerate(values):
            share = n / total
            if not low <= share <= high:
                allowed = f"{low:.3g}-{high:.3g}"
                problems.append(
                    f"{layer}.expert{e} received {share:.3g} of the assignments (allowed {allowed})"
                )
    return problems


def routed_total_problems(window: Mapping[str, Any], m: Measured) -> list[str]:
    """GATE-ARCH-002's and -012's check `total`: each MoE layer's assignments in one evaluation
    window, summed over its experts, against the tokens its forwards received in that window
    (`routed_tokens`) × `top_k`, exactly (every token reaches all k of its experts, none dropped),
    and the same layers on both sides."""
    received, top_k = m.get("routed_tokens"), count(m, "top_k")
    if not isinstance(received, Mapping):
        raise Malformed("'routed_tokens' must map each MoE layer to the tokens it received")
    if set(map(str, window)) != set(map(str, received)):
        return [f"the window counts layers {sorted(window)}, but layers {sorted(received)} received tokens"]
    problems = []
    for layer, counts in window.items():
        if not isinstance(counts, list):
            raise Malformed(f"{layer}: {counts!r} is not a list of counts")
        assigned = sum(count({"n": c}, "n") for c in counts)
        tokens = count({"n": received[layer]}, "n")
        if assigned != tokens * top_k:
            problems.append(
                f"{layer}: the window's assignments add up to {assigned}, but its forwards were handed "
                f"{tokens} tokens × top_k {top_k} = {tokens * top_k}: counts overwritten by each forward "
                "instead of summed, or left from before the window?"
            )
    return problems


@judges("GATE-ARCH-003", checks={"dense": ("max_abs_diff", "ref_absmax"), "mixture": ("mixtures+",)})
def _single_expert_is_dense(m: Measured, t: Thresholds) -> list[str]:
    """The one-expert mixture against the dense FFN (`dense`), and each mixture written out
    (`mixture`), within dense_atol + dense_rtol × the reference's largest magnitude."""
    problems = []
    if has(m, "max_abs_diff", "ref_absmax"):
        diff, scale = number(m, "max_abs_diff"), number(m, "ref_absmax")
        allowed = t["dense_atol"] + t["dense_rtol"] * scale
        if not diff <= allowed:
            problems.append(
                f"the one-expert mixture differs from the dense FFN by {diff:.3g} (allowed {allowed:.3g})"
            )
    if has(m, "mixtures"):
        found = deviations(m["mixtures"], "mixture", t["dense_atol"], t["dense_rtol"])
        if found:
            problems.append(
                f"the mixture of {'; '.join(found)} from its definition (softmax of the router, top-k, "
                "weights renormalised to sum to one, Σ weight × expert, plus the shared expert)"
            )
    return problems


@judges("GATE-ARCH-004", needs=("experts+",))
def _experts_loaded(m: Measured, t: Thresholds) -> list[str]:
    experts = m.get("experts")
    if not isinstance(experts, Mapping) or not experts:
        raise Malformed("'experts' must map each expert to the sha256 it was given and the one it holds")
    missing = sorted(name for name, h in experts.items() if isinstance(h, Mapping) and h.get("given") is None)
    differ = sorted(
        name
        for name, h in experts.items()
        if not isinstance(h, Mapping) or (h.get("given") is not None and h.get("given") != h.get("held"))
    )
    problems = [f"the loaded weights lack {', '.join(missing)} (left at initialisation)"] if missing else []
    if differ:
        problems.append(f"{', '.join(differ)} do not hold the weights they were given")
    return problems


# -- differential attention and mixture-of-depths --------------------------------------


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
        # the inference threshold each block saved splits the batch that set it at capacity
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


# -- every option, alone, in pairs and all together (GATE-ARCH-013) ----------------------
# The measured matrix is what `stack options-matrix` saw: the options, the attention paths, the
# commands (each with the refusals the matrix declares for it and the command whose output it
# reads), the depth of every model it trained, and per model and command the cell's outcome (ok,
# refused, gate, crashed, differs, skipped or missing) with the one line the command ended with.
# From that alone the judge decides each cell (`cell_verdicts`):
#
#     pass      ok, and no refusal is declared for this model
#     refused   refused in one line holding a declared refusal's text, for a model the refusal
#               applies to (one with its `option`, or one that `lacks` its option); or skipped
#               because the command whose output it reads refused so
#     fail      crashed, fired a gate, differs (exit 0, but its result is not the one the matrix
#               checks it against: a silent wrong result), refused otherwise than declared, or ran
#               where the matrix declares a refusal (the declaration no longer tells the truth)
#     missing   not run: no cell recorded, or a command it needs did not complete
#
# The models are the dense one, each option alone, every pair, and all options together
# (`combinations`), then the dense model on each other attention path (`paths`, a row named for
# the path, which a refusal names as its option): a model the record does not hold is a row of
# missing cells.


OUTCOMES = ("ok", "refused", "gate", "crashed", "differs", "skipped", "missing")
DENSE = "dense"
JOIN = "+"
SHOWN = 5  # failed or missing cells named in a problem before "and N more"


def combinations(options: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, options) of every model the matrix runs: dense, each option, every pair, all together."""
    chosen: list[tuple[str, ...]] = [()]
    chosen += [(o,) for o in options]
    chosen += list(itertools.combinations(options, 2))
    chosen.append(tuple(options))
    unique = dict.fromkeys(chosen)  # with one or two options, "all" is already listed
    return [(JOIN.join(c) if c else DENSE, c) for c in unique]


def rows(options: list[str], paths: list[str]) -> list[tuple[str, tuple[str, ...]]]:
    """(name, what it holds) of every model of the matrix: the combinations, then each path's row."""
    return [*combinations(options), *((path, (path,)) for path in paths if path not in options)]


def applies(refusal: Mapping[str, Any], held: tuple[str, ...]) -> bool:
    """Whether a declared refusal is for a model holding `held`: one with its `option`, or one that
    `lacks` its option."""
    if isinstance(refusal.get("option"), str):
        return refusal["option"] in held
    return refusal.get("lacks") not in held


@dataclass(frozen=True)
class CellVerdict:
    """What the matrix says of one cell, and why (a refusal's reason, a failure's problem)."""

    verdict: str  # pass | refused | fail | missing
    note: str


@dataclass(frozen=True)
class _Command:
    name: str
    after: str | None
    refuses: list[Mapping[str, Any]]


def _commands(m: Measured) -> list[_Command]:
    commands = []
    for entry in items(m, "commands"):
        if not isinstance(entry, Mapping) or not isinstance(entry.get("name"), str):
            raise Malformed(f"a command is {entry!r}, not {{name, after, refuses}}")
        refuses = entry.get("refuses", [])
        if not isinstance(refuses, list) or not all(
            isinstance(r, Mapping)
            and all(isinstance(r.get(k), str) for k in ("reason", "says"))
            and sum(isinstance(r.get(k), str) for k in ("option", "lacks")) == 1
            for r in refuses
        ):
            raise Malformed(
                f"{entry['name']}: refuses is {refuses!r}, not a list of {{option or lacks, reason, says}}"
            )
        after = entry.get("after")
        commands.append(_Command(entry["name"], after if isinstance(after, str) else None, refuses))
    return commands


def _outcome(cells: Any, model: str, command: str) -> str | None:
    row = cells.get(model) if isinstance(cells, Mapping) else None
    outcome = row.get(command) if isinstance(row, Mapping) else None
    if outcome is not None and outcome not in OUTCOMES:
        raise Malformed(f"cell {model}/{command} is {outcome!r}, not one of {', '.join(OUTCOMES)}")
    return outcome


def _cell(
    command: _Command, held: tuple[str, ...], outcome: str | None, message: str, prior: CellVerdict | None
) -> CellVerdict:
    """One cell's verdict (module docstring); `prior` is the verdict of the command it reads after."""
    declared = [r for r in command.refuses if applies(r, held)]
    if outcome is None:
        return CellVerdict("missing", "no cell recorded")
    if outcome == "missing":
        return CellVerdict("missing", message)
    if outcome == "ok":
        if declared:
            reasons = "; ".join(f"{r.get('option') or 'no ' + r['lacks']}: {r['reason']}" for r in declared)
            return CellVerdict(
                "fail", f"ran, where the matrix declares a refusal ({reasons}); update the matrix"
            )
        return CellVerdict("pass", "")
    if outcome == "refused":
        matched = [r for r in declared if r["says"] in message]
        if matched:
            return CellVerdict("refused", matched[0]["reason"])
        if declared:
            return CellVerdict(
                "fail", f"refused otherwise than declared ({declared[0]['says']!r}): {message}"
            )
        return CellVerdict("fail", f"refused where the matrix declares no refusal: {message}")
    if outcome == "skipped":
        if prior is not None and prior.verdict == "refused":
            return CellVerdict("refused", f"needs {command.after}, which refuses this model: {prior.note}")
        return CellVerdict(
            "fail", f"not run, though {command.after or 'nothing it needs'} refused as declared"
        )
    return CellVerdict("fail", f"{outcome}: {message}")


def cell_verdicts(m: Measured) -> dict[tuple[str, str], CellVerdict]:
    """(model, command) → the verdict of every cell the matrix should hold, in run order."""
    options = [str(o) for o in items(m, "options")]
    commands = _commands(m)
    cells, messages = m.get("cells"), m.get("messages")
    if not isinstance(messages, Mapping):
        raise Malformed(f"'messages' is {messages!r}, not a map of cell to its last line")
    verdicts: dict[tuple[str, str], CellVerdict] = {}
    for model, held in rows(options, paths_of(m)):
        for command in commands:
            outcome = _outcome(cells, model, command.name)
            message = str(messages.get(f"{model}/{command.name}", ""))
            prior = verdicts.get((model, command.after)) if command.after else None
            verdicts[(model, command.name)] = _cell(command, held, outcome, message, prior)
    return verdicts


def paths_of(m: Measured) -> list[str]:
    """The attention paths the matrix trains a row on (none in a record made before spec 1.11.0)."""
    paths = m.get("paths", [])
    if not isinstance(paths, list) or not all(isinstance(p, str) for p in paths):
        raise Malformed(f"'paths' is {paths!r}, not a list of attention paths")
    return list(paths)


@judges("GATE-ARCH-013", needs=("options+", "commands+", "cells", "messages", "layers"))
def _every_option_every_command(m: Measured, t: Thresholds) -> list[str]:
    options, commands = items(m, "options"), _commands(m)
    problems = []
    if len(options) < t["min_options"]:
        problems.append(f"the matrix lists {len(options)} option(s), fewer than {t['min_options']:g}")
    if len(commands) < t["min_commands"]:
        problems.append(f"the matrix lists {len(commands)} command(s), fewer than {t['min_commands']:g}")
    if len(paths_of(m)) < t["min_paths"]:
        problems.append(
            f"the matrix trains {len(paths_of(m))} model(s) on another attention path, fewer than "
            f"{t['min_paths']:g}"
        )
    layers = m.get("layers")
    if not isinstance(layers, Mapping) or not layers:
        problems.append("no trained model's depth is recorded")
    else:
        shallow = [
            f"{model} ({count(layers, model)})" for model in layers if count(layers, model) < t["min_layers"]
        ]
        if shallow:
            problems.append(f"models shallower than {t['min_layers']:g} layers: {', '.join(shallow)}")
    verdicts = cell_verdicts(m)
    failed = [f"{a}/{b}: {v.note}" for (a, b), v in verdicts.items() if v.verdict == "fail"]
    missing = [f"{a}/{b}: {v.note}" for (a, b), v in verdicts.items() if v.verdict == "missing"]
    if len(failed) > t["max_failed_cells"]:
        problems.append(f"{len(failed)} cell(s) failed: {first_few(failed, SHOWN, '; ')}")
    if len(missing) > t["max_missing_cells"]:
        problems.append(f"{len(missing)} cell(s) not run: {first_few(missing, SHOWN, '; ')}")
    return problems


# -- the router's collapse (GATE-ARCH-012) ----------------------------------------------
# GATE-ARCH-002 warns when a share leaves a mild band around uniform; GATE-ARCH-012 fails a run
# whose routing has collapsed: an expert that takes (nearly) every token, or receives nothing or
# (nearly) nothing, for several evaluations in a row. A collapse is a state the router stays in:
# one window of a router a few steps old is a snapshot of its initialisation (a small model's
# similar tokens can all skip one expert), so every finding needs the last collapse_evaluations
# windows.


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
        # the latest window's assignments are every token each MoE layer received × top_k
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
