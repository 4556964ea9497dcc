"""The judges of the fine-tuning evaluation gates (spec/gates/ft.yaml): `stack evalmatrix` and
`stack memorization`.
"""

from __future__ import annotations

from collections.abc import Mapping
from itertools import pairwise
from typing import Any

from contracts.exact_match import exact_match
from contracts.few_shot import expected_draw
from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has, items, number
from contracts.overlap import items_in_training
from contracts.recall_draw import drawn_ranks, starts_text
from contracts.wording import first_few

judges = Judges()


# What GATE-FT-003's message tells the user to change: the usual causes of memorisation.
MEMORISATION_REMEDIES = (
    "train fewer steps, use a lower LoRA rank or learning rate, add dropout, or deduplicate the training data"
)


@judges(
    "GATE-FT-001",
    checks={
        "margin": ("few_shot_bpb", "adapter_bpb"),
        # the few-shot row showed its examples whole: few enough items had their contexts cut to fit
        "shown": ("few_shot_items", "few_shot_cut_items", "few_shot_cut_tokens"),
    },
)
def _adapter_beats_few_shot(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    if has(m, "few_shot_bpb", "adapter_bpb"):
        few_shot, adapter = number(m, "few_shot_bpb"), number(m, "adapter_bpb")
        improvement = few_shot - adapter
        if not improvement >= t["min_bpb_improvement"]:  # NaN compares false: a NaN score fails
            problems.append(
                f"the adapter's row scores {adapter:.4f} bits per byte against few-shot's {few_shot:.4f} "
                f"(better by {improvement:.4f}, at least {t['min_bpb_improvement']:g} wanted): the adapter "
                "was not worth training over prompting the base model with examples"
            )
    if has(m, "few_shot_cut_items"):
        cut, items, tokens = (
            count(m, key) for key in ("few_shot_cut_items", "few_shot_items", "few_shot_cut_tokens")
        )
        if cut > t["max_cut_items"]:
            problems.append(
                f"the few-shot row's contexts were cut to fit the model on {cut} of {items} item(s), at "
                f"most {t['max_cut_items']} wanted ({tokens} tokens cut): the adapter is compared with "
                "fewer examples than asked, not with few-shot prompting; give fewer --shots, or shorter "
                "training examples"
            )
    return problems


def _ids(value: Any, where: str) -> list[str]:
    """A row's item ids: a list of strings."""
    if not isinstance(value, list) or not all(isinstance(i, str) for i in value):
        raise Malformed(f"{where} is {value!r}, not a list of item ids")
    return value


def _row_problems(rows: Any) -> list[str]:
    """Every row scores the first row's ids, in its order, each once."""
    if not isinstance(rows, dict) or not rows:
        raise Malformed(f"'rows' is {rows!r}, not an object of row name → item ids")
    named = {name: _ids(ids, f"row {name!r}") for name, ids in rows.items()}
    first_name, first = next(iter(named.items()))
    problems = []
    if not first:
        problems.append(f"row {first_name} scored no item")
    repeated = sorted({i for i in first if first.count(i) > 1})
    if repeated:
        problems.append(f"row {first_name} scores items more than once: {', '.join(repeated[:5])}")
    for name, ids in named.items():
        if ids != first:
            missing = [i for i in first if i not in ids]
            extra = [i for i in ids if i not in first]
            problems.append(
                f"row {name} does not score row {first_name}'s items in order "
                f"(missing {missing[:5]}, extra {extra[:5]}, {len(ids)} against {len(first)})"
            )
    return problems


def _leak_problems(draws: list[Any]) -> list[str]:
    """No few-shot example placed before an item is that item, by id or by content digest."""
    problems = []
    for draw in draws:
        if not isinstance(draw, dict) or not isinstance(draw.get("item"), str):
            raise Malformed(f"few-shot draw {draw!r} names no item")
        item, digest = draw["item"], draw.get("item_sha256")
        for example in items(draw, "examples"):
            if not isinstance(example, dict) or not isinstance(example.get("id"), str):
                raise Malformed(f"few-shot example {example!r} of item {item} has no id")
            if example["id"] == item:
                problems.append(f"item {item} is scored with itself as a few-shot example (by id)")
            elif digest is not None and example.get("sha256") == digest:
                problems.append(
                    f"item {item} is scored with its own prompt and completion as a few-shot example "
                    f"(example {example['id']}, same sha256)"
                )
    return problems


@judges(
    "GATE-FT-002",
    checks={
        "items": ("rows+", "few_shot"),
        # what each row's forwards read before a completion is the text the row states,
        # and the passages retrieved for an item are the best the folder holds for its prompt
        "contexts": ("contexts_read", "contexts_stated"),
        # the passages rescored are the statute's walk of the stated folder, and the
        # retriever's passage list is that walk's (files, passages and their digest)
        "retrieval": ("retrieval", "passages_read", "passages_statute"),
        # the ids each scoring forward read and scored, as taped, are the stated context cut
        # by contracts.truncation.completion_window, and the context ids cut are its count
        "windows": ("windows_read", "windows_stated", "dropped_read", "dropped_stated"),
        # each item's summed NLL is the one its taped logits give its taped targets
        "nll": ("nll_read", "nll_taped"),
        # each item's few-shot examples are contracts.few_shot's draw from the seed, the item
        # and the pool, in draw order
        "draws": ("few_shot", "draws_pool", "draws_seed", "draws_shots"),
        # each item's bytes are the UTF-8 bytes of the text its taped targets decode to
        "bytes": ("bytes_read", "bytes_decoded"),
        # every item of every row has an exact match where the record states exact match was
        # asked for (config.exact_match), and none where it was not; each stated exact match is
        # contracts.exact_match of the greedy continuation it compared and the item's completion
        "exact": ("exact_read", "exact_stated", "exact_greedy", "exact_completions"),
        # the held-out items stated as training items, by id and by prompt text, are
        # contracts.overlap.items_in_training of the items and the pool (ids and prompts)
        "overlap": ("overlap_stated", "overlap_items", "overlap_pool"),
    },
)
def _same_items_no_leak(m: Measured, t: Thresholds) -> list[str]:
    problems = _row_problems(m.get("rows")) + _leak_problems(items(m, "few_shot")) if has(m, "rows") else []
    if has(m, "contexts_read", "contexts_stated"):
        problems += _context_problems(m.get("contexts_read"), m.get("contexts_stated"))
    if has(m, "windows_read", "windows_stated", "dropped_read", "dropped_stated"):
        problems += _per_item_problems(
            m.get("windows_read"),
            m.get("windows_stated"),
            "were scored on other token ids than the stated context cut to its newest tokens before "
            "the whole completion (cut from the wrong end? a room off by one? the completion cut? "
            "no end-of-text id?)",
        )
        problems += _per_item_problems(
            m.get("dropped_read"),
            m.get("dropped_stated"),
            "record another count of context tokens cut than the stated context's length less the room",
        )
    if has(m, "retrieval"):
        problems += _retrieval_problems(items(m, "retrieval"))
    if has(m, "passages_read", "passages_statute"):
        problems += _passage_list_problems(m.get("passages_read"), m.get("passages_statute"))
    if has(m, *judges.checks["GATE-FT-002"]["overlap"]):
        found, pool = items(m, "overlap_items"), items(m, "overlap_pool")
        problems += _overlap_problems(m.get("overlap_stated"), found, pool)
    if has(m, "draws_pool", "draws_seed", "draws_shots"):
        problems += _draw_problems(items(m, "few_shot"), items(m, "draws_pool"), m)
    if has(m, "nll_read", "nll_taped"):
        problems += _nll_problems(m.get("nll_read"), m.get("nll_taped"), t["nll_rtol"])
    if has(m, "bytes_read", "bytes_decoded"):
        problems += _per_item_problems(
            m.get("bytes_read"),
            m.get("bytes_decoded"),
            "count other bytes than the UTF-8 bytes of the completion their forward scored, which their "
            "bits per byte divide by (characters counted for bytes?)",
        )
    if has(m, "exact_read", "exact_stated"):
        problems += _exact_problems(m.get("exact_read"), flag(m, "exact_stated"))
    if has(m, "exact_read", "exact_stated", "exact_greedy", "exact_completions") and flag(m, "exact_stated"):
        problems += _exact_value_problems(
            m.get("exact_read"), m.get("exact_greedy"), m.get("exact_completions")
        )
    return problems


def _exact_value_problems(read: Any, greedy: Any, completions: Any) -> list[str]:
    """Per row, each item's stated exact match against contracts.exact_match of the greedy
    continuation its row decoded and the item's completion: a scorer that compares less (or more)
    than the statute shows as an item whose stated match differs."""
    if not (isinstance(greedy, dict) and isinstance(completions, list) and isinstance(read, dict)):
        raise Malformed("'exact_greedy' must be an object of row → continuations, 'exact_completions' a list")
    problems = []
    for name, values in sorted(read.items()):
        decoded = greedy.get(name)
        if not isinstance(decoded, list) or len(decoded) != len(values) or len(values) != len(completions):
            problems.append(f"row {name}: its greedy continuations do not pair with its items' completions")
            continue
        off = [
            (i, stated)
            for i, (stated, text, completion) in enumerate(zip(values, decoded, completions, strict=True))
            if not isinstance(text, str) or stated != exact_match(text, completion)
        ]
        if off:
            i, stated = off[0]
            problems.append(
                f"row {name}: {len(off)} of {len(values)} items state an exact match other than "
                f"contracts.exact_match of their greedy continuation (first: item {i} states {stated!r}, "
                f"continuation {decoded[i]!r}, completion {completions[i]!r}): the scorer compares "
                "other than the whole stripped text?"
            )
    return problems


def _exact_problems(read: Any, stated: bool) -> list[str]:
    """Per row, each item's exact match against the setting the record states: true or false for
    every item where exact match was asked for, null for every item where it was not."""
    if not isinstance(read, dict) or not all(isinstance(v, list) for v in read.values()):
        raise Malformed("'exact_read' must be an object of row name → per-item exact matches")
    problems = []
    for name, values in sorted(read.items()):
        off = [v for v in values if not (isinstance(v, bool) if stated else v is None)]
        if off:
            said = "asks for exact match" if stated else "asks for no exact match"
            problems.append(
                f"row {name}: {len(off)} of {len(values)} items have exact match {off[0]!r}, but the record "
                f"{said} (config.exact_match {stated}): the setting never reached the scorer?"
            )
    return problems


def _draw_problems(draws: list[Any], pool: list[Any], m: Measured) -> list[str]:
    """Each item's few-shot examples, in order, against the draw contracts.few_shot.expected_draw
    makes again from the seed, the item and the pool ({id, sha256} in its order)."""
    seed, shots = count(m, "draws_seed"), count(m, "draws_shots")
    if not all(isinstance(p, dict) for p in pool):
        raise Malformed("'draws_pool' must list {id, sha256} objects")
    off, shown_all = [], set()
    for draw in draws:
        if not isinstance(draw, dict) or not isinstance(draw.get("item"), str):
            raise Malformed(f"few-shot draw {draw!r} names no item")
        shown = [e.get("id") for e in items(draw, "examples") if isinstance(e, dict)]
        shown_all.add(tuple(shown))
        want = expected_draw(seed, draw["item"], draw.get("item_sha256"), pool, shots)
        if shown != want:
            off.append((draw["item"], shown, want))
    if not off:
        return []
    item, shown, want = off[0]
    same = len(shown_all) == 1 and len(draws) > 1
    return [
        f"{len(off)} of {len(draws)} items were shown other few-shot examples than the seeded draw of "
        f"their own (contracts.few_shot, seed {seed}): item {item} shows {shown}, its draw is {want}"
        + ("; every item shows the same examples (a generator seeded without the item?)" if same else "")
    ]


def _nll_problems(read: Any, taped: Any, rtol: float) -> list[str]:
    """Per row, each item's stated NLL against the summed NLL of the targets its scoring forward
    taped under the logits it taped (contracts.likelihood.summed_nll), within `rtol` of the latter."""
    if not (isinstance(read, dict) and isinstance(taped, dict)):
        raise Malformed("'nll_read' and 'nll_taped' must be objects of row name → per-item NLLs")
    problems = []
    for name in sorted(read.keys() | taped.keys()):
        got, want = read.get(name), taped.get(name)
        if not (isinstance(got, list) and isinstance(want, list)) or len(got) != len(want):
            problems.append(f"row {name}: stated or taped NLLs are missing")
            continue
        off = [
            (a, b)
            for a, b in zip(got, want, strict=True)
            if not (isinstance(a, int | float) and isinstance(b, int | float) and abs(a - b) <= rtol * abs(b))
        ]
        if off:
            problems.append(
                f"row {name}: {len(off)} of {len(want)} items state an NLL other than the sum over their "
                f"scored targets under the logits their forward taped (first {off[0][0]!r} against "
                f"{off[0][1]!r}, rtol {rtol:g}): a mean for a sum? a slice off by one?"
            )
    return problems


def _context_problems(read: Any, stated: Any) -> list[str]:
    """Per row, the digest of the text each forward read before a completion against the text the
    row states it put there (the item's prompt after its examples or passages)."""
    return _per_item_problems(
        read,
        stated,
        "were scored after another text than the row states (examples without their completions? "
        "other passages?)",
    )


def _per_item_problems(read: Any, stated: Any, what: str) -> list[str]:
    """Per row, each item's value as read against the value the row states: `what` the items that
    differ did."""
    if not (isinstance(read, dict) and isinstance(stated, dict)):
        raise Malformed("read and stated values must be objects of row name → per-item values")
    problems = []
    for name in sorted(read.keys() | stated.keys()):
        got, want = read.get(name), stated.get(name)
        if not (isinstance(got, list) and isinstance(want, list)):
            problems.append(f"row {name}: read or stated values are missing")
            continue
        differing = sum(a != b for a, b in zip(got, want, strict=False)) + abs(len(got) - len(want))
        if differing:
            problems.append(f"row {name}: {differing} of {len(want)} items {what}")
    return problems


def _retrieval_problems(found: list[Any]) -> list[str]:
    """Each item's passages: scores above 0, best first, none below a passage left out, as many as
    asked unless no passage left out scores above 0."""
    problems = []
    for entry in found:
        if not isinstance(entry, dict) or not isinstance(entry.get("item"), str):
            raise Malformed(f"retrieval entry {entry!r} names no item")
        scores, left = items(entry, "scores"), number(entry, "best_left")
        if not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in scores):
            raise Malformed(f"retrieval of item {entry['item']}: scores must be numbers")
        if any(v <= 0 for v in scores) or any(a < b for a, b in pairwise(scores)):
            problems.append(f"item {entry['item']}: passages retrieved not best first above 0 ({scores})")
        elif scores and min(scores) < left:
            problems.append(
                f"item {entry['item']}: a passage left out scores {left:.4g}, above one retrieved "
                f"({min(scores):.4g}): retrieval did not take the best"
            )
        elif len(scores) > (asked := count(entry, "asked")) or (len(scores) < asked and left > 0):
            problems.append(
                f"item {entry['item']}: {len(scores)} passages retrieved of {asked} asked, the best one "
                f"left out scoring {left:.4g}"
            )
    return problems


