"""The record of `stack evalmatrix` from its per-item scores (`evalmatrix.json`): each row's summary
(`row_summary`, which the command itself writes with) and the fine-tuning gates the rows decide.
"""

from __future__ import annotations

from typing import Any

from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.reports import PER_ITEM_SINCE, bpb_identity, judged, report_of, short
from contracts.few_shot import shown
from contracts.judges import judge
from contracts.likelihood import bits_per_byte_of, utf8_bytes
from contracts.overlap import items_in_training

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# The revision of GATE-FT-002 that brought its check draws (evalmatrix.json keeps the pool).
FEW_SHOT_DRAWS_SINCE = 6


def row_summary(row: dict[str, Any], scores: list[dict[str, Any]]) -> dict[str, Any]:
    """One row of the matrix from its per-item scores, summed in item order as the command sums them."""
    nll = tokens = n_bytes = dropped = 0
    exact: int | None = 0
    for item in scores:
        nll, tokens = nll + item["nll"], tokens + item["tokens"]
        n_bytes, dropped = n_bytes + item["bytes"], dropped + item["dropped"]
        exact = None if exact is None or item.get("exact") is None else exact + bool(item["exact"])
    return {
        **row,
        "items": len(scores),
        "bits_per_byte": bits_per_byte_of(nll, n_bytes),
        "loss": nll / tokens,
        "completion_tokens": tokens,
        "completion_bytes": n_bytes,
        "context_tokens_dropped": dropped,
        "exact_match": None if exact is None or not scores else exact / len(scores),
    }


def _row_problems(row: dict[str, Any], report: dict[str, Any]) -> list[str]:
    """A matrix row whose bits per byte is not its loss over its completion tokens and bytes, or whose
    item count is not the matrix's."""
    problems, name = [], row.get("row")
    bpb = bpb_identity(row.get("loss"), row.get("completion_tokens"), row.get("completion_bytes"))
    if bpb is not None and not same(row.get("bits_per_byte"), bpb):
        problems.append(
            f"row {name}'s bits_per_byte is {row.get('bits_per_byte')}, but its loss over its completion "
            f"tokens and bytes gives {bpb}"
        )
    items = report.get("items")
    if isinstance(items, list) and "items" in row and row["items"] != len(items):
        problems.append(f"row {name} counts {row['items']} items, but the matrix has {len(items)}")
    return problems


def _completion_bytes(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any]
) -> list[str]:
    """Each item's bytes, as each row states them, against the UTF-8 bytes of the completion
    evalmatrix.json keeps for it (from 1.30.0): what GATE-FT-002's check bytes read, derived."""
    completions, ids = report.get("completions"), report.get("items")
    if not (isinstance(completions, list) and isinstance(ids, list) and len(completions) == len(ids)):
        return []
    counted = [utf8_bytes(c) if isinstance(c, str) else None for c in completions]
    if "GATE-FT-002" not in inputs.stale:
        stated = {name: [item.get("bytes") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "bytes_read"), stated, optional=True)
        derived.put(
            ("gates", "GATE-FT-002", "measured", "bytes_decoded"),
            dict.fromkeys(scores, counted),
            optional=True,
        )
    return [
        f"evalmatrix.json: row {name}'s item {item.get('id')} counts {item.get('bytes')} bytes, but its "
        f"completion holds {n_bytes} UTF-8 bytes"
        for name, items in scores.items()
        for item, n_bytes in zip(items, counted, strict=False)
        if item.get("bytes") != n_bytes
    ]


