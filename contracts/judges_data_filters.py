"""Judges of the prepare filters' gates (GATE-DATA-012..015): pure functions of the filter report."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from contracts import filter_rules
from contracts.judges import Malformed, Measured, Thresholds, count, flag, has, items, judges, number
from contracts.shingles import minhash_allowance
from contracts.wording import first_few


def _sources(m: Measured) -> Mapping[str, Any]:
    sources = m.get("sources")
    if not isinstance(sources, Mapping):
        raise Malformed(f"'sources' is {sources!r}, not an object of sources")
    for name, row in sources.items():
        if not isinstance(row, Mapping):
            raise Malformed(f"source {name!r} is {row!r}, not an object")
    return sources


def _proven(name: str, filter_name: str, tally: Any) -> str | None:
    """Why a source's canaries do not prove that filter `filter_name` ran over it (None: they do)."""
    if tally is None:
        return f"source {name!r}: filter {filter_name!r} has no canary: nothing shows it ran over the source"
    if not isinstance(tally, Mapping):
        raise Malformed(f"source {name!r}: the canaries of {filter_name!r} are {tally!r}, not an object")
    planted, dropped = count(tally, "planted"), count(tally, "dropped")
    if planted == 0:
        return f"source {name!r}: no canary of filter {filter_name!r} was planted: nothing shows it ran"
    if dropped != planted:
        return (
            f"source {name!r}: filter {filter_name!r} dropped {dropped} of its {planted} canaries: "
            "it did not run over every document of the source"
        )
    return None


@judges("GATE-DATA-012", needs=("canaries+",))
def _leaks_dropped(m: Measured, t: Thresholds) -> list[str]:
    """Every canary that must be dropped is, every near miss is kept; both kinds must be there; and
    once the corpus is read (`sources`), every source the leak filter runs on had its planted
    leaks dropped by it."""
    problems = []
    if "sources" in m:
        for name, row in _sources(m).items():
            held = count(row, "documents_in") > 0
            if held and "leak" in items(row, "filters") and (found := _proven(name, "leak", row.get("leak"))):
                problems.append(found)
    rows = items(m, "canaries")
    kinds = set()
    for row in rows:
        if not isinstance(row, Mapping):
            raise Malformed(f"canary {row!r} is not an object")
        must_drop, dropped = flag(row, "must_drop"), flag(row, "dropped")
        kinds.add(must_drop)
        if must_drop and not dropped:
            problems.append(f"planted leak {row.get('name')!r} was kept")
        elif dropped and not must_drop:
            problems.append(f"near miss {row.get('name')!r} was dropped as {row.get('reason')}")
    if kinds != {True, False}:
        problems.append("the canaries need both planted leaks and near misses")
    return problems


@judges(
    "GATE-DATA-013",
    checks={
        "coverage": ("sources",),
        # rev 3: the dedup filter's drops, judged again apart from its hashes
        "dedup": ("dedup",),
        # rev 5: the measuring filters' drops, measured again and judged by their rules
        "rules": ("rules",),
    },
)
def _every_source_filtered(m: Measured, t: Thresholds) -> list[str]:
    """A source with no filter needs a waiver with a reason; a pre-clean mark is no waiver; each
    filter that ran on a source that held documents is proven by its canaries, all dropped by it;
    the dedup drops re-judged were duplicates (`_dedup_problems`); and the other filters' drops
    measured again are their rules' (`_rule_problems`)."""
    problems = _dedup_problems(m["dedup"], t) if has(m, "dedup") else []
    if has(m, "rules"):
        problems += _rule_problems(m["rules"], int(t["filter_recheck_docs"]))
    if not has(m, "sources"):
        return problems
    for name, row in _sources(m).items():
        canaries = row.get("canaries")
        if not isinstance(canaries, Mapping):
            raise Malformed(f"source {name!r}: 'canaries' is {canaries!r}, not an object of filters")
        if count(row, "documents_in"):
            for filter_name in items(row, "filters"):
                if found := _proven(name, filter_name, canaries.get(filter_name)):
                    problems.append(found)
        filters, waiver, pre_clean = items(row, "filters"), row.get("waiver"), flag(row, "pre_clean")
        if waiver is not None and not (isinstance(waiver, str) and waiver.strip()):
            problems.append(f"source {name!r} is waived without a reason")
        elif not filters and waiver is None:
            marked = " (marked pre-clean, which waives nothing)" if pre_clean else ""
            problems.append(f"source {name!r} was not filtered and has no waiver{marked}")
        elif filters and waiver is not None:
            problems.append(f"source {name!r} is both waived and filtered")
    return problems


