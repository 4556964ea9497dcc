"""The judges of the data gates (spec/gates/data.yaml): the reader, batch order, shards, the
held-out split, the tokenizer, the mixture policies and the prepare filters.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from typing import Any

from contracts import filter_rules
from contracts.curriculum import eligible_arms, static_shares
from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, flag, has, items, number
from contracts.rewards import REWARDS, exp3_log_weights, exp3_probabilities
from contracts.shingles import minhash_allowance
from contracts.split import share_tail
from contracts.wording import first_few

judges = Judges()


@judges(
    "GATE-DATA-001",
    checks={
        "windows": ("epoch", "step_in_epoch", "steps_per_epoch", "follows", "shape_ok", "windows_mismatched"),
        "stream": ("served_batches", "taken_batches"),
        "plan": ("plan_windows", "quota_windows", "windows_off_quota", "sources_off_quota"),
        # the windows the reader numbered cover every target of every shard but its tail
        "coverage": ("covered_shards", "uncovered_fewest", "uncovered_most", "window_targets"),
        # the batch_sha256 a step's line logs is the fingerprint of its planned windows
        "fingerprint": ("logged_batch_sha256", "planned_batch_sha256", "fingerprinted_step"),
    },
)
def _reader_batches(m: Measured, t: Thresholds) -> list[str]:
    """The batches are the plan's: each epoch's plan a permutation of the sources' quotas, each
    batch the planned windows of its step in every table it holds (a chunk as gathered, or a batch
    as handed to the model), and, where the loop takes one, the reader's count of batches served
    is the run's count of batches taken (a stream restarted or skipped serves its own plan), and
    the fingerprint its step's line logs is that of the step's planned windows."""
    problems = []
    if has(m, *judges.checks["GATE-DATA-001"]["fingerprint"]):
        problems += _fingerprint_problems(m)
    if has(m, "plan_windows", "quota_windows", "windows_off_quota", "sources_off_quota"):
        problems += _plan_problems(m)
    if has(m, "served_batches", "taken_batches"):
        served, taken = count(m, "served_batches"), count(m, "taken_batches")
        if served != taken:
            problems.append(
                f"the reader has served {served} batch(es) where the run has taken {taken}: its stream "
                "restarted or skipped (a resume that lost the reader's place?)"
            )
    if has(m, "epoch", "step_in_epoch", "steps_per_epoch", "follows", "shape_ok", "windows_mismatched"):
        problems += _window_problems(m)
    if has(m, "covered_shards", "uncovered_fewest", "uncovered_most", "window_targets"):
        fewest, most = number(m, "uncovered_fewest"), number(m, "uncovered_most")
        targets = count(m, "window_targets")
        if fewest < 0 or most >= targets:
            problems.append(
                f"the reader's windows leave {fewest:g} to {most:g} targets of a shard uncovered (a window "
                f"holds {targets}; fewer than that at each shard's end, none beyond it): windows dropped "
                "or numbered past the shard"
            )
    return problems


def _fingerprint_problems(m: Measured) -> list[str]:
    """A step line's batch_sha256 against the fingerprint of the windows the plan says it read."""
    logged, planned = m.get("logged_batch_sha256"), m.get("planned_batch_sha256")
    if not isinstance(logged, str) or not isinstance(planned, str):
        raise Malformed("logged_batch_sha256 and planned_batch_sha256 must be strings")
    if logged == planned:
        return []
    return [
        f"step {count(m, 'fingerprinted_step')} logs batch_sha256 {logged[:12]}, but its planned windows "
        f"(all T+1 columns, every rank's rows) hash to {planned[:12]}: the fingerprint is not of the batch "
        "served (taken over part of it, one rank's rows, or another step's?)"
    ]


def _plan_problems(m: Measured) -> list[str]:
    """An epoch plan against its quotas: its length, and each window's count within its source's."""
    planned, quota, off = count(m, "plan_windows"), count(m, "quota_windows"), count(m, "windows_off_quota")
    sources = items(m, "sources_off_quota")
    problems = []
    if planned != quota:
        problems.append(f"the epoch plan holds {planned} windows where the sources' quotas sum to {quota}")
    if off or sources:
        problems.append(
            f"the epoch plan is not a permutation of the sources' quotas: {off} window(s) planned more "
            f"or fewer times than their source's quota allows (sources off quota: {sources}); "
            "drawn with replacement?"
        )
    return problems