def _exact_matches(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any]
) -> list[str]:
    """Each item's exact match, as evalmatrix.json's per-item scores state it, against the record's
    config.exact_match (which the checker holds to --exact-match): a number for every item where it
    is true, none where it is false, and (`_greedy_matches`) the one its greedy continuation gives;
    GATE-FT-002's check exact reads the same, derived."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    stated = config.get("exact_match")
    read = {name: [item.get("exact") for item in items] for name, items in scores.items()}
    if "GATE-FT-002" not in inputs.stale:
        derived.put(("gates", "GATE-FT-002", "measured", "exact_read"), read, optional=True)
        derived.put(("gates", "GATE-FT-002", "measured", "exact_stated"), stated, optional=True)
    if not isinstance(stated, bool):
        return [f"config.exact_match is {stated!r}, not true or false: the matrix's exact matches go unheld"]
    return _greedy_matches(inputs, derived, report, scores, stated) + [
        f"evalmatrix.json: row {name}'s {len(off)} item(s) have exact match {off[0]!r}, but "
        f"config.exact_match is {stated}"
        for name, values in read.items()
        if (off := [v for v in values if not (isinstance(v, bool) if stated else v is None)])
    ]


def _retrieval_asked(inputs: Inputs, derived: Derivation) -> None:
    """GATE-FT-002's check retrieval judges each item's passages against how many were asked for:
    that is the record's config.passages (which the checker holds to --passages), never a count of
    the command's own, so a setting that never reached the retriever is judged against the one stated."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    retrieval = result.measured.get("retrieval") if result is not None else None
    if "GATE-FT-002" in inputs.stale or not isinstance(retrieval, list):
        return
    asked = config.get("passages")
    stated = [{**r, "asked": asked} if isinstance(r, dict) else r for r in retrieval]
    derived.put(("gates", "GATE-FT-002", "measured", "retrieval"), stated, optional=True)