def _dedup_problems(dedup: Any, t: Thresholds) -> list[str]:
    """The dedup drops re-judged (stack.data.filters.dedup.Rechecks): the sample is the first
    dedup_recheck_pairs drops of each kind (near ones whose kept document was held); an exact drop's
    sha256 is its kept document's; a near drop's exact Jaccard similarity of byte shingles is at
    least min_jaccard less dedup_error_sds standard errors of MinHash over its permutations, and
    was measured on two different documents, the ones the drop names (`_pair_problems`); a near
    drop is left unjudged as unheld only where the kept documents' bytes exceeded dedup_held_bytes."""
    if not isinstance(dedup, Mapping):
        raise Malformed(f"'dedup' is {dedup!r}, not an object")
    pairs = int(t["dedup_recheck_pairs"])
    exact, near = items(dedup, "exact"), items(dedup, "near")
    exact_drops, near_drops, unheld = (count(dedup, k) for k in ("exact_drops", "near_drops", "unheld"))
    problems = []
    if len(exact) != min(pairs, exact_drops):
        problems.append(f"dedup: {len(exact)} exact drop(s) re-judged of {exact_drops}; sample {pairs}")
    if unheld > near_drops or len(near) != min(pairs, near_drops - unheld):
        problems.append(
            f"dedup: {len(near)} near drop(s) re-judged of {near_drops} ({unheld} unheld); sample {pairs}"
        )
    kept_bytes, limit = count(dedup, "kept_bytes"), int(t["dedup_held_bytes"])
    if unheld and kept_bytes <= limit:
        problems.append(
            f"dedup: {unheld} near drop(s) left unjudged as unheld, but the documents kept while the "
            f"sample was open hold {kept_bytes} bytes, within the {limit} held for re-judging: the "
            "recheck did not find kept documents it held"
        )
    for row in exact:
        if not isinstance(row, Mapping) or row.get("doc") != row.get("kept") or not row.get("doc"):
            problems.append(f"dedup: an exact drop is no copy of the document kept: {row!r}")
    min_jaccard, permutations = number(dedup, "min_jaccard"), count(dedup, "permutations")
    if permutations < 1:
        raise Malformed(f"dedup: 'permutations' is {permutations}")
    floor = min_jaccard - minhash_allowance(min_jaccard, permutations, t["dedup_error_sds"])
    for row in near:
        if not isinstance(row, Mapping):
            raise Malformed(f"dedup: near drop {row!r} is not an object")
        problems += _pair_problems(row)
        jaccard = number(row, "jaccard")
        if not jaccard >= floor:
            problems.append(
                f"dedup: document {str(row.get('doc'))[:12]} was dropped as a near duplicate of "
                f"{str(row.get('kept'))[:12]} but their {count(dedup, 'shingle_bytes')}-byte shingles' "
                f"exact Jaccard similarity is {jaccard:.3f} < {floor:.3f} (min_jaccard {min_jaccard} "
                f"less {t['dedup_error_sds']} standard errors of MinHash over {permutations} permutations)"
            )
    return problems