def _window_problems(m: Measured) -> list[str]:
    """A chunk or a served batch against the plan: its place in the epoch, its shape, its windows."""
    epoch, first, per_epoch = count(m, "epoch"), count(m, "step_in_epoch"), count(m, "steps_per_epoch")
    problems = []
    if first >= per_epoch:
        problems.append(f"batch {first} of epoch {epoch} is past the epoch's {per_epoch} steps")
    if not flag(m, "follows"):
        problems.append(f"batch {first} of epoch {epoch} does not follow the last one served")
    if not flag(m, "shape_ok"):
        problems.append("the batches are not int64 windows of the reader's shape")
    if mismatched := count(m, "windows_mismatched"):
        by_table = m.get("mismatched_by_table") or {}
        problems.append(
            f"{mismatched} window(s) differ from the planned windows of the shards (a placeholder?)"
            + (f"; by table: {by_table}" if by_table else "")
        )
    return problems


@judges(
    "GATE-DATA-002",
    checks={
        "restore": ("reweighted", "restored_next_sha256", "saved_next_sha256"),
        "shuffled": ("plan_windows", "order_z"),
        "reordered": ("repeat_z",),
        # the plan is the one contracts.plan defines for its seed and epoch, and a source of
        # fractional weight draws its windows afresh each epoch
        "defined": ("plan_seed", "plan_epoch", "plan_sha256", "defined_sha256"),
        "redrawn": ("subsamples+",),
    },
)
def _batch_order(m: Measured, t: Thresholds) -> list[str]:
    """A restored reader continues the saved stream; every epoch plan is the one its seed and epoch
    define, shuffled, and otherwise than the epoch before, as far as a uniform shuffle of its
    windows and a fresh draw of a source's subsample can show."""
    problems = []
    if has(m, "reweighted") and not flag(m, "reweighted"):  # reweighted: changed on purpose
        restored, saved = m.get("restored_next_sha256"), m.get("saved_next_sha256")
        if not isinstance(restored, str) or not isinstance(saved, str):
            raise Malformed("restored_next_sha256 and saved_next_sha256 must be strings")
        if restored != saved:
            problems.append("the restored reader would not continue the saved stream")
    if has(m, *judges.checks["GATE-DATA-002"]["defined"]):
        problems += _defined_problems(m)
    for key, what in (
        ("order_z", "in corpus order (consecutive windows repeat a window or take the next)"),
        ("repeat_z", "in the previous epoch's order (the same window at the same position)"),
    ):
        if has(m, key) and not number(m, key) <= t["max_order_z"]:
            problems.append(
                f"the epoch plan of {count(m, 'plan_windows')} windows is {number(m, key):.3g} standard "
                f"deviations more often {what} than a shuffle of its windows (at most {t['max_order_z']:g}): "
                "the batches are not shuffled"
            )
    if has(m, "subsamples"):
        problems += _redraw_problems(items(m, "subsamples"), t["max_overlap_z"])
    return problems


def _defined_problems(m: Measured) -> list[str]:
    """The plan served against the plan its seed and epoch define (contracts.plan), by digest."""
    served, defined = m.get("plan_sha256"), m.get("defined_sha256")
    if not isinstance(served, str) or not isinstance(defined, str):
        raise Malformed("plan_sha256 and defined_sha256 must be strings")
    if served == defined:
        return []
    return [
        f"the plan of epoch {count(m, 'plan_epoch')} is not the one seed {count(m, 'plan_seed')} defines for "
        f"it (sha256 {served[:12]} where the definition gives {defined[:12]}): the plan ignores the seed "
        "or the epoch, or was drawn otherwise"
    ]


def overlap_z(windows: int, drawn: int, drawn_before: int, kept: int) -> float:
    """How far `kept`, the windows two epochs' draws of `drawn` and `drawn_before` of a source's
    `windows` share, lies above what two independent draws share on average, drawn·drawn_before /
    windows, in the hypergeometric standard deviations of that count, a deviation counted as at
    least one window (a count's spread below one window says nothing; 0 at or below the mean)."""
    if windows < 2:
        return 0.0
    share = drawn_before / windows
    expected = drawn * share
    variance = drawn * share * (1.0 - share) * (windows - drawn) / (windows - 1)
    return max(kept - expected, 0.0) / max(math.sqrt(variance), 1.0)


def _redraw_problems(sources: list[Any], limit: float) -> list[str]:
    """Each fractional source's windows drawn in two consecutive epochs, against fresh draws."""
    problems = []
    for source in sources:
        if not isinstance(source, Mapping):
            raise Malformed(f"a subsample is {source!r}, not an object")
        windows, drawn = count(source, "windows"), count(source, "drawn")
        before, kept = count(source, "drawn_before"), count(source, "kept")
        z = overlap_z(windows, drawn, before, kept)
        if not z <= limit:
            problems.append(
                f"source {source.get('source')!r} drew {kept} of the same {drawn} of its {windows} windows "
                f"as the epoch before, {z:.3g} standard deviations more than fresh draws share (at most "
                f"{limit:g}): it serves the same subsample every epoch"
            )
    return problems