def _few_shot_draws(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-002's check draws from evalmatrix.json's pool and the record's seed and shots:
    each item's examples are drawn again by contracts.few_shot. A record of that revision whose file
    keeps no pool is a problem, never a skipped check."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if "pool" not in report:
        if result is not None and result.revision >= FEW_SHOT_DRAWS_SINCE:
            derived.problems.append("evalmatrix.json keeps no few-shot pool: its draws cannot be drawn again")
        return {}
    return {
        "draws_pool": report["pool"],
        "draws_seed": config.get("seed"),
        "draws_shots": config.get("shots"),
    }


# The revision of GATE-FT-002 that brought its check overlap (evalmatrix.json keeps the prompts).
ITEM_OVERLAP_SINCE = 8


def _item_overlap(inputs: Inputs, derived: Derivation, report: dict[str, Any]) -> dict[str, Any]:
    """GATE-FT-002's check overlap from evalmatrix.json's items and pool with their prompts:
    the overlap the record and the file state is contracts.overlap.items_in_training of them,
    judged by the same judge. A record of that revision whose file keeps no prompts is a problem,
    never a skipped check."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-FT-002"), None)
    pool = [e.get("id") if isinstance(e, dict) else None for e in report.get("pool") or []]
    pairs = [(report.get("items"), report.get("prompts")), (pool, report.get("pool_prompts"))]
    if not all(isinstance(ids, list) and isinstance(texts, list) for ids, texts in pairs):
        if result is not None and result.revision >= ITEM_OVERLAP_SINCE:
            derived.problems.append(
                "evalmatrix.json keeps no prompts of its items and pool: no overlap to find"
            )
        return {}
    found, held = ([{"id": i, "prompt": p} for i, p in zip(ids, texts, strict=False)] for ids, texts in pairs)
    if any(len(ids) != len(texts) for ids, texts in pairs) or not all(
        isinstance(e["id"], str) and isinstance(e["prompt"], str) for e in found + held
    ):
        derived.problems.append("evalmatrix.json: its prompts do not pair with the ids of its items or pool")
        return {}
    overlap = items_in_training(
        [(e["id"], e["prompt"]) for e in found], [(e["id"], e["prompt"]) for e in held]
    )
    derived.put(("metrics", "overlap"), overlap)
    if report.get("overlap") != overlap:
        derived.problems.append(
            f"evalmatrix.json states the overlap {short(report.get('overlap'))}, but its items and pool "
            f"give {short(overlap)} (contracts.overlap)"
        )
    return {"overlap_stated": report.get("overlap"), "overlap_items": found, "overlap_pool": held}


# The spec version from which evalmatrix.json keeps each item's greedy continuation (GATE-FT-002).
GREEDY_SINCE = "1.33.0"


def _greedy_matches(
    inputs: Inputs, derived: Derivation, report: dict[str, Any], scores: dict[str, Any], stated: bool
) -> list[str]:
    """Where exact match was asked for, each item's stated exact match against contracts.exact_match
    of the greedy continuation evalmatrix.json keeps and the item's completion, by the same judge
    (GATE-FT-002's check exact); a record of a gate revision that kept no continuation is
    excused as stale, a current one without them is missing them."""
    if not stated or "GATE-FT-002" in inputs.stale:
        return []
    if not all("greedy" in item for items in scores.values() for item in items):
        derived.missing.append(("evalmatrix.json: greedy continuations", GREEDY_SINCE))
        return []
    measured = {
        "exact_read": {name: [item.get("exact") for item in items] for name, items in scores.items()},
        "exact_stated": stated,
        "exact_greedy": {name: [item.get("greedy") for item in items] for name, items in scores.items()},
        "exact_completions": report.get("completions"),
    }
    derived.put(("gates", "GATE-FT-002", "measured", "exact_greedy"), measured["exact_greedy"], optional=True)
    return [f"evalmatrix.json: {p}" for p in judge("GATE-FT-002", measured)]


@derives("evalmatrix")
def evalmatrix_record(inputs: Inputs) -> Derivation:
    """Rows from per-item scores; the adapter's gain and GATE-FT-001 from rows B and C; GATE-FT-002's
    item ids, few-shot draws and each item's context tokens cut from the same file."""
    derived = Derivation()
    report = report_of(inputs, derived, "evalmatrix.json", "1.6.0")
    if report is None:
        return derived
    rows = report.get("rows") or []
    scores = report.get("scores")
    if isinstance(scores, dict):
        try:
            from_items = [row_summary(row, scores[row["row"]]) for row in rows]
        except (KeyError, TypeError, ZeroDivisionError, ValueError) as exc:
            derived.problems.append(f"evalmatrix.json: its per-item scores do not sum to rows ({exc!r})")
        else:
            if from_items != rows:
                derived.problems.append("evalmatrix.json: its rows are not the sums of its per-item scores")
            rows = from_items
        ids = {name: [item.get("id") for item in items] for name, items in scores.items()}
        judged_rows: dict[str, Any] | None = ids
    else:
        judged_rows = None
        derived.missing.append(("evalmatrix.json: per-item scores", PER_ITEM_SINCE))
    derived.problems += [
        f"evalmatrix.json: {p}" for r in rows if isinstance(r, dict) for p in _row_problems(r, report)
    ]
    derived.put(("metrics", "rows"), rows)
    derived.put(("metrics", "items"), len(report.get("items") or []))
    by_name = {row.get("row"): row for row in rows if isinstance(row, dict)}
    few_shot, adapter = by_name.get("B"), by_name.get("C")
    if few_shot is not None and adapter is not None:
        derived.put(("metrics", "adapter_gain_bpb"), few_shot["bits_per_byte"] - adapter["bits_per_byte"])
        measured = {"few_shot_bpb": few_shot["bits_per_byte"], "adapter_bpb": adapter["bits_per_byte"]}
        few_shot_items = scores.get("B") if isinstance(scores, dict) else None
        dropped = [item.get("dropped") for item in few_shot_items or [] if isinstance(item, dict)]
        if dropped and all(type(tokens) is int for tokens in dropped):  # else check windows names them
            measured |= shown(dropped)
        judged(inputs, derived, "GATE-FT-001", measured)
    else:
        derived.put(("metrics", "adapter_gain_bpb"), None)
    if judged_rows is not None:
        drawn = _few_shot_draws(inputs, derived, report) | _item_overlap(inputs, derived, report)
        judged(
            inputs, derived, "GATE-FT-002", {"rows": judged_rows, "few_shot": report.get("few_shot"), **drawn}
        )
        # the context tokens each item records as cut, as GATE-FT-002's check windows read them
        assert isinstance(scores, dict)
        cut = {name: [item.get("dropped") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "dropped_read"), cut, optional=True)
        # the NLLs the rows sum, as GATE-FT-002's check nll read them
        nll = {name: [item.get("nll") for item in items] for name, items in scores.items()}
        derived.put(("gates", "GATE-FT-002", "measured", "nll_read"), nll, optional=True)
        derived.problems += _completion_bytes(inputs, derived, report, scores)
        derived.problems += _exact_matches(inputs, derived, report, scores)
        _retrieval_asked(inputs, derived)
    elif "few_shot" in report:
        derived.gate("GATE-FT-002", {"few_shot": report["few_shot"]})
    return derived
