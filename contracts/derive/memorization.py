"""The record of `stack memorization` from its `memorization.json`: the longest verbatim runs and
GATE-FT-003 over them (`memorization_summary`, which the command itself writes with).
"""

from __future__ import annotations

from typing import Any

from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.reports import judged, mirrored, report_of, short, thresholds_in_force, whole
from contracts.judges.ft import reproduced
from contracts.verbatim import longest_common_run

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


def memorization_summary(runs: list[int], least: int) -> dict[str, Any]:
    """One model's row of a memorization report from its per-example longest verbatim runs: how many
    reach `least` tokens (GATE-FT-003's count), their share, the longest run and the mean run."""
    count = reproduced(runs, least)
    return {
        "reproduced": count,
        "rate": count / len(runs),
        "longest_run": max(runs),
        "mean_run": sum(runs) / len(runs),
    }


# The rows of a memorization report, by their key in memorization.json's `continuations`.
MEMORIZATION_ROWS = {"fine-tuned": "tuned_runs", "base": "base_runs"}


def recomputed_runs(report: dict[str, Any]) -> dict[str, list[int]] | None:
    """Each row's per-example longest verbatim run, found again by contracts.verbatim between the
    continuation memorization.json keeps for it and the true one (from 1.30.0); None without them."""
    kept = report.get("continuations")
    if not isinstance(kept, dict):
        return None
    lists = [kept.get(name) for name in ("true", *MEMORIZATION_ROWS)]
    if not all(isinstance(x, list) and all(isinstance(c, list) for c in x) for x in lists):
        return None
    true = lists[0]
    return {
        name: [longest_common_run(g, t) for g, t in zip(kept[name], true, strict=False)]
        for name in MEMORIZATION_ROWS
    }


def _continuation_problems(report: dict[str, Any], recomputed: dict[str, list[int]]) -> list[str]:
    """The continuations kept: each as long as the report's continuation, one per example in every row,
    and each row's stated runs the ones they give."""
    kept, length = report["continuations"], report.get("continuation")
    problems = [
        f"memorization.json: {sum(len(c) != length for c in kept[name])} of its {name} continuations are "
        f"not {length} tokens"
        for name in ("true", *MEMORIZATION_ROWS)
        if isinstance(length, int) and any(len(c) != length for c in kept[name])
    ]
    problems += [
        f"memorization.json keeps {len(kept[name])} {name} continuations for {len(kept['true'])} examples"
        for name in MEMORIZATION_ROWS
        if len(kept[name]) != len(kept["true"])
    ]
    problems += [
        f"memorization.json: its {key} are {short(report.get(key), 120)}, but the continuations it keeps "
        f"give {short(recomputed[name], 120)} (contracts.verbatim)"
        for name, key in MEMORIZATION_ROWS.items()
        if report.get(key) != recomputed[name]
    ]
    return problems


# The sampler `stack memorization` continues every example with: greedy by construction (its GREEDY,
# stack/eval/memorization.py; no option sets it), as GATE-FT-003's verbatim runs are defined, so the
# settings GATE-TRAIN-005 states of its draws are these.
GREEDY_SAMPLER = {"temperature": 0.0, "top_k": None, "top_p": None, "repetition_penalty": 1.0}


@derives("memorization")
def memorization_record(inputs: Inputs) -> Derivation:
    """GATE-FT-003 from the per-example verbatim runs, found again in the continuations kept where
    the file keeps them; the summary from the same runs."""
    derived = Derivation()
    report = report_of(inputs, derived, "memorization.json", "1.6.0")
    if report is None:
        return derived
    mirrored(derived, report, ("prefix", "continuation", "min_verbatim_tokens", "models"))
    for key in ("prefix", "continuation"):  # the lengths it was asked for, in its config too
        if key in report:
            derived.put(("config", key), report[key])
    least = _least_verbatim(inputs, derived, report)
    runs = {name: report.get(key) for name, key in MEMORIZATION_ROWS.items()}
    recomputed = recomputed_runs(report)
    if recomputed is not None:
        derived.problems += _continuation_problems(report, recomputed)
        runs = dict(recomputed)
    if isinstance(least, int) and all(isinstance(r, list) and r for r in runs.values()):
        models = {name: memorization_summary(r, least) for name, r in runs.items()}  # type: ignore[arg-type]
        if not same(report.get("models"), models):
            derived.problems.append(
                f"memorization.json: its models are {short(report.get('models'), 120)}, but its runs give "
                f"{short(models, 120)}"
            )
        derived.put(("metrics", "models"), models)
    if all(key in report for key in ("tuned_runs", "base_runs", "continuation")):
        measured = {
            "tuned_overlaps": report["tuned_runs"],
            "base_overlaps": report["base_runs"],
            "continuation_tokens": report["continuation"],
        }
        if recomputed is not None:  # check runs: the runs stated, against those found again
            measured |= {
                "tuned_runs_recomputed": recomputed["fine-tuned"],
                "base_runs_recomputed": recomputed["base"],
            }
        measured |= _drawn_measured(inputs, derived, report) | _texts_measured(inputs)
        judged(inputs, derived, "GATE-FT-003", measured)
    derived.problems += _memorization_count_problems(inputs, report)
    examples, continuation = report.get("examples"), report.get("continuation")
    if isinstance(examples, list) and whole(continuation):
        # every row continues every example for `continuation` greedy draws, all in one tally,
        # under every revision of GATE-TRAIN-005 a memorization record holds
        draws = len(MEMORIZATION_ROWS) * len(examples) * continuation
        derived.put(("gates", "GATE-TRAIN-005", "measured", "draws"), draws, optional=True)
    for key, value in GREEDY_SAMPLER.items():  # no option reaches the sampler
        derived.put(("gates", "GATE-TRAIN-005", "measured", key), value, optional=True)
    return derived