@judges("GATE-DATA-003", needs=("mismatched_files", "first_problem"))
def _shards_match(m: Measured, t: Thresholds) -> list[str]:
    bad = count(m, "mismatched_files")
    if not bad:
        return []
    first = m.get("first_problem")
    return [f"{bad} file(s) do not match the manifest" + (f"; first: {first}" if first else "")]


@judges("GATE-DATA-004", needs=("repeats", "tokens_per_parameter"))
def _adequacy(m: Measured, t: Thresholds) -> list[str]:
    """Repeats for every run; tokens per parameter, Chinchilla's pretraining ratio, only for a run
    that started from initialised weights (`start_from` "checkpoint", a fine-tune, is not
    held to it; a record without the key predates it and started from a seed)."""
    repeats, per_param = number(m, "repeats"), number(m, "tokens_per_parameter")
    start = m.get("start_from", "seed")
    if start not in ("seed", "checkpoint"):
        raise Malformed(f"'start_from' is {start!r}, not 'seed' or 'checkpoint'")
    problems = []
    if not repeats <= t["max_repeats"]:
        problems.append(f"the data would be repeated {repeats:.3g} times (limit {t['max_repeats']})")
    if start == "seed" and not per_param >= t["min_tokens_per_parameter"]:
        problems.append(
            f"{per_param:.3g} training tokens per parameter (at least {t['min_tokens_per_parameter']} wanted)"
        )
    return problems


@judges(
    "GATE-DATA-005",
    checks={
        "documents": ("shared_documents",),
        "heldout": ("heldout_windows", "heldout_windows_mismatched"),
        "spread": ("split_windows", "first_id", "last_id", "max_gap"),
        "read": ("set_windows", "read_windows", "read_windows_mismatched"),
        "examples": ("train_examples", "train_examples_elsewhere"),
        # every document is written to the split contracts.split's rule gives it, and the
        # share held out is one the asked val_fraction draws
        "assigned": ("assigned_documents", "documents_off_rule"),
        "share": ("split_documents", "heldout_documents", "asked_val_fraction"),
        # no held-out document or example is stored as a train one, keyed as the shards
        # store it apart from the identity the split was drawn by
        "stored": ("stored_documents", "stored_heldout", "stored_shared"),
        # the share is judged on the distinct contents the index holds (copies are one draw)
        "contents": ("split_contents", "heldout_contents"),
    },
)
def _disjoint(m: Measured, t: Thresholds) -> list[str]:
    """No document in both splits (the index), each written to the split the rule gives it and as
    many held out as the asked share draws (the prepare); the held-out batches a run evaluates
    are the held-out split's windows (the batches, against the split's shards), spread over all
    of it, and read as they are (a lens comparison's forwards, against the set); and examples
    drawn as train documents begin documents of the train split."""
    problems = _spread_problems(m) if has(m, "split_windows", "first_id", "last_id", "max_gap") else []
    if has(m, *judges.checks["GATE-DATA-005"]["assigned"]) and (off := count(m, "documents_off_rule")):
        problems.append(
            f"{off} of the {count(m, 'assigned_documents')} documents were written to another split than "
            "the held-out rule (contracts.split) gives them for the seed and val_fraction"
        )
    if has(m, *judges.checks["GATE-DATA-005"]["share"]):
        problems += _share_problems(m, t["min_split_tail_p"])
    if has(m, *judges.checks["GATE-DATA-005"]["stored"]):
        problems += _stored_problems(m)
    if has(m, "set_windows", "read_windows", "read_windows_mismatched"):
        problems += _set_read_problems(m)
    if has(m, "train_examples", "train_examples_elsewhere") and (
        elsewhere := count(m, "train_examples_elsewhere")
    ):
        problems.append(
            f"{elsewhere} of the {count(m, 'train_examples')} examples drawn as train documents begin no "
            "document of the train split (drawn from the held-out split?)"
        )
    if has(m, "shared_documents") and (shared := count(m, "shared_documents")):
        problems.append(f"{shared} document(s) are in both train and held-out")
    if has(m, "heldout_windows", "heldout_windows_mismatched"):
        windows, mismatched = count(m, "heldout_windows"), count(m, "heldout_windows_mismatched")
        if not windows:
            problems.append("the held-out set holds no window")
        if mismatched:
            by_table = m.get("mismatched_by_table") or {}
            problems.append(
                f"{mismatched} of the {windows} held-out windows are not the held-out split's windows at "
                "their planned ids (read from the train split? labels of other windows?)"
                + (f"; by table: {by_table}" if by_table else "")
            )
    return problems