def _passage_list_problems(read: Any, statute: Any) -> list[str]:
    """The retriever's passage list against the statute's walk of the folder (contracts.bm25
    .passages_read of each): the same passages per file and the same list, by digest."""
    if not all(isinstance(v, dict) and isinstance(v.get("files"), dict) for v in (read, statute)):
        raise Malformed("'passages_read' and 'passages_statute' must be {files, sha256} objects")
    if read == statute:
        return []
    files, walked = read["files"], statute["files"]
    unread = [name for name in walked if name not in files]
    other = [name for name in walked if name in files and files[name] != walked[name]]
    return [
        f"the retriever read {sum(files.values())} passages of {len(files)} files where the folder holds "
        f"{sum(walked.values())} of {len(walked)} by the statute's walk (contracts.bm25.folder_passages)"
        + (f"; files never read: {first_few(unread)}" if unread else "")
        + (f"; files read into other passages: {first_few(other)}" if other else "")
        + ": a reader that skips a suffix, or splits or strips paragraphs otherwise?"
    ]


def _pairs(values: list[Any], key: str) -> list[tuple[str, str]]:
    """(id, prompt) of each {id, prompt} object of `values`."""
    if not all(isinstance(v, dict) and {type(v.get("id")), type(v.get("prompt"))} == {str} for v in values):
        raise Malformed(f"{key!r} must list {{id, prompt}} objects")
    return [(v["id"], v["prompt"]) for v in values]