def _settings(rules: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    settings = rules.get("settings")
    found = settings.get(name) if isinstance(settings, Mapping) else None
    if not isinstance(found, Mapping):
        raise Malformed(f"rules: the settings of {name!r} are {found!r}, not an object")
    return found


def _letters(row: Mapping[str, Any]) -> dict[str, int]:
    letters = row.get("letters")
    if not isinstance(letters, Mapping):
        raise Malformed(f"rules: a drop's letters are {letters!r}, not an object of scripts")
    return {str(name): count(letters, name) for name in letters}


def rule_holds(reason: str, row: Mapping[str, Any], rules: Mapping[str, Any]) -> bool:
    """Whether a drop for `reason`, measured again (`row`), is one its filter's rule makes under the
    settings the record states (contracts.filter_rules)."""
    if reason == "script_mismatch":
        s, held = _settings(rules, "script"), (rules.get("held") or {}).get(row.get("source"))
        if not isinstance(held, list):
            raise Malformed(f"rules: no scripts are stated as held in source {row.get('source')!r}")
        share, least = number(s, "min_share"), count(s, "min_letters")
        return not flag(row, "code") and filter_rules.script_mismatch(_letters(row), held, share, least)
    if reason == "mis_encoded":
        s = _settings(rules, "encoding")
        letters, replaced = sum(_letters(row).values()), count(row, "replaced")
        most, least = number(s, "max_replaced_share"), count(s, "min_letters")
        return filter_rules.mis_encoded(letters, replaced, most, least)
    if reason == "low_diversity":
        s = _settings(rules, "diversity")
        long_enough = count(row, "chars") >= count(s, "min_chars")
        below = number(row, "ratio") < number(s, "min_compression_ratio")
        return long_enough and flag(row, "repeats") and below
    if reason == "oversize":
        s = _settings(rules, "oversize")
        return flag(row, "delimited") and filter_rules.oversize(count(row, "bytes"), count(s, "max_bytes"))
    s = _settings(rules, "leak")
    found = filter_rules.leak_verdict(
        count(row, "headers"),
        count(row, "chars"),
        count(row, "phrases"),
        count(s, "max_headers"),
        number(s, "max_header_weight"),
        count(s, "fingerprint_min_chars"),
    )
    return flag(row, "turn") and found == reason


def _rule_problems(rules: Any, docs: int) -> list[str]:
    """The measuring filters' drops (stack.data.filters.rechecks): the first `docs` of each reason (as
    many as there are, up to that) were measured again, and each is a drop its rule makes."""
    if not isinstance(rules, Mapping) or not isinstance(rules.get("rechecked"), Mapping):
        raise Malformed(f"'rules' is {rules!r}, not an object of drops measured again")
    drops, rechecked = rules.get("drops"), rules["rechecked"]
    if not isinstance(drops, Mapping):
        raise Malformed(f"rules: 'drops' is {drops!r}, not an object of reasons")
    problems = []
    for reason in sorted(set(drops) | set(rechecked)):
        rows, dropped = rechecked.get(reason) or [], count(drops, reason) if reason in drops else 0
        if not isinstance(rows, list) or len(rows) != min(docs, dropped):
            size = len(rows) if isinstance(rows, list) else rows
            problems.append(f"rules: {size} {reason} drop(s) measured again of {dropped}; sample {docs}")
            continue
        wrong = [row for row in rows if not (isinstance(row, Mapping) and rule_holds(reason, row, rules))]
        if wrong:
            problems.append(
                f"rules: {len(wrong)} of the {len(rows)} {reason} drops measured again are no drop the "
                f"filter's rule makes under the settings in force (first: {wrong[0]!r:.400}): the filter "
                "compares with another setting, or measures otherwise than its rule"
            )
    return problems


def _pair_problems(row: Mapping[str, Any]) -> list[str]:
    """A near drop's similarity was measured on two different documents, the ones it names: the
    sha256 of the bytes compared as the drop (`doc_read`) is the drop's own, the filter's verdict's,
    and that of the bytes compared as the kept document (`kept_read`) is the kept document's."""
    doc, kept = row.get("doc"), row.get("kept")
    if not (isinstance(doc, str) and isinstance(kept, str) and doc and kept):
        raise Malformed(f"dedup: near drop {row!r} names no document or no kept document")
    problems = []
    if doc == kept:
        problems.append(f"dedup: document {doc[:12]} is recorded as a near duplicate of itself")
    if (row.get("doc_read"), row.get("kept_read")) != (doc, kept):
        problems.append(
            f"dedup: the near drop {doc[:12]} of {kept[:12]} was re-judged on other bytes (sha256 "
            f"{str(row.get('doc_read'))[:12]} as the drop, {str(row.get('kept_read'))[:12]} as the "
            "kept document): the recheck compared another pair than the one the filter matched"
        )
    return problems


def _reasons(name: str, row: Measured, key: str) -> dict[str, int]:
    found = row.get(key)
    if not isinstance(found, Mapping):
        raise Malformed(f"source {name!r}: {key!r} is {found!r}, not an object of reasons")
    return {reason: count(found, reason) for reason in found}


@judges(
    "GATE-DATA-014",
    checks={
        "counts": ("sources",),
        # rev 3: every input byte of every source is a document's kept or dropped, or framing
        "bytes": ("accounts",),
        # rev 4: every file read below a directory input is one --glob admits (contracts.corpus_inputs)
        "inputs": ("glob", "files_read", "outside_glob"),
        # rev 5: no document of a text file read with --doc-sep holds the separator (contracts.separators)
        "separated": ("doc_sep", "separated_documents", "holding_separator"),
        # rev 5: no piece of a text file read without a separator is over --doc-bytes (contracts.doc_cut)
        "cut": ("doc_bytes", "cut_documents", "over_doc_bytes"),
        # rev 6: every rendered fine-tuning example holds its record's text fields (contracts.record_fields)
        "fields": ("field_examples", "record_fields", "fields_missing"),
        # rev 6: no file was read as UTF-16 or UTF-32 text never made UTF-8 (contracts.text_marks)
        "marks": ("marked_files", "marked_unconverted"),
    },
)
def _drops_add_up(m: Measured, t: Thresholds) -> list[str]:
    """Per source: in = out + Σ dropped, out = the documents written, and the drops by reason are
    the drop log's lines counted again (a reason with no drop may be left out of either); every
    input byte is accounted for (`_bytes_problems`); no file was read that --glob leaves out
    (`_outside_glob`); no document read with --doc-sep holds the separator (`_holding_separator`);
    no piece of a text file read without one is over --doc-bytes (`_over_doc_bytes`); and no rendered
    fine-tuning example lost a text field of its record (`_fields_missing`); and no file was read as
    UTF-16 or UTF-32 text never made UTF-8 (`_marked_unconverted`)."""
    problems = _bytes_problems(m["accounts"]) if has(m, "accounts") else []
    if has(m, "glob", "files_read", "outside_glob"):
        problems += _outside_glob(m)
    if has(m, "doc_sep", "separated_documents", "holding_separator"):
        problems += _holding_separator(m)
    if has(m, "doc_bytes", "cut_documents", "over_doc_bytes"):
        problems += _over_doc_bytes(m)
    if has(m, "field_examples", "record_fields", "fields_missing"):
        problems += _fields_missing(m)
    if has(m, "marked_files", "marked_unconverted"):
        problems += _marked_unconverted(m)
    if not has(m, "sources"):
        return problems
    for name, row in _sources(m).items():
        dropped = _reasons(name, row, "dropped")
        logged = _reasons(name, row, "logged")
        nonzero = {reason: n for reason, n in dropped.items() if n}
        if nonzero != {reason: n for reason, n in logged.items() if n}:
            problems.append(f"source {name!r}: the report drops {nonzero} but the drop log holds {logged}")
        total = sum(dropped.values())
        documents_in, documents_out = count(row, "documents_in"), count(row, "documents_out")
        if documents_in != documents_out + total:
            problems.append(
                f"source {name!r}: {documents_in} document(s) in ≠ {documents_out} out + {total} dropped"
            )
        written = count(row, "written")
        if written != documents_out:
            problems.append(f"source {name!r}: {documents_out} document(s) kept but {written} written")
    return problems


def _strays(m: Measured, key: str, total: str, what: Callable[[], str]) -> list[str]:
    """One problem naming `m[key]`'s entries, of which none may be: how many of `m[total]`, what
    they are (`what`, read only when there are some) and the first few."""
    found = items(m, key)
    return [f"{len(found)} of the {count(m, total)} {what()}: {first_few(found)}"] if found else []


def _outside_glob(m: Measured) -> list[str]:
    """The files read below a directory input that the --glob `glob` does not admit (none may be)."""
    glob = m.get("glob")
    if glob is not None and not isinstance(glob, str):
        raise Malformed(f"'glob' is {glob!r}, not a pattern or null")
    return _strays(
        m,
        "outside_glob",
        "files_read",
        lambda: f"file(s) read lie below an input but --glob {glob!r} does not admit them",
    )


def _holding_separator(m: Measured) -> list[str]:
    """The documents of text files read with --doc-sep that still hold the separator (none may)."""
    return _strays(
        m,
        "holding_separator",
        "separated_documents",
        lambda: (
            f"document(s) read from text with --doc-sep {m.get('doc_sep')!r} still hold the separator "
            "(it did not reach the reader?)"
        ),
    )


def _fields_missing(m: Measured) -> list[str]:
    """The text fields of fine-tuning records their rendered examples do not hold (none may be)."""
    return _strays(
        m,
        "fields_missing",
        "record_fields",
        lambda: (
            f"text field(s) of {count(m, 'field_examples')} rendered example(s) are not in the example's "
            "text (lost by the shape reader?)"
        ),
    )


def _marked_unconverted(m: Measured) -> list[str]:
    """The files read (or skipped as holding no text) in UTF-16 or UTF-32 with its mark (none may be)."""
    return _strays(
        m,
        "marked_unconverted",
        "marked_files",
        lambda: (
            "file(s) read are UTF-16 or UTF-32 text with its byte-order mark, never made UTF-8 (skipped as "
            "no text, or read as garbage)"
        ),
    )


def _over_doc_bytes(m: Measured) -> list[str]:
    """The pieces of text files read without a separator longer than --doc-bytes allows (none may be)."""
    return _strays(
        m,
        "over_doc_bytes",
        "cut_documents",
        lambda: (
            f"piece(s) of text read without a separator are longer than --doc-bytes {m.get('doc_bytes')!r} "
            "allows (it did not reach the reader?)"
        ),
    )


def _named_counts(name: str, row: Mapping[str, Any], key: str) -> dict[str, int]:
    found = row.get(key)
    if not isinstance(found, Mapping):
        raise Malformed(f"account {name!r}: {key!r} is {found!r}, not an object of byte counts")
    return {str(what): count(found, what) for what in found}


def unaccounted(account: Mapping[str, Any], name: str = "") -> int:
    """The input bytes of one source's account that went nowhere it names (negative: more bytes
    accounted for than were read): Σ input − kept − Σ dropped − Σ framing."""
    read = sum(_named_counts(name, account, "input_bytes").values())
    dropped = sum(_named_counts(name, account, "dropped_bytes").values())
    framing = sum(_named_counts(name, account, "framing_bytes").values())
    return read - count(account, "kept_bytes") - dropped - framing


def _bytes_problems(accounts: Any) -> list[str]:
    """Per source, the input bytes read (stack.data.accounting) against the documents kept and
    dropped and the framing removed; and no document's text other than the bytes it was read from."""
    if not isinstance(accounts, Mapping):
        raise Malformed(f"'accounts' is {accounts!r}, not an object of sources")
    problems = []
    for name, account in accounts.items():
        if not isinstance(account, Mapping):
            raise Malformed(f"account {name!r} is {account!r}, not an object")
        if missing := unaccounted(account, name):
            where = "went nowhere the books name" if missing > 0 else "were accounted for beyond those read"
            problems.append(
                f"source {name!r}: {abs(missing):,} input byte(s) {where}: read "
                f"{account.get('input_bytes')}, kept {account.get('kept_bytes')}, dropped "
                f"{account.get('dropped_bytes')}, framing {account.get('framing_bytes')} (a document cut "
                "short, a tail never read, a record lost between the reader and the writer?)"
            )
        if altered := count(account, "altered_documents"):
            problems.append(
                f"source {name!r}: {altered} document(s) are not the bytes they were read from, though "
                "no line end or byte was normalised: cut or padded on their way to the filters"
            )
    return problems


@judges("GATE-DATA-015", needs=("sources",))
def _drop_share(m: Measured, t: Thresholds) -> list[str]:
    """No source loses more than max_source_drop_share of its documents to the filters; the problem
    names the reasons, largest first, and the first example of the largest."""
    problems = []
    for name, row in _sources(m).items():
        documents_in = count(row, "documents_in")
        dropped = _reasons(name, row, "dropped")
        lost = sum(dropped.values())
        if documents_in and lost / documents_in > t["max_source_drop_share"]:
            ranked = sorted(dropped.items(), key=lambda item: (-item[1], item[0]))
            reasons = ", ".join(f"{reason} {n:,}" for reason, n in ranked if n)
            examples = row.get("examples")
            example = examples.get(ranked[0][0]) if isinstance(examples, Mapping) else None
            problems.append(
                f"source {name!r} lost {lost:,} of {documents_in:,} document(s) "
                f"({100 * lost / documents_in:.1f}% > {100 * t['max_source_drop_share']:.0f}%) to the "
                f"filters: {reasons}" + (f"; e.g. {example}" if example else "")
            )
    return problems