def _stored_problems(m: Measured) -> list[str]:
    """The splits as stored: no held-out document's stored form is a train one's, and (with the
    manifest's counts) every document written was keyed."""
    stored, heldout, shared = (count(m, k) for k in ("stored_documents", "stored_heldout", "stored_shared"))
    problems = []
    if shared:
        problems.append(
            f"{shared} of the {heldout} held-out documents (examples) are stored exactly as a train one: "
            "the split was drawn by an identity that is not the content's (a location, a counter?)"
        )
    if heldout > stored or shared > heldout:
        problems.append(f"{shared} shared and {heldout} held out of {stored} stored documents do not add up")
    if has(m, "split_documents") and (listed := count(m, "split_documents")) != stored:
        problems.append(f"{stored} documents were keyed as stored, where the manifest counts {listed}")
    return problems


def _set_read_problems(m: Measured) -> list[str]:
    """Every window of the held-out set read, once, where the set has it, and nothing else."""
    windows, read = count(m, "set_windows"), count(m, "read_windows")
    mismatched = count(m, "read_windows_mismatched")
    if windows and read == windows and not mismatched:
        return []
    return [
        f"the forwards read {read} window(s), {mismatched} of them not the held-out set's window at "
        f"their place, where the set holds {windows}: the comparison read other text than the held-out set"
    ]


def _share_problems(m: Measured, least: float) -> list[str]:
    """The distinct contents held out (the documents, for a record without them) against
    Binomial(contents, val_fraction), by its exact two-sided tail: the split draws once per content."""
    documents, heldout = count(m, "split_documents"), count(m, "heldout_documents")
    asked = number(m, "asked_val_fraction")
    if not has(m, *judges.checks["GATE-DATA-005"]["contents"]):
        unit, copies = "documents", ""
    else:
        contents, held = count(m, "split_contents"), count(m, "heldout_contents")
        if contents > documents or held > heldout or contents - held > documents - heldout:
            return [
                f"{contents} distinct contents ({held} held out) do not add up with {documents} documents "
                f"({heldout} held out)"
            ]
        unit, copies = "distinct contents", f" (of {documents} documents, copies counted once)"
        documents, heldout = contents, held
    tail = share_tail(documents, heldout, asked)
    if tail >= least:
        return []
    return [
        f"{heldout} of {documents} {unit}{copies} are held out ({heldout / max(documents, 1):.3g}) where "
        f"val_fraction {asked:g} draws about {documents * asked:.3g}: a count that far off has two-sided "
        f"probability {tail:.3g} (at least {least:g}); the split holds another share than it states"
    ]