def _overlap_problems(stated: Any, found: list[Any], pool: list[Any]) -> list[str]:
    """The items stated as training items against contracts.overlap.items_in_training of the items
    and the pool as read."""
    if not isinstance(stated, dict) or set(stated) != {"by_id", "by_text"}:
        raise Malformed(f"'overlap_stated' is {stated!r}, not a {{by_id, by_text}} object")
    derived = items_in_training(_pairs(found, "overlap_items"), _pairs(pool, "overlap_pool"))
    if stated == derived:
        return []
    return [
        f"the held-out items stated as training items (by id {stated['by_id']}, by prompt text "
        f"{stated['by_text']}) are not those of the items and the pool (by id {derived['by_id']}, by "
        f"prompt text {derived['by_text']}, contracts.overlap): prompts compared with their spacing?"
    ]


def _overlaps(m: Measured, key: str, longest: int) -> list[int]:
    """Per-example verbatim run lengths: counts no longer than the continuation they were found in."""
    values = items(m, key)
    if not all(isinstance(v, int) and not isinstance(v, bool) and 0 <= v <= longest for v in values):
        raise Malformed(f"{key!r} holds values that are not token counts from 0 to {longest}")
    return values


def reproduced(runs: list[int], least: int) -> int:
    """How many examples' longest verbatim run reaches `least` tokens: the count GATE-FT-003 rates."""
    return sum(1 for run in runs if run >= least)