def _drawn_measured(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-003's check drawn where the record holds it: the seed, n and length the draw is
    made again with are the config's and the file's, not the gate's own word; the eligible count,
    the ranks and the indices are the record's, the indices those of the examples memorization.json
    lists (a DATA_DIR's train document i is index i; a JSONL pool's lines are not kept, so only
    their count is held)."""
    result = next((g.measured for g in inputs.record.gates if g.id == "GATE-FT-003"), None)
    if not isinstance(result, dict) or "examples_drawn" not in result:
        return {}
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    prefix, continuation = report.get("prefix"), report.get("continuation")
    measured = {
        "examples_seed": config.get("seed"),
        "examples_n": config.get("n"),
        "examples_length": prefix + continuation if whole(prefix, continuation) else None,
        "examples_eligible": result.get("examples_eligible"),
        "examples_ranks": result.get("examples_ranks"),
        "examples_drawn": result["examples_drawn"],
    }
    drawn, listed = result["examples_drawn"], report.get("examples")
    if isinstance(drawn, list) and isinstance(listed, list):
        named = [f"train document {i}" for i in drawn] if config.get("data") is not None else None
        if len(drawn) != len(listed) or (named is not None and named != listed):
            derived.problems.append(
                f"memorization.json lists the examples {short(listed)}, but GATE-FT-003 measured the pool "
                f"indices {short(drawn)}"
            )
    return measured


def _texts_measured(inputs: Inputs) -> dict[str, Any]:
    """GATE-FT-003's check tokens where the record holds it: the texts of the ids measured and
    of the records are the record's (memorization.json keeps no prefix, and the --examples file is
    an input, not an artifact), judged again by the same judge so the verdict derived is the one
    they give."""
    result = next((g.measured for g in inputs.record.gates if g.id == "GATE-FT-003"), None)
    keys = ("examples_decoded", "examples_rendered")
    return {key: result[key] for key in keys} if isinstance(result, dict) and keys[0] in result else {}


def _least_verbatim(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> Any:
    """The run an example must share with its true continuation to count as reproduced: GATE-FT-003's
    min_verbatim_tokens, which `stack memorization` reads from the spec and writes into the file
    (stack/cli/memorization.py), so the file's count and the record's are made with the threshold
    in force; the file's own value where that is not known (`thresholds_in_force`)."""
    in_force = (thresholds_in_force(inputs, "GATE-FT-003") or {}).get("min_verbatim_tokens")
    if in_force is None:
        return report.get("min_verbatim_tokens")
    derived.put(("metrics", "min_verbatim_tokens"), in_force)
    if "min_verbatim_tokens" in report and not same(report["min_verbatim_tokens"], in_force):
        derived.problems.append(
            f"memorization.json: min_verbatim_tokens is {report['min_verbatim_tokens']!r}, but GATE-FT-003 "
            f"counts an example reproduced from {in_force!r} tokens (its threshold min_verbatim_tokens)"
        )
    return int(in_force)


def _memorization_count_problems(inputs: Inputs, report: dict[str, Any]) -> list[str]:
    """The examples the table lists: at most config.n (the draw takes up to n), one run per example
    in each row, and (with --data) the count GATE-DATA-005 held to the train split."""
    examples = report.get("examples")
    if not isinstance(examples, list):
        return []
    problems = []
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if isinstance(asked := config.get("n"), int) and len(examples) > asked:
        problems.append(f"memorization.json lists {len(examples)} examples, more than config.n {asked}")
    for key in ("tuned_runs", "base_runs"):
        if isinstance(runs := report.get(key), list) and len(runs) != len(examples):
            problems.append(f"memorization.json has {len(runs)} {key} for {len(examples)} examples")
    held = next((g.measured for g in inputs.record.gates if g.id == "GATE-DATA-005"), None) or {}
    drawn = held.get("train_examples", len(examples)) if isinstance(held, dict) else len(examples)
    if "GATE-DATA-005" not in inputs.stale and drawn != len(examples):
        problems.append(
            f"gates[GATE-DATA-005].measured.train_examples is {drawn}, but "
            f"memorization.json lists {len(examples)} examples"
        )
    return problems