def _spread_problems(m: Measured) -> list[str]:
    """The n held-out windows, by id in order, leave no run of ⌈W/n⌉ or more of the split's W
    windows out: none before the first, after the last, or between two consecutive ones."""
    windows, total = count(m, "heldout_windows"), count(m, "split_windows")
    if not windows:
        return []
    spacing = -(-total // windows)
    runs = {
        "before the first": count(m, "first_id"),
        "after the last": total - 1 - count(m, "last_id"),
        "between two consecutive ones": count(m, "max_gap") - 1,
    }
    return [
        f"{left} of the held-out split's {total} windows lie {where} of the {windows} held-out windows "
        f"(fewer than {spacing} when spread evenly): the held-out set is not spread over the split"
        for where, left in runs.items()
        if not 0 <= left < spacing
    ]


@judges("GATE-DATA-006", needs=("excluded_windows", "by_source"))
def _excluded(m: Measured, t: Thresholds) -> list[str]:
    hits = count(m, "excluded_windows")
    return [f"{hits} window(s) of excluded sources would be sampled: {m.get('by_source')}"] if hits else []


# The tokenizers the stack trains or defines: lossless by construction (stack.data.tokenizer).
OWN_TOKENIZERS = ("byte", "bpe")


@judges(
    "GATE-DATA-007",
    checks={
        "identity": (
            "data_tokenizer_identity",
            "model_tokenizer_identity",
            "data_probe_sha256",
            "model_probe_sha256",
            "data_vocab_size",
            "model_vocab",
        ),
        # the documents prepare writes decode to their text
        "round_trip": (
            "tokenizer",
            "gives_back_probe",
            "round_trip_documents",
            "round_trip_failed",
            "heldout_documents",
            "heldout_checked",
            "round_trip_rate",
            "input_bytes",
        ),
        # the units a BPE trained by prepare read are contracts.bpe_sample's draw
        "sample": (
            "sample_seed",
            "sample_budget",
            "sample_offered_units",
            "sample_read_units",
            "sample_sha256",
            "sample_rule_units",
            "sample_rule_sha256",
        ),
    },
)
def _same_tokenizer(m: Measured, t: Thresholds) -> list[str]:
    """Identity by what the tokenizer does, witnessed twice: its canonical identity and its ids of a
    fixed probe text. Not by size (two tokenizers of one size map ids to other strings), not by
    the bytes of one file (one tokenizer is saved in several formats). And the documents a prepare
    wrote decode to their text (`_round_trip_problems`)."""
    problems = _round_trip_problems(m, t["round_trip_bytes"]) if has(m, "round_trip_documents") else []
    if has(m, "sample_sha256"):
        problems += _bpe_sample_problems(m)
    if not has(m, "data_tokenizer_identity"):
        return problems
    keys = [f"{side}_{what}" for what in ("tokenizer_identity", "probe_sha256") for side in ("data", "model")]
    if not all(isinstance(m.get(key), str) for key in keys):
        raise Malformed(f"{', '.join(keys)} must be strings")
    data_vocab, model_vocab = count(m, "data_vocab_size"), count(m, "model_vocab")
    problems = []
    if m["data_tokenizer_identity"] != m["model_tokenizer_identity"]:
        problems.append(
            f"the data's tokenizer ({m.get('data_tokenizer')} {str(m['data_tokenizer_identity'])[:12]}) is "
            f"not the one the model learned its weights with ({m.get('model_tokenizer')} "
            f"{str(m['model_tokenizer_identity'])[:12]})"
        )
    if m["data_probe_sha256"] != m["model_probe_sha256"]:
        problems.append("the data's tokenizer encodes the probe text to other ids than the model's")
    if data_vocab > model_vocab:
        problems.append(
            f"the data's tokenizer has {data_vocab} ids, the model's embedding {model_vocab} rows"
        )
    return problems


def _bpe_sample_problems(m: Measured) -> list[str]:
    """The units the BPE read, in the order read (their digest), are those contracts.bpe_sample draws
    from every unit offered under the run's seed and budget."""
    if m["sample_sha256"] == m["sample_rule_sha256"]:
        return []
    return [
        f"the BPE read {count(m, 'sample_read_units')} unit(s) of the {count(m, 'sample_offered_units')} "
        f"offered (sample {str(m['sample_sha256'])[:12]}), but the sample --seed {count(m, 'sample_seed')} "
        f"and --bpe-sample {count(m, 'sample_budget')} draw (contracts.bpe_sample) is "
        f"{count(m, 'sample_rule_units')} unit(s) ({str(m['sample_rule_sha256'])[:12]}): a draw that "
        "ignores the seed, keeps past the budget, or a trainer that reads them in another order"
    ]


def _round_trip_problems(m: Measured, budget: float) -> list[str]:
    """Every held-out document was decoded again, the rest at the share round_trip_bytes allows;
    and, for a tokenizer that promises the round trip (the stack's own, or one that gives back the
    probe text), every one checked decodes to its text."""
    name, gives_back = m.get("tokenizer"), flag(m, "gives_back_probe")
    checked, failed = count(m, "round_trip_documents"), count(m, "round_trip_failed")
    heldout, heldout_checked = count(m, "heldout_documents"), count(m, "heldout_checked")
    rate, corpus = number(m, "round_trip_rate"), count(m, "input_bytes")
    problems = []
    if failed > checked or heldout_checked > min(heldout, checked):
        problems.append(f"{failed} failed and {heldout_checked} held out of {checked} checked do not add up")
    if failed and (name in OWN_TOKENIZERS or gives_back):
        problems.append(
            f"{failed} of the {checked} documents checked do not decode to their text with the {name} "
            f"tokenizer (first: {m.get('first_failed')}): it stores other text than the corpus (a prefix "
            "space, a character lost?)"
        )
    if heldout_checked != heldout:
        problems.append(f"{heldout_checked} of the {heldout} held-out documents were decoded again, not all")
    least = min(1.0, budget / max(corpus, 1))
    if not rate >= least:
        problems.append(
            f"documents were drawn for the round trip at {rate:.3g}, below {least:.3g}: round_trip_bytes "
            f"{budget:g} over the corpus's {corpus} bytes"
        )
    return problems


def _shares(m: Measured, key: str) -> dict[str, float]:
    """A map of source → number."""
    value = m.get(key)
    if not isinstance(value, Mapping):
        raise Malformed(f"{key!r} is {value!r}, not a map of sources to numbers")
    return {str(name): number(value, name) for name in value}


@judges(
    "GATE-DATA-008",
    checks={
        "shares": ("windows", "served", "expected_share", "caps", "floors", "excluded"),
        # a bandit is paid its reward's rule on each arm's own held-out windows
        "paid": ("reward", "losses", "before", "reference", "rewards", "windows_read", "windows_stated"),
        # its log-weights step by EXP3's rule; the probabilities it asks for are EXP3's
        "stepped": ("log_weights_before", "log_weights_after", "eta"),
        "wanted": (
            "wanted_step",
            "wanted_warmup",
            "wanted_arms",
            "wanted_phase_weights",
            "wanted_phase_caps",
            "wanted_eligible",
            "wanted_pulled",
            "wanted_log_weights",
            "wanted_gamma",
            "wanted_shares",
        ),
        # a bandit's pulls are the windows served of each arm since it began
        "tallied": ("tallied_pulls", "tallied_served"),
        # a static policy serves contracts.curriculum.static_shares of its phase and the manifest
        "static": (
            "static_weights",
            "static_caps",
            "static_floors",
            "static_excluded",
            "static_windows",
            "static_shares",
        ),
    },
)
def _realised_shares(m: Measured, t: Thresholds) -> list[str]:
    """Each source's realised share within share_sigmas multinomial standard errors (plus
    share_slack_windows windows) of the policy's, inside [floor, cap] by the same tolerance;
    an excluded source has neither a share nor a window; a bandit's rewards against its rule, its
    statistics against the policy's books; a static policy's shares against its rule."""
    problems = _bandit_paid(m) if has(m, *judges.checks["GATE-DATA-008"]["paid"]) else []
    if has(m, *judges.checks["GATE-DATA-008"]["shares"]):
        problems += _shares_follow(m, t)
    if has(m, *judges.checks["GATE-DATA-008"]["stepped"], "rewards"):
        problems += _bandit_stepped(m, t)
    if has(m, *judges.checks["GATE-DATA-008"]["wanted"]):
        problems += _bandit_wanted(m, t)
    if has(m, *judges.checks["GATE-DATA-008"]["tallied"]):
        problems += _bandit_tallied(m)
    if has(m, *judges.checks["GATE-DATA-008"]["static"]):
        problems += _static_shares(m, t)
    return problems


def _bandit_tallied(m: Measured) -> list[str]:
    """The pulls the bandit counts against the windows of each arm the reader served since it began,
    exactly: a count assigned where it accumulates keeps only the last step's, and the bandit never
    sees every arm pulled."""
    pulls, served = m.get("tallied_pulls"), m.get("tallied_served")
    if not (isinstance(pulls, Mapping) and isinstance(served, Mapping)):
        raise Malformed("'tallied_pulls' and 'tallied_served' must map each arm to a count")
    off = {arm: (pulls.get(arm), served.get(arm)) for arm in sorted(set(pulls) | set(served))}
    off = {arm: pair for arm, pair in off.items() if pair[0] != pair[1]}
    if not off:
        return []
    shown = "; ".join(f"{arm}: {have!r} pulls, {want!r} windows served" for arm, (have, want) in off.items())
    return [f"the bandit's pulls are not the windows served of each arm since it began ({shown})"]


def _static_shares(m: Measured, t: Thresholds) -> list[str]:
    """The shares a static policy served against contracts.curriculum.static_shares: each source's
    weight times its windows in the manifest's shards, over their sum, projected onto the phase's
    caps and floors; each within static_rtol of the rule's (absolute below 1)."""
    windows = {name: count(m["static_windows"], name) for name in _shares(m, "static_windows")}
    excluded = set(map(str, items(m, "static_excluded")))
    due = static_shares(
        _shares(m, "static_weights"),
        windows,
        excluded,
        _shares(m, "static_caps"),
        _shares(m, "static_floors"),
    )
    served = _shares(m, "static_shares")
    off = [
        name
        for name in sorted(set(due) | set(served))
        if not abs(served.get(name, 0.0) - due.get(name, 0.0))
        <= t["static_rtol"] * max(due.get(name, 0.0), 1.0)
    ]
    if not off:
        return []
    shown = ", ".join(f"{name} {served.get(name, 0.0):.4g} for {due.get(name, 0.0):.4g}" for name in off)
    return [
        f"the static policy serves {shown}: not each source's weight times its natural share of the "
        "manifest's windows, projected onto the phase's caps and floors (contracts.curriculum.static_shares)"
    ]


def _off(have: float | None, want: float, t: Thresholds) -> bool:
    return have is None or not abs(have - want) <= t["bandit_rtol"] * max(abs(want), 1.0)


def _bandit_stepped(m: Measured, t: Thresholds) -> list[str]:
    """The log-weights the update left against EXP3's step (contracts.rewards) of those before it by
    the rewards paid and η."""
    before, after = _shares(m, "log_weights_before"), _shares(m, "log_weights_after")
    due = exp3_log_weights(before, _shares(m, "rewards"), number(m, "eta"))
    return [
        f"arm {arm}'s log-weight went from {before.get(arm)!r} to {after.get(arm)!r}; EXP3's step by its "
        f"reward {m['rewards'].get(arm)!r} at η {m.get('eta')!r} gives {want!r}"
        for arm, want in sorted(due.items())
        if _off(after.get(arm), want, t)
    ]


def _bandit_wanted(m: Measured, t: Thresholds) -> list[str]:
    """The arms the bandit chose among against those the phase's configured weights and caps leave
    (contracts.curriculum.eligible_arms), and the probabilities it asked for against EXP3's of its
    state: uniform over the eligible arms during the warmup and until each has been pulled,
    (1 − γ)·softmax + γ/K after."""
    eligible = [str(arm) for arm in items(m, "wanted_eligible")]
    wanted, pulled = _shares(m, "wanted_shares"), set(map(str, items(m, "wanted_pulled")))
    arms = [str(arm) for arm in items(m, "wanted_arms")]
    due_eligible = eligible_arms(arms, _shares(m, "wanted_phase_weights"), _shares(m, "wanted_phase_caps"))
    if sorted(eligible) != due_eligible:
        return [
            f"at step {count(m, 'wanted_step')} the bandit chose among {sorted(eligible)}; the phase's "
            f"weights and caps leave {due_eligible} of its arms (a weight or cap of 0 takes an arm out)"
        ]
    if not eligible:
        return [] if not wanted else [f"the bandit asked for {wanted} with no eligible arm"]
    exploiting = count(m, "wanted_step") > count(m, "wanted_warmup") and pulled >= set(eligible)
    due = (
        exp3_probabilities(_shares(m, "wanted_log_weights"), eligible, number(m, "wanted_gamma"))
        if exploiting
        else dict.fromkeys(eligible, 1.0 / len(eligible))
    )
    off = [arm for arm in eligible if _off(wanted.get(arm), due[arm], t)]
    if not off and set(wanted) <= set(eligible):
        return []
    how = "(1 − γ)·softmax(log-weights) + γ/K" if exploiting else "uniform over the eligible arms"
    return [f"at step {count(m, 'wanted_step')} the bandit asked for {wanted}; EXP3 wants {due} ({how})"]


def _shares_follow(m: Measured, t: Thresholds) -> list[str]:
    """The realised shares of the window against the policy's, its caps, floors and exclusions."""
    n = count(m, "windows")
    served = {name: count(m["served"], name) for name in _shares(m, "served")}
    expected, caps, floors = _shares(m, "expected_share"), _shares(m, "caps"), _shares(m, "floors")
    excluded = set(map(str, items(m, "excluded")))
    problems = [
        f"excluded source {name} has policy share {expected.get(name, 0.0):.4g} and {served.get(name, 0)} "
        "window(s) served"
        for name in sorted(excluded)
        if expected.get(name, 0.0) > 0 or served.get(name, 0) > 0
    ]
    if n == 0:
        return problems
    for name in sorted(set(served) | set(expected)):
        share, wanted = served.get(name, 0) / n, expected.get(name, 0.0)
        tolerance = (
            t["share_sigmas"] * math.sqrt(max(wanted * (1 - wanted), 0.0) / n) + t["share_slack_windows"] / n
        )
        if abs(share - wanted) > tolerance:
            problems.append(
                f"{name} was {share:.4g} of {n} windows, the policy's share {wanted:.4g} (± {tolerance:.3g})"
            )
        cap, floor = caps.get(name, 1.0), floors.get(name, 0.0)
        for what, value in (("realised", share), ("policy", wanted)):
            if value > cap + tolerance:
                problems.append(
                    f"{name}'s {what} share {value:.4g} is above its cap {cap:g} (± {tolerance:.3g})"
                )
            if value < floor - tolerance:
                problems.append(
                    f"{name}'s {what} share {value:.4g} is below its floor {floor:g} (± {tolerance:.3g})"
                )
    return problems


def _bandit_paid(m: Measured) -> list[str]:
    """Each arm's loss read its own held-out windows (their sha256 against those the arm's set
    states), and its reward is the rule the config names (contracts.rewards) applied to that loss,
    the arm's loss at the evaluation before and its reference: exactly, since the bandit plays
    the same rule on the same numbers."""
    rule = REWARDS.get(str(m.get("reward")))
    if rule is None:
        raise Malformed(f"'reward' is {m.get('reward')!r}, not one of {', '.join(REWARDS)}")
    losses, before, reference = _shares(m, "losses"), m.get("before"), m.get("reference")
    read, stated, rewards = m.get("windows_read"), m.get("windows_stated"), _shares(m, "rewards")
    if not all(isinstance(v, Mapping) for v in (before, reference, read, stated)):
        raise Malformed("'before', 'reference', 'windows_read' and 'windows_stated' must be maps of arms")
    problems = [
        f"arm {arm}'s held-out loss read other windows than its own held-out set states"
        for arm in sorted(losses)
        if read.get(arm) != stated.get(arm)
    ]
    for arm, now in sorted(losses.items()):
        was, ref = before.get(arm), reference.get(arm)
        due = rule(now, None if was is None else float(was), None if ref is None else float(ref))
        if rewards.get(arm) != due:
            problems.append(
                f"arm {arm} was paid {rewards.get(arm)!r}; the {m.get('reward')} reward of its held-out "
                f"loss {now!r} (before {was!r}) is {due!r}"
            )
    if set(rewards) != set(losses):
        problems.append(f"the arms paid {sorted(rewards)} are not the arms measured {sorted(losses)}")
    return problems


@judges("GATE-DATA-009", needs=("step", "phase", "after_steps"))
def _phase_switch(m: Measured, t: Thresholds) -> list[str]:
    """Step s belongs to the last phase whose after_step is below s."""
    step, phase = count(m, "step"), count(m, "phase")
    after = [count({"after_step": a}, "after_step") for a in items(m, "after_steps")]
    due = max((i for i, a in enumerate(after) if a < step), default=0)
    if phase == due:
        return []
    return [
        f"step {step} was served by phase {phase}, but the configuration puts it in phase {due} ({after})"
    ]


@judges("GATE-DATA-010", needs=("saved_next_shares", "restored_next_shares"))
def _policy_round_trip(m: Measured, t: Thresholds) -> list[str]:
    saved, restored = _shares(m, "saved_next_shares"), _shares(m, "restored_next_shares")
    differ = sorted(name for name in set(saved) | set(restored) if saved.get(name) != restored.get(name))
    if not differ:
        return []
    return [
        f"the restored policy would give {name} {restored.get(name)}, the saved one {saved.get(name)}"
        for name in differ
    ]


@judges("GATE-DATA-011", needs=("shares", "profiles"))
def _concentration(m: Measured, t: Thresholds) -> list[str]:
    """A share above max_suspect_share on a source whose text compresses below min_compression_ratio
    (repetitive) or scores below min_source_coherence (incoherent)."""
    shares, profiles = _shares(m, "shares"), m.get("profiles")
    if not isinstance(profiles, Mapping):
        raise Malformed(f"'profiles' is {profiles!r}, not a map of sources to their text profile")
    problems = []
    for name, share in sorted(shares.items()):
        if share <= t["max_suspect_share"] or name not in profiles:
            continue
        ratio, coherence = number(profiles[name], "compression_ratio"), number(profiles[name], "coherence")
        why = []
        if ratio < t["min_compression_ratio"]:
            why.append(f"compresses to {ratio:.3g}")
        if coherence < t["min_source_coherence"]:
            why.append(f"scores {coherence:.3g} on coherence")
        if why:
            problems.append(
                f"the policy gives {share:.3g} of the windows (more than {t['max_suspect_share']}) to "
                f"{name}, whose text {' and '.join(why)}: a repetitive source lowers the loss trivially"
            )
    return problems


# -- the prepare filters: pure functions of the filter report ---------------------------


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
        # the dedup filter's drops, judged again apart from its hashes
        "dedup": ("dedup",),
        # the measuring filters' drops, measured again and judged by their rules
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
        # every input byte of every source is a document's kept or dropped, or framing
        "bytes": ("accounts",),
        # every file read below a directory input is one --glob admits (contracts.corpus_inputs)
        "inputs": ("glob", "files_read", "outside_glob"),
        # no document of a text file read with --doc-sep holds the separator (contracts.separators)
        "separated": ("doc_sep", "separated_documents", "holding_separator"),
        # no piece of a text file read without a separator is over --doc-bytes (contracts.doc_cut)
        "cut": ("doc_bytes", "cut_documents", "over_doc_bytes"),
        # every rendered fine-tuning example holds its record's text fields (contracts.record_fields)
        "fields": ("field_examples", "record_fields", "fields_missing"),
        # no file was read as UTF-16 or UTF-32 text never made UTF-8 (contracts.text_marks)
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