@judges(
    "GATE-FT-003",
    checks={
        "recall": ("continuation_tokens", "tuned_overlaps+", "base_overlaps"),
        # each row was generated by the model handed in for it
        "models": ("models_given", "models_measured"),
        # each run stated is contracts.verbatim's over the continuations kept
        "runs": ("tuned_overlaps", "base_overlaps", "tuned_runs_recomputed", "base_runs_recomputed"),
        # the examples measured are those contracts.recall_draw draws from the stated seed
        "drawn": (
            "examples_seed",
            "examples_n",
            "examples_length",
            "examples_eligible",
            "examples_ranks",
            "examples_drawn",
        ),
        # the text of the ids each example was measured on (prefix and true continuation)
        # starts its --examples record's text as contracts.recall_draw.example_text writes it
        "tokens": ("examples_decoded", "examples_rendered"),
    },
)
def _no_recitation(m: Measured, t: Thresholds) -> list[str]:
    problems = _drawn_problems(m) if has(m, *judges.checks["GATE-FT-003"]["drawn"]) else []
    if has(m, *judges.checks["GATE-FT-003"]["tokens"]):
        problems += _token_problems(items(m, "examples_decoded"), items(m, "examples_rendered"))
    if has(m, *judges.checks["GATE-FT-003"]["runs"]):
        for row, key in (("fine-tuned", "tuned"), ("base", "base")):
            problems += _run_problems(row, items(m, f"{key}_overlaps"), items(m, f"{key}_runs_recomputed"))
    if has(m, "models_given", "models_measured"):
        given, used = m.get("models_given"), m.get("models_measured")
        if not isinstance(given, Mapping) or not isinstance(used, Mapping):
            raise Malformed("'models_given' and 'models_measured' must be maps of rows to weight digests")
        problems += [
            f"the {row} row was generated by a model whose weights are not the {row} model's "
            f"(sha256 {str(used.get(row))[:12]} where it was handed {str(digest)[:12]})"
            for row, digest in sorted(given.items())
            if used.get(row) != digest
        ]
    if has(m, "continuation_tokens", "tuned_overlaps", "base_overlaps"):
        problems += _recitation(m, t)
    return problems


def _drawn_problems(m: Measured) -> list[str]:
    """The examples measured (their ranks among the pool's eligible examples) against the ranks
    contracts.recall_draw draws from the number eligible with the seed the record states."""
    ranks, drawn = items(m, "examples_ranks"), items(m, "examples_drawn")
    if len(ranks) != len(drawn) or not all(isinstance(r, int) and not isinstance(r, bool) for r in ranks):
        raise Malformed("'examples_ranks' must hold one whole rank per example measured")
    seed, eligible = count(m, "examples_seed"), count(m, "examples_eligible")
    expected = drawn_ranks(eligible, count(m, "examples_n"), seed)
    if ranks == expected:
        return []
    return [
        f"the examples measured (pool indices {drawn[:4]}..., ranks {ranks[:4]}... among the {eligible} of "
        f"at least {m.get('examples_length')} tokens) are not the {len(expected)} the stated seed {seed} "
        f"draws ({expected[:4]}..., contracts.recall_draw): the recall describes another set than the "
        "record names (drawn with another seed?)"
    ]


def _token_problems(decoded: list[Any], rendered: list[Any]) -> list[str]:
    """Each example's measured ids, as text, against the start of its record's text
    (contracts.recall_draw.starts_text)."""
    if len(decoded) != len(rendered) or not all(isinstance(d, str) for d in decoded):
        raise Malformed("'examples_decoded' must hold one text per example measured, as 'examples_rendered'")
    off = [i for i, (d, r) in enumerate(zip(decoded, rendered, strict=True)) if not starts_text(d, r)]
    if not off:
        return []
    return [
        f"{len(off)} of {len(decoded)} examples were measured on ids whose text is not the start of their "
        f"--examples record (example {off[0]}: {decoded[off[0]][:40]!r}, the record starts "
        f"{str(rendered[off[0]])[:40]!r}; contracts.recall_draw.example_text): a prompt left out, or "
        "another rendering of the record?"
    ]


def _run_problems(row: str, stated: list[Any], recomputed: list[Any]) -> list[str]:
    """A row's stated runs against those contracts.verbatim finds in its continuations, example for
    example."""
    if len(stated) != len(recomputed):
        return [f"the {row} row states {len(stated)} runs for {len(recomputed)} continuations"]
    off = [(i, a, b) for i, (a, b) in enumerate(zip(stated, recomputed, strict=True)) if a != b]
    if not off:
        return []
    at, said, found = off[0]
    return [
        f"the {row} row states {len(off)} of {len(stated)} examples' longest verbatim run otherwise than "
        f"contracts.verbatim finds it between the continuation kept and the true one (example {at}: "
        f"{said!r} stated, {found!r} found): the run's recurrence reads the wrong cell?"
    ]


def _recitation(m: Measured, t: Thresholds) -> list[str]:
    """The fine-tuned model's share of examples reproduced verbatim against max_rate."""
    continuation = count(m, "continuation_tokens")
    tuned = _overlaps(m, "tuned_overlaps", continuation)
    base = _overlaps(m, "base_overlaps", continuation)
    least = int(t["min_verbatim_tokens"])
    if continuation < least:
        return [
            f"a continuation of {continuation} tokens cannot hold a verbatim run of {least}; generate more"
        ]
    if not tuned:
        return ["no training example was measured"]
    count_tuned = reproduced(tuned, least)
    rate = count_tuned / len(tuned)
    if rate <= t["max_rate"]:
        return []
    return [
        f"the fine-tuned model reproduces {count_tuned} of {len(tuned)} training examples verbatim for "
        f"{least}+ tokens (rate {rate:.3f} > max_rate {t['max_rate']:g}; the base model "
        f"{reproduced(base, least)} of {len(base)}): {MEMORISATION_REMEDIES}"
    ]
