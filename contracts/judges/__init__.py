"""One judge per gate: the rule itself, as a pure function of measured values and thresholds.

A judge takes what a run measured (a JSON object) and the thresholds of the gate's revision,
and returns the problems it finds; no problem means the gate held. The runtime binding calls
the judge to decide (`contracts.gates.measure`), and `tools/check_integrity.py` calls the same
judge on every recorded result to recompute its verdict. So a record cannot say PASS over
numbers that fail, and the rule lives in exactly one place.

Judges never read the stack, the clock or the disk. Measured values that are missing or of the
wrong type are a problem in themselves: a tampered or truncated record must not pass by
omission. So every gate declares, with its judge, the measured keys each of its checks needs
(`judges(..., needs=...)` for one check, `checks={name: keys}` for several): before the rule
runs, `judge` refuses as Malformed values that hold none of the checks, a check with some of its
own keys but not all, and an empty collection where a check needs items (a key written `name+`).
Which checks a completed record of a run kind must hold is policy, in spec/run_kinds.yaml.
"""

from __future__ import annotations

import math
import sys
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from contracts.agreement_sample import requested_problem
from contracts.curriculum import eligible_arms, static_shares
from contracts.es_seeds import member_seeds, run_seeds
from contracts.likelihood import bits_per_byte_of
from contracts.patching import asked_cells, recovered_fraction
from contracts.rewards import REWARDS, exp3_log_weights, exp3_probabilities
from contracts.site_statistics import EXACT, STATISTICS, inconsistencies
from contracts.site_statistics import real as real_statistic
from contracts.spec import load_spec
from contracts.split import share_tail
from contracts.trace_anomaly import EMBEDDING_STREAM_SINCE, ROLES_SINCE, anomalies, block_site
from contracts.trace_paths import PATH_DTYPES
from contracts.trace_tolerance import asked_bounds
from contracts.truncation import rank_kept
from contracts.wording import first_few

Measured = Mapping[str, Any]
Thresholds = Mapping[str, float | int]
Judge = Callable[[Measured, Thresholds], list[str]]

JUDGES: dict[str, Judge] = {}
# gate id → check name → the measured keys that check needs ("name+": a non-empty list or object).
CHECKS: dict[str, dict[str, tuple[str, ...]]] = {}
# gate id → its checks as `present_checks` reads them (worked out once, at registration).
_READERS: dict[str, list[CheckReader]] = {}
MAIN_CHECK = "main"  # the name of a gate's only check

# The gates the pytest plugin has switched off in this process (`forced_off`), nothing else.
_FORCED_OFF: set[str] = set()

# Outcomes of a falsifier test as the conformance record writes them.
TEST_PASSED, TEST_FAILED, TEST_SKIPPED = "passed", "failed", "skipped"


class Malformed(ValueError):
    """Measured values a judge cannot read: missing keys or wrong types."""


def judges(
    *gate_ids: str,
    needs: tuple[str, ...] | None = None,
    checks: Mapping[str, tuple[str, ...]] | None = None,
) -> Callable[[Judge], Judge]:
    """Register `func` as the judge of `gate_ids`, with the measured keys its checks need: `needs`
    for a gate with one check, `checks` (name → keys) for a gate several checks feed. A judge that
    declares neither reads no key before its rule runs; tests/test_judges_evidence.py refuses it."""
    if needs is not None and checks is not None:
        raise TypeError("a judge declares needs=(...) for one check or checks={...} for several, not both")
    declared = (
        dict(checks) if checks is not None else ({MAIN_CHECK: tuple(needs)} if needs is not None else {})
    )
    readers = check_readers(declared)

    def register(func: Judge) -> Judge:
        for gate_id in gate_ids:
            JUDGES[gate_id] = func
            CHECKS[gate_id] = declared
            _READERS[gate_id] = readers
        return func

    return register


@contextmanager
def forced_off(gate_id: str) -> Iterator[None]:
    """Switch `gate_id`'s judge off in this process for the block: the proof by mutation.

    Only the pytest plugin of this repository calls it (tests/gate_plugin.py): no environment
    variable, no command-line flag and no file can switch a gate off, so a `stack` command or the
    integrity check started from a shell always judges. Refused outside a pytest process.
    """
    if "_pytest" not in sys.modules:
        raise RuntimeError("gates are forced off only by the test runner's proof by mutation")
    _FORCED_OFF.add(gate_id)
    try:
        yield
    finally:
        _FORCED_OFF.discard(gate_id)


def bare(key: str) -> str:
    """A declared key without its non-empty mark."""
    return key.removesuffix("+")


@dataclass(frozen=True)
class CheckReader:
    """One declared check as read: its keys, those that need items, and those no other check has
    (their presence says the check ran)."""

    name: str
    keys: tuple[str, ...]
    nonempty: tuple[str, ...]
    own: frozenset[str]


def check_readers(checks: Mapping[str, tuple[str, ...]]) -> list[CheckReader]:
    """The declared checks of one gate, worked out for `present_checks`."""
    readers = []
    for name, keys in checks.items():
        others = {bare(k) for other, ks in checks.items() if other != name for k in ks}
        plain = tuple(bare(k) for k in keys)
        nonempty = tuple(bare(k) for k in keys if k.endswith("+"))
        readers.append(CheckReader(name, plain, nonempty, frozenset(plain) - others))
    return readers


def present_checks(gate_id: str, measured: Measured) -> list[str]:
    """The checks of `gate_id` whose every key `measured` holds, after refusing what cannot be read.

    Malformed: no check present; a check with some of its own keys but not all; a check present
    whose `key+` is missing items (a check over nothing has shown nothing).
    """
    readers = _READERS.get(gate_id, [])
    present = []
    for check in readers:
        have = [k for k in check.keys if k in measured]
        if len(have) == len(check.keys):
            for key in check.nonempty:
                value = measured[key]
                if not isinstance(value, list | Mapping) or not value:
                    where = "" if check.name == MAIN_CHECK else f" (check {check.name})"
                    raise Malformed(f"{key!r} is {value!r}: no items to judge{where}")
            present.append(check.name)
        elif ran := check.own.intersection(have):
            lacking = [k for k in check.keys if k not in measured]
            raise Malformed(f"check {check.name} has {', '.join(sorted(ran))} but lacks {', '.join(lacking)}")
    if readers and not present:
        names = " or ".join("+".join(c.keys) or "(nothing)" for c in readers)
        raise Malformed(f"none of the checks' values are present (expected {names})")
    return present


def judge(gate_id: str, measured: Any, thresholds: Thresholds | None = None) -> list[str]:
    """The problems `measured` shows under `thresholds` (default: the current spec's); [] = holds."""
    if gate_id in _FORCED_OFF:
        return []
    if thresholds is None:
        thresholds = load_spec().gate(gate_id).threshold_values
    rule = JUDGES.get(gate_id)
    if rule is None:
        return [f"{gate_id} has no judge in contracts.judges"]
    if not isinstance(measured, Mapping):
        return [f"measured values are {type(measured).__name__}, not an object of named values"]
    try:
        present_checks(gate_id, measured)
        return rule(measured, thresholds)
    except Malformed as exc:
        return [f"measured values are malformed: {exc}"]


# -- readers of measured values ------------------------------------------------------------


def number(measured: Measured, key: str) -> float:
    """A real number (bools refused, non-finite strings such as 'nan' read as floats)."""
    if key not in measured:
        raise Malformed(f"{key!r} is missing")
    value = measured[key]
    if isinstance(value, str) and value.strip().lower() in {"nan", "inf", "-inf", "infinity", "-infinity"}:
        return float(value)
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise Malformed(f"{key!r} is {value!r}, not a number")
    return float(value)


def count(measured: Measured, key: str) -> int:
    """A non-negative integer."""
    value = measured.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise Malformed(f"{key!r} is {value!r}, not a count")
    return value


def flag(measured: Measured, key: str) -> bool:
    """A boolean."""
    value = measured.get(key)
    if not isinstance(value, bool):
        raise Malformed(f"{key!r} is {value!r}, not true/false")
    return value


def items(measured: Measured, key: str) -> list[Any]:
    """A list."""
    value = measured.get(key)
    if not isinstance(value, list):
        raise Malformed(f"{key!r} is {value!r}, not a list")
    return value


def has(measured: Measured, *keys: str) -> bool:
    """Whether a multi-check gate's record holds the values of one of its checks."""
    return all(key in measured for key in keys)


# -- data ----------------------------------------------------------------------------------


@judges(
    "GATE-DATA-001",
    checks={
        "windows": ("epoch", "step_in_epoch", "steps_per_epoch", "follows", "shape_ok", "windows_mismatched"),
        "stream": ("served_batches", "taken_batches"),
        "plan": ("plan_windows", "quota_windows", "windows_off_quota", "sources_off_quota"),
        # rev 4: the windows the reader numbered cover every target of every shard but its tail
        "coverage": ("covered_shards", "uncovered_fewest", "uncovered_most", "window_targets"),
        # rev 5: the batch_sha256 a step's line logs is the fingerprint of its planned windows
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
    if has(m, *CHECKS["GATE-DATA-001"]["fingerprint"]):
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
        # rev 3: the plan is the one contracts.plan defines for its seed and epoch, and a source of
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
    if has(m, *CHECKS["GATE-DATA-002"]["defined"]):
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
    that started from initialised weights (rev 2: `start_from` "checkpoint", a fine-tune, is not
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
        # rev 4: every document is written to the split contracts.split's rule gives it, and the
        # share held out is one the asked val_fraction draws
        "assigned": ("assigned_documents", "documents_off_rule"),
        "share": ("split_documents", "heldout_documents", "asked_val_fraction"),
        # rev 5: no held-out document or example is stored as a train one, keyed as the shards
        # store it apart from the identity the split was drawn by
        "stored": ("stored_documents", "stored_heldout", "stored_shared"),
        # rev 6: the share is judged on the distinct contents the index holds (copies are one draw)
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
    if has(m, *CHECKS["GATE-DATA-005"]["assigned"]) and (off := count(m, "documents_off_rule")):
        problems.append(
            f"{off} of the {count(m, 'assigned_documents')} documents were written to another split than "
            "the held-out rule (contracts.split) gives them for the seed and val_fraction"
        )
    if has(m, *CHECKS["GATE-DATA-005"]["share"]):
        problems += _share_problems(m, t["min_split_tail_p"])
    if has(m, *CHECKS["GATE-DATA-005"]["stored"]):
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
    if not has(m, *CHECKS["GATE-DATA-005"]["contents"]):
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
        # rev 3: the documents prepare writes decode to their text
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
        # rev 4: the units a BPE trained by prepare read are contracts.bpe_sample's draw
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


# -- evaluation ----------------------------------------------------------------------------


@judges(
    "GATE-EVAL-001",
    checks={
        "set": ("heldout_batches", "distinct_windows", "batch_size"),
        "reads": (
            "set_batches",
            "stated_windows",
            "scored_batches",
            "scorings",
            "stated_scorings",
            "mismatched_positions",
            "consumed_windows",
        ),
        "precision": ("precision", "logits_dtypes"),
        "mode": ("modes", "mismatched_modes"),
        "noise": ("scored_losses", "heldout_stderr", "early_stop"),
    },
)
def _heldout_size(m: Measured, t: Thresholds) -> list[str]:
    """The set, as made: something to measure, no window twice (two batches repeated eight times
    are two); each evaluation, by what its forwards read: every batch of the set, each read as it
    states, as many distinct windows as the set states, in the compute dtype of train.precision,
    with the model in evaluation mode; and early stopping, judging only a loss precise enough."""
    problems = precision_problems(m, "the evaluation") if has(m, "precision", "logits_dtypes") else []
    if has(m, "modes", "mismatched_modes"):
        problems += mode_problems(m, "the evaluation's forwards", "evaluation mode (no dropout drawn)")
    if has(m, "heldout_batches", "distinct_windows", "batch_size"):
        problems += _set_problems(m, t)
    if has(m, *CHECKS["GATE-EVAL-001"]["reads"]):
        problems += _read_problems(m)
    if has(m, *CHECKS["GATE-EVAL-001"]["noise"]):
        problems += _noise_problems(m, t)
    return problems


def _set_problems(m: Measured, t: Thresholds) -> list[str]:
    """Nothing to measure (fewer than two windows), or a set padded with repeats (two batches read
    eight times look more precise than the text they hold): what the set check refuses. A set must
    hold as many distinct windows as its batches read, up to min_heldout_batches' worth: text
    that repeats itself (a source's boilerplate) may repeat windows beyond that. Its size is the
    noise check's."""
    batches, distinct, size = (
        count(m, "heldout_batches"),
        count(m, "distinct_windows"),
        count(m, "batch_size"),
    )
    if distinct < 2:  # one window has a loss but no spread: no standard error to judge it by
        return [
            f"the held-out set holds {distinct} window(s): nothing to measure a held-out loss and its "
            "standard error on (that needs two)"
        ]
    if size < 1:
        raise Malformed("batch_size must be at least 1")
    needed = min(batches, int(t["min_heldout_batches"])) * size
    if distinct < needed:
        return [
            f"the held-out set has {distinct} distinct windows in {batches} batches of {size}, fewer "
            f"than the {needed} its batches read: it repeats windows, whose losses would count twice "
            "in its standard error"
        ]
    return []


def heldout_precise(scored_losses: int, heldout_stderr: float, min_improvement: float) -> bool:
    """Whether a held-out loss from `scored_losses` per-batch losses, of standard error
    `heldout_stderr`, can tell an improvement of `min_improvement` from noise: what decides
    whether early stopping judges it (the loop) and whether a stop judged on it was noise (the gate)."""
    return scored_losses >= 2 and math.isfinite(heldout_stderr) and heldout_stderr <= min_improvement


def _noise_problems(m: Measured, t: Thresholds) -> list[str]:
    scored, stderr, judged = count(m, "scored_losses"), number(m, "heldout_stderr"), flag(m, "early_stop")
    if scored < 1:
        return ["the evaluation scored no held-out batch: nothing was measured"]
    if judged and not heldout_precise(scored, stderr, t["min_improvement"]):
        return [
            f"early stopping judged a held-out loss of standard error {stderr:.4g} over {scored} "
            f"losses, above min_improvement {t['min_improvement']}: it would stop on noise"
        ]
    return []


def _read_problems(m: Measured) -> list[str]:
    batches, scored = count(m, "set_batches"), count(m, "scored_batches")
    scorings, stated = count(m, "scorings"), count(m, "stated_scorings")
    consumed, windows = count(m, "consumed_windows"), count(m, "stated_windows")
    problems = []
    if scored != batches:
        problems.append(f"the evaluation scored {scored} of the held-out set's {batches} batches")
    if scorings != stated:
        problems.append(
            f"the evaluation's forwards made {scorings} scorings where its batches state {stated}"
        )
    if mismatched := count(m, "mismatched_positions"):
        problems.append(
            f"the evaluation's forwards read {mismatched} position(s) other than the held-out batches "
            "they were to score state (another batch of the set scored in its place?)"
        )
    if consumed < windows:
        problems.append(
            f"the evaluation's forwards read {consumed} distinct windows where the held-out set holds "
            f"{windows}: its loss judges part of the set"
        )
    return problems


@judges(
    "GATE-EVAL-002",
    checks={
        "config": ("patience", "min_epochs"),
        "stderr": ("heldout_stderr",),
        "stop": ("stop_epoch", "stop_evals"),
        "aggregated": (
            "set_batches",
            "averaged_losses",
            "losses_mean",
            "losses_stderr",
            "reported_loss",
            "reported_stderr",
        ),
        "judged": ("judged_loss", "judged_stderr", "losses_mean", "losses_stderr"),
        "forwards": ("compared_losses", "mismatched_losses"),
        # rev 5: the set every evaluation scored holds the batches the run's config asks for
        "asked": ("asked_batches", "set_batches"),
    },
)
def _early_stopping(m: Measured, t: Thresholds) -> list[str]:
    problems = _aggregation_problems(m)
    if has(m, "patience", "min_epochs"):
        patience, min_epochs = number(m, "patience"), number(m, "min_epochs")
        if not patience >= t["min_patience_evals"]:
            problems.append(
                f"patience {patience:g} evaluations < {t['min_patience_evals']}: would stop on noise"
            )
        if not min_epochs >= t["min_epochs"]:
            problems.append(f"min_epochs {min_epochs:g} < {t['min_epochs']}: would stop on noise")
    if has(m, "heldout_stderr"):
        stderr = number(m, "heldout_stderr")
        if not (math.isfinite(stderr) and stderr > 0):
            problems.append(
                f"held-out standard error {stderr} is not positive and finite, so any change would "
                "count as an improvement"
            )
    if has(m, "stop_epoch", "stop_evals"):
        epoch, evals = number(m, "stop_epoch"), number(m, "stop_evals")
        if not epoch >= t["min_epochs"]:
            problems.append(f"early stopping fired at epoch {epoch:.3g} < {t['min_epochs']}")
        if not evals >= t["min_patience_evals"]:
            problems.append(f"early stopping fired after {evals:g} evaluations without improvement")
    return problems


_POSITION_COUNTS = {
    "missing_positions": "token position(s) after the first were never scored",
    "repeated_positions": "extra scoring(s) of a token position already scored",
    "first_token_scored": "scoring(s) of the first token, which has no context",
    "misaligned_targets": "target(s) not predicted from the token just before them",
}


@judges(
    "GATE-EVAL-003",
    checks={
        "round_trip": ("missing_chars", "extra_chars"),
        "scored": (
            *_POSITION_COUNTS,
            "tokens",
            "scored_targets",
            "predicted_tokens",
            "scored_positions_sha256",
            "predicted_positions_sha256",
            "nll_nats",
            "loss",
            "bits_per_byte",
            "bytes",
            "text_bytes",
        ),
        # rev 3: the text an evaluation of a split scores is that split's, as the manifest lists it
        "split": (
            "split",
            "split_documents",
            "split_tokens",
            "documents_read",
            "tokens_read",
            "whole_split",
            "documents_scored",
            "split_text_sha256",
            "text_sha256",
        ),
        # rev 4: the text of `--text FILE` is the file's bytes as stored, every one of them
        "file": ("file_bytes", "file_sha256", "text_bytes", "text_sha256"),
        # rev 5: the overlap with the training data stated is the one the document indexes give
        "overlap": ("overlap_stated", "overlap_derived"),
        # rev 6: the NLL summed is contracts.likelihood's over the logits the forwards taped, batch
        # by batch, and the score that sum over the UTF-8 bytes of the text the tokens decode to
        "nll": ("nll_nats", "nll_taped", "nll_batch_deviation", "bits_per_byte", "bytes", "bytes_decoded"),
        # rev 7: the widest window the scoring forwards taped is the context the evaluation states
        "window": ("window_tokens", "context", "tokens"),
    },
)
def _every_byte(m: Measured, t: Thresholds) -> list[str]:
    """The tokenizer round-trips the text, or the NLL sum took every token after the first once and
    the score divides that sum by the text's bytes, or the text of a split is the split's, or the
    text of a file is the file's, or the overlap stated is the document indexes', or the NLL is the
    taped logits' and the score its bits per byte, or the windows scored are the stated context; or
    several of these."""
    problems = _split_text_problems(m) if has(m, *CHECKS["GATE-EVAL-003"]["split"]) else []
    if has(m, *CHECKS["GATE-EVAL-003"]["file"]) and m.get("file_sha256") != m.get("text_sha256"):
        problems.append(
            f"the text scored is not the file as stored: {count(m, 'text_bytes')} UTF-8 byte(s) with sha256 "
            f"{str(m.get('text_sha256'))[:12]}, where the file holds {count(m, 'file_bytes')} with sha256 "
            f"{str(m.get('file_sha256'))[:12]}: bytes dropped, added or changed in reading"
        )
    if has(m, "overlap_stated", "overlap_derived") and m.get("overlap_stated") != m.get("overlap_derived"):
        problems.append(
            f"the overlap with the training data stated, {m.get('overlap_stated')!r}, is not the one the "
            f"document indexes give (contracts.overlap), {m.get('overlap_derived')!r}: held-out documents "
            "counted as training ones, or training ones missed"
        )
    if has(m, "missing_chars", "extra_chars"):
        missing, extra = count(m, "missing_chars"), count(m, "extra_chars")
        if missing or extra:
            problems.append(
                f"the tokenizer does not round-trip the text: {missing} character(s) lost, {extra} added"
            )
    if has(m, *_POSITION_COUNTS, "scored_targets"):
        problems += _scored_every_position(m)
        problems += _score_is_the_sum_over_the_bytes(m, t["score_rtol"])
    if has(m, *CHECKS["GATE-EVAL-003"]["nll"]):
        problems += _score_is_the_taped_nll(m, t["nll_rtol"])
    if has(m, *CHECKS["GATE-EVAL-003"]["window"]):
        problems += _windows_are_the_context(m)
    return problems


def _windows_are_the_context(m: Measured) -> list[str]:
    """The widest window the scoring forwards read against the context the evaluation states: a text
    of N tokens is scored in windows of the whole context, or of its N − 1 tokens when shorter."""
    widest, context, tokens = count(m, "window_tokens"), count(m, "context"), count(m, "tokens")
    want = min(context, max(tokens - 1, 0))
    if widest == want:
        return []
    return [
        f"the scoring forwards read windows of at most {widest} token(s), but the evaluation states a "
        f"context of {context} (over {tokens} tokens, windows of {want}): each token was scored from "
        "another context than the one recorded"
    ]


def _score_is_the_taped_nll(m: Measured, rtol: float) -> list[str]:
    """The NLL summed against contracts.likelihood's float64 sum over the forwards' taped logits (in
    total, and the worst batch), the bytes counted against the UTF-8 bytes of the text the scored
    tokens decode to, and bits per byte against the one formula over those two."""
    nll, taped, worst = number(m, "nll_nats"), number(m, "nll_taped"), number(m, "nll_batch_deviation")
    n_bytes, decoded, bpb = count(m, "bytes"), count(m, "bytes_decoded"), number(m, "bits_per_byte")
    problems = []
    if not abs(nll - taped) <= rtol * abs(taped):
        problems.append(
            f"the NLL summed, {nll:.9g} nats, is not the float64 sum of −log softmax of the logits the "
            f"scoring forwards taped at their targets, {taped:.9g} (contracts.likelihood, rtol {rtol:g}): "
            "a mean for a sum? a batch left out of the total?"
        )
    if not worst <= rtol:
        problems.append(
            f"a batch's NLL is {worst:.3g} (relative) from the sum the logits its forward taped give its "
            f"targets (rtol {rtol:g})"
        )
    if n_bytes != decoded:
        problems.append(
            f"the result counts {n_bytes} byte(s), but the text the scored tokens decode to holds {decoded} "
            "UTF-8 bytes (characters counted for bytes?)"
        )
    want = bits_per_byte_of(taped, decoded) if decoded > 0 else math.nan
    if not abs(bpb - want) <= rtol * abs(want):
        problems.append(
            f"bits per byte {bpb:.9g} is not the taped NLL over the {decoded} UTF-8 bytes the scored tokens "
            f"decode to, {want:.9g} (contracts.likelihood.bits_per_byte_of, rtol {rtol:g})"
        )
    return problems


def _split_text_problems(m: Measured) -> list[str]:
    """The split's shards as read against the manifest's totals, and the text scored against the
    whole documents of that reading (all of them, unless a byte budget cut the text)."""
    split, problems = m.get("split"), []
    for what in ("documents", "tokens"):
        listed, read = count(m, f"split_{what}"), count(m, f"{what}_read")
        if read != listed:
            problems.append(f"the {split} split's shards hold {read} {what}; its manifest lists {listed}")
    scored, listed = count(m, "documents_scored"), count(m, "split_documents")
    if flag(m, "whole_split") and scored != listed:
        problems.append(
            f"the whole {split} split was asked for; its text holds {scored} of {listed} documents"
        )
    text, reference = str(m.get("text_sha256")), str(m.get("split_text_sha256"))
    if text != reference:
        problems.append(
            f"the text scored is not the {split} split's {scored} document(s) as its shards hold them "
            f"(sha256 {text[:12]} where the split gives {reference[:12]}): another split, or documents "
            "lost or added"
        )
    return problems


def _scored_every_position(m: Measured) -> list[str]:
    """The positions the NLL sum took against 1..N−1 of the text's N tokens."""
    tokens, scored, predicted = count(m, "tokens"), count(m, "scored_targets"), count(m, "predicted_tokens")
    problems = [f"{count(m, key)} {text}" for key, text in _POSITION_COUNTS.items() if count(m, key)]
    if scored != tokens - 1 or predicted != tokens - 1:
        problems.append(
            f"the NLL sum scored {scored} target(s) and the result claims {predicted}, of a text of {tokens} "
            f"token(s) whose {tokens - 1} after the first must each be scored once"
        )
    if m.get("scored_positions_sha256") != m.get("predicted_positions_sha256"):
        problems.append("the scored positions hash otherwise than positions 1..N−1")
    return problems


def _score_is_the_sum_over_the_bytes(m: Measured, rtol: float) -> list[str]:
    """Bits per byte and the loss against the NLL summed, over the text's bytes and the predicted tokens."""
    nll, loss, bpb = number(m, "nll_nats"), number(m, "loss"), number(m, "bits_per_byte")
    n_bytes, text_bytes, predicted = count(m, "bytes"), count(m, "text_bytes"), count(m, "predicted_tokens")
    problems = []
    if n_bytes != text_bytes:
        problems.append(f"the result counts {n_bytes} byte(s) of a text of {text_bytes} UTF-8 bytes")
    allowed = rtol * abs(nll)
    if not abs(bpb * text_bytes * math.log(2) - nll) <= allowed:
        divided_by = nll / (bpb * math.log(2)) if bpb else math.inf
        problems.append(
            f"bits per byte {bpb:.9g} is the NLL sum {nll:.9g} nats over {divided_by:.6g} bytes, not over "
            f"the text's {text_bytes}"
        )
    if not abs(loss * predicted - nll) <= allowed:
        problems.append(
            f"the loss {loss:.9g} is not the NLL sum {nll:.9g} over {predicted} predicted token(s)"
        )
    return problems


@judges(
    "GATE-EVAL-004",
    checks={
        "streak": ("diverging_evals",),
        "compared": (
            "compared_train_loss",
            "compared_heldout_loss",
            "reported_train_loss",
            "reported_heldout_loss",
        ),
    },
)
def _overfitting(m: Measured, t: Thresholds) -> list[str]:
    """A streak of evaluations whose held-out loss rose while the train loss fell; and the detector
    compared the losses the evaluation reports, not others."""
    problems = []
    if has(m, "diverging_evals"):
        streak = count(m, "diverging_evals")
        window = t["overfit_window_evals"]
        if streak >= window:
            problems.append(
                f"held-out loss rose while train loss fell for {streak} evaluations (window {window})"
            )
    for what in ("train", "heldout"):
        compared, reported = f"compared_{what}_loss", f"reported_{what}_loss"
        if has(m, compared, reported) and not same_number(number(m, compared), number(m, reported)):
            problems.append(
                f"overfitting was judged on a {what.replace('heldout', 'held-out')} loss of "
                f"{number(m, compared):.6g}, but the evaluation reports {number(m, reported):.6g}: the "
                "detector watched other numbers than the run's"
            )
    return problems


# -- training ------------------------------------------------------------------------------


@judges(
    "GATE-TRAIN-001",
    checks={
        "line": ("missing", "step"),
        "counted": ("served_tokens", "step_tokens"),
        "tensorboard": (
            "tensorboard_scalars",
            "tensorboard_expected",
            "tensorboard_texts",
            "tensorboard_texts_expected",
            "tensorboard_mismatches",
            "tensorboard_first",
        ),
    },
)
def _metrics_line(m: Measured, t: Thresholds) -> list[str]:
    """The line is complete and follows the step before it; the tokens the run counts a step (its
    throughput, tokens seen and the plan corpus adequacy judged) are those its batches served; and
    the scalars TensorBoard shows of the run are those its lines give (contracts.curves)."""
    problems = _curves_mirrored(m)
    if has(m, "missing", "step"):
        missing = items(m, "missing")
        step = count(m, "step")
        previous = m.get("previous_step")
        problems += [f"the metrics line lacks {', '.join(map(str, missing))}"] if missing else []
        if previous is not None and step != count(m, "previous_step") + 1:
            problems.append(f"the metrics jump from step {previous} to {step}")
    if has(m, "served_tokens", "step_tokens"):
        served, counted = count(m, "served_tokens"), count(m, "step_tokens")
        if served != counted:
            problems.append(
                f"the step's batches served {served} tokens, but the run counts {counted} a step: its "
                "throughput, tokens seen, epochs and the corpus adequacy it planned are off by "
                f"{counted / served if served else float('inf'):.3g}×"
            )
    return problems


def _curves_mirrored(m: Measured) -> list[str]:
    """Check tensorboard: no (tag, step) where the event files read back and metrics.jsonl disagree,
    no `samples` or `events` text read back that no line gives nor one a line gives missing, and as
    many points and texts shown as the lines give."""
    if not has(m, "tensorboard_mismatches"):
        return []
    wrong, read = count(m, "tensorboard_mismatches"), count(m, "tensorboard_scalars")
    given = count(m, "tensorboard_expected")
    texts, texts_given = count(m, "tensorboard_texts"), count(m, "tensorboard_texts_expected")
    if not wrong and read == given and texts == texts_given:
        return []
    return [
        f"TensorBoard shows {read} scalar point(s) and {texts} text(s) of the run and its metrics lines "
        f"give {given} and {texts_given}; {wrong} of them disagree: {m['tensorboard_first']}; the curves "
        "and texts users read are not what the run did"
    ]


@judges(
    "GATE-TRAIN-002",
    checks={
        "config": ("clip_norm", "warmup_steps", "weight_decay"),
        "clip": ("post_clip_norm", "clip_norm"),
        "warmup": ("warmup_lr", "warmup_step", "warmup_steps", "peak_lr"),
        "decay": ("undecayed_matrices", "decayed_vectors", "matrix_weight_decay"),
    },
)
def _stability(m: Measured, t: Thresholds) -> list[str]:
    """Configured on, and seen working: the clip bounds the norm, warmup rises, matrices decay."""
    problems = []
    if has(m, "clip_norm"):
        clip = number(m, "clip_norm")
        if not 0 < clip <= t["max_clip_norm"]:
            problems.append(f"gradient clip {clip:g} is not in (0, {t['max_clip_norm']}]")
    if has(m, "post_clip_norm"):
        post, clip = number(m, "post_clip_norm"), number(m, "clip_norm")
        if not post <= clip * (1 + t["post_clip_rtol"]):
            problems.append(f"the gradient norm after clipping is {post:.6g}, above the clip {clip:g}")
    if has(m, "warmup_steps") and not number(m, "warmup_steps") >= t["min_warmup_steps"]:
        problems.append(f"warmup of {number(m, 'warmup_steps'):g} steps < {t['min_warmup_steps']}")
    if has(m, "weight_decay") and not number(m, "weight_decay") >= t["min_weight_decay"]:
        problems.append(f"weight decay {number(m, 'weight_decay'):g} < {t['min_weight_decay']}")
    if has(m, "warmup_lr"):
        lr, step, peak = number(m, "warmup_lr"), count(m, "warmup_step"), number(m, "peak_lr")
        previous = m.get("previous_warmup_lr")
        if previous is not None and not lr > number(m, "previous_warmup_lr"):
            problems.append(f"the applied learning rate did not rise during warmup (step {step}: {lr:.3g})")
        if step < number(m, "warmup_steps") and not lr < peak:
            problems.append(f"the applied learning rate is already {lr:.3g} = peak at warmup step {step}")
    if has(m, "undecayed_matrices"):
        undecayed, decayed_vectors = count(m, "undecayed_matrices"), count(m, "decayed_vectors")
        # None: only LoRA adapters train, and their decay is judged below
        matrix_decay = None if m.get("matrix_weight_decay") is None else number(m, "matrix_weight_decay")
        if undecayed or (matrix_decay is not None and not matrix_decay >= t["min_weight_decay"]):
            smallest = "none" if matrix_decay is None else f"{matrix_decay:g}"
            problems.append(
                f"{undecayed} weight matri(x/ces) outside decoupled weight decay (smallest decay "
                f"{smallest} < {t['min_weight_decay']})"
            )
        if decayed_vectors:
            problems.append(f"{decayed_vectors} norm/bias vector(s) are weight-decayed")
    if has(m, "adapter_matrices"):
        decays, configured = items(m, "adapter_weight_decays"), number(m, "lora_weight_decay")
        if [float(d) for d in decays] != [configured]:
            problems.append(
                f"the LoRA adapters' matrices decay at {', '.join(f'{float(d):g}' for d in decays)}, not at "
                f"lora.weight_decay {configured:g}"
            )
    return problems


@judges("GATE-TRAIN-003", needs=("loss", "grad_norm"))
def _finite(m: Measured, t: Thresholds) -> list[str]:
    """Finite before the step; under fp16 loss scaling an overflowing gradient with a finite loss
    is a step the scaler skipped (`loss_scale`, the scale it left), allowed while that scale stays
    at least min_loss_scale: below it the gradients overflow at any scale."""
    loss, grad_norm = number(m, "loss"), number(m, "grad_norm")
    if math.isfinite(loss) and math.isfinite(grad_norm):
        return []
    if math.isfinite(loss) and has(m, "loss_scale"):
        scale = number(m, "loss_scale")
        if scale >= t["min_loss_scale"]:
            return []
        return [
            f"the gradient norm is {grad_norm} at every loss scale down to {scale:g} (below "
            f"{t['min_loss_scale']:g}): the gradients are not finite at any scale, not just for fp16"
        ]
    return [f"loss {loss} / gradient norm {grad_norm} is not finite before the optimizer step"]


@judges("GATE-TRAIN-004", needs=("loss", "vocab"))
def _first_loss(m: Measured, t: Thresholds) -> list[str]:
    loss, vocab = number(m, "loss"), count(m, "vocab")
    if vocab < 2:
        raise Malformed(f"vocab {vocab} has no uniform loss to compare with")
    expected, tolerance = math.log(vocab), t["first_loss_tolerance"]
    if abs(loss - expected) <= tolerance:
        return []
    return [f"first loss {loss:.4f} is not within {tolerance} of ln({vocab}) = {expected:.4f}"]


@judges(
    "GATE-TRAIN-005",
    checks={
        "streak": ("recent_scores+",),
        "ran": ("samples_scored", "steps", "sample_every"),
        "drawn": (
            "temperature",
            "top_k",
            "draws",
            "mismatched_draws",
            "probe_draws",
            "mismatched_probe_draws",
        ),
        "context": ("context_logits_deviation",),
        "scored": ("texts_score", "observed_score", "logged_score"),
        # rev 6: the texts scored are the text of the tokens the generations drew
        "texts": ("texts_scored", "texts_not_drawn"),
        # rev 7: `stack sample` continued the prompt its record names
        "prompt": ("prompt_tokens", "prompt_tokens_differing"),
        # rev 10: the draws started from the state a generator seeded with the stated seed holds
        "seeded": ("seed", "generator_device", "generator_state_sha256", "seeded_state_sha256"),
    },
)
def _coherence(m: Measured, t: Thresholds) -> list[str]:
    problems = seeded_problems(m) if has(m, *CHECKS["GATE-TRAIN-005"]["seeded"]) else []
    if has(m, "prompt_tokens", "prompt_tokens_differing") and (differ := count(m, "prompt_tokens_differing")):
        problems.append(
            f"the generation continued another text than its prompt: {differ} of the prompt's "
            f"{count(m, 'prompt_tokens')} token(s) differ from the ids it continued"
        )
    if has(m, "texts_scored", "texts_not_drawn") and (not_drawn := count(m, "texts_not_drawn")):
        problems.append(
            f"{not_drawn} of the {count(m, 'texts_scored')} texts scored are not the text of the tokens "
            "their generation drew: the score is of something the model did not write"
        )
    if has(m, "texts_score", "observed_score", "logged_score"):
        want = number(m, "texts_score")
        read = (("the monitor observed", "observed_score"), ("the sample line logs", "logged_score"))
        for what, key in read:
            if not same_number(number(m, key), want):
                problems.append(
                    f"{what} a score of {number(m, key):.6g}, but the texts sampled score {want:.6g} "
                    "(the mean of each prompt's coherence): the streak is not judged on the samples"
                )
    if has(m, "context_logits_deviation"):
        deviation = number(m, "context_logits_deviation")
        if not deviation <= t["context_logits_rtol"]:
            problems.append(
                f"the logits the draws were made from are {deviation:.3g} (× the largest logit) from a "
                f"plain forward of the sampled text, past the model's context of its window (rtol "
                f"{t['context_logits_rtol']:g}): the sampler did not see the text it sampled (a lost KV "
                "cache? restarted positions? another part of a long text?)"
            )
    if has(m, "draws", "mismatched_draws", "probe_draws", "mismatched_probe_draws"):
        named = ("temperature", "top_k", "top_p", "repetition_penalty")
        settings = ", ".join(f"{key} {m[key]}" for key in named if key in m)
        for what, drawn, mismatched in (
            ("the samples", "draws", "mismatched_draws"),
            ("the sampler's draws on spread logits", "probe_draws", "mismatched_probe_draws"),
        ):
            if count(m, mismatched) > t["max_mismatched_draws"]:
                problems.append(
                    f"{count(m, mismatched)} of {count(m, drawn)} of {what} are not what the configured "
                    f"distribution ({settings}) draws from the same generator state: the samples are not "
                    "drawn as configured"
                )
    if has(m, "recent_scores"):
        scores = [number({"score": s}, "score") for s in items(m, "recent_scores")]
        window = int(t["max_consecutive_low"])
        tail = scores[-window:]
        if len(tail) >= window and all(s < t["min_coherence_score"] for s in tail):
            problems.append(
                f"{window} consecutive samples scored below the coherence floor {t['min_coherence_score']} "
                f"(last {tail[-1]:.1f}): the model is degenerate"
            )
    if has(m, "samples_scored", "steps", "sample_every"):
        scored, steps, every = count(m, "samples_scored"), count(m, "steps"), number(m, "sample_every")
        if scored == 0 and not (every > 0 and steps < every):
            what = (
                f"sampling is switched off (sample_every={every:g})"
                if every <= 0
                else f"{steps} steps ran with sampling every {every:g} steps but no sample was scored"
            )
            problems.append(f"{what}: this training path skips the coherence monitor")
    return problems


def seeded_problems(m: Measured) -> list[str]:
    """The state the draws' generator started from against the one a generator freshly seeded with
    the stated seed holds (contracts.seeds), by sha256: GATE-TRAIN-005's and GATE-SYNTH-002's check
    seeded."""
    started, seeded = m.get("generator_state_sha256"), m.get("seeded_state_sha256")
    if isinstance(started, str) and started == seeded:
        return []
    return [
        f"the draws started from a generator state (sha256 {str(started)[:12]}) other than the one a "
        f"{m.get('generator_device')} generator seeded with the stated seed {m.get('seed')!r} holds "
        f"({str(seeded)[:12]}): the sampler drew from another seed than the one asked for"
    ]


# The dtype of the logits a forward reads under each train.precision: the autocast dtype, or float32
# without autocast (torch's names, as `str(dtype)` gives them after "torch.").
COMPUTE_DTYPES = {"fp32": "float32", "bf16": "bfloat16", "fp16": "float16"}


def precision_problems(m: Measured, reader: str) -> list[str]:
    """The logits every scoring of `reader` (the loss, the evaluation) read are in the compute dtype
    the run's precision names: GATE-TRAIN-007's and GATE-EVAL-001's precision checks."""
    precision, dtypes = m.get("precision"), items(m, "logits_dtypes")
    if precision not in COMPUTE_DTYPES:
        raise Malformed(f"precision must be one of {sorted(COMPUTE_DTYPES)}; got {precision!r}")
    if not dtypes and has(m, "scorings") and count(m, "scorings"):
        return [f"no scoring of {reader} stated the dtype of the logits it read: its precision is unshown"]
    other = sorted({str(d) for d in dtypes} - {COMPUTE_DTYPES[precision]})
    if other:
        return [
            f"{reader} read logits in {', '.join(other)} where train.precision={precision} computes in "
            f"{COMPUTE_DTYPES[precision]}: the run computes in another precision than it states"
        ]
    return []


def mode_problems(m: Measured, reader: str, wanted: str) -> list[str]:
    """No scoring of `reader` (a training step's loss, an evaluation's forwards) ran in another mode
    than the one it is due to run in (`wanted`): GATE-TRAIN-007's and GATE-EVAL-001's mode checks."""
    modes, mismatched = items(m, "modes"), count(m, "mismatched_modes")
    if not mismatched:
        return []
    seen = ", ".join(str(mode) for mode in modes) or "none stated"
    return [
        f"{mismatched} scoring(s) of {reader} ran with the model in another mode than {wanted} "
        f"(modes seen: {seen}): its dropout was drawn, or not, against what the run computes"
    ]


def same_number(a: float, b: float) -> bool:
    """Equal, NaN included: a value derived from the same losses by the same function is the same
    float, and a NaN loss (which other gates judge) must not read as a second disagreement."""
    return a == b or (math.isnan(a) and math.isnan(b))


def _aggregation_problems(m: Measured) -> list[str]:
    """GATE-EVAL-002's aggregated, judged, forwards and asked checks: the evaluation's reported mean
    and standard error, and the stopper's, are mean_and_stderr of every held-out batch's loss, each
    of those is the loss its forward made, and the set scored is the size the config asks for."""
    problems = []
    if has(m, *CHECKS["GATE-EVAL-002"]["aggregated"]):
        batches, averaged = count(m, "set_batches"), count(m, "averaged_losses")
        if averaged != batches:
            problems.append(
                f"the evaluation averaged {averaged} losses of the held-out set's {batches} batches"
            )
    if has(m, "asked_batches", "set_batches") and count(m, "asked_batches") != count(m, "set_batches"):
        problems.append(
            f"the evaluation scored a held-out set of {count(m, 'set_batches')} batches where the run's "
            f"config asks for {count(m, 'asked_batches')} (eval.batches, contracts.heldout): its held-out "
            "loss, early stopping and best checkpoint judge another set than the one the record states"
        )
    if has(m, "compared_losses", "mismatched_losses") and count(m, "mismatched_losses"):
        problems.append(
            f"{count(m, 'mismatched_losses')} of the {count(m, 'compared_losses')} held-out losses are not "
            "the cross-entropy their forward computed: a held-out loss altered after the model made it"
        )
    pairs = (
        ("the evaluation reports", "reported_loss", "reported_stderr"),
        ("early stopping judged", "judged_loss", "judged_stderr"),
    )
    for what, loss, stderr in pairs:
        if not has(m, "losses_mean", "losses_stderr", loss, stderr):
            continue
        for got, want in ((loss, "losses_mean"), (stderr, "losses_stderr")):
            if not same_number(number(m, got), number(m, want)):
                problems.append(
                    f"{what} {got.split('_')[1]} {number(m, got):.6g}, but the held-out batches' losses "
                    f"give {number(m, want):.6g}: it did not read every batch's loss"
                )
    return problems


@judges("GATE-TRAIN-006", needs=("loss", "window_mean", "window_std", "window_len"))
def _spike(m: Measured, t: Thresholds) -> list[str]:
    loss, mean, std = number(m, "loss"), number(m, "window_mean"), number(m, "window_std")
    if count(m, "window_len") < t["spike_window_steps"]:
        return []  # judged only once the trailing window is full
    bound = mean + t["spike_sigma"] * std
    if loss > bound:
        return [f"loss {loss:.6g} is above the trailing mean + {t['spike_sigma']}σ = {bound:.6g}"]
    return []


# -- checkpoints ---------------------------------------------------------------------------


@judges(
    "GATE-CKPT-003",
    checks={
        "resume": ("compared", "mismatched"),
        "falsifiers": ("falsifiers+",),
        "replay": ("replayed_steps", "bit_for_bit", "replay_mismatched", "max_loss_rel_diff"),
    },
)
def _resume_exact(m: Measured, t: Thresholds) -> list[str]:
    """At run time: every restored state equals the checkpoint's, and the replayed steps repeat the
    steps taken (bit for bit, or each loss within nondeterministic_loss_rtol when the run is not
    deterministic); in conformance: the falsifiers."""
    replay = ("replayed_steps", "bit_for_bit", "replay_mismatched", "max_loss_rel_diff")
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "compared", "mismatched"):
        compared, mismatched = items(m, "compared"), items(m, "mismatched")
        if not compared:
            problems.append("no restored state was compared with the checkpoint")
        if mismatched:
            problems.append(f"restored state differs from the checkpoint: {', '.join(map(str, mismatched))}")
    if has(m, *replay):
        if count(m, "replayed_steps") < 1:
            problems.append("no step was replayed")
        differ = items(m, "replay_mismatched")
        if differ:
            problems.append(f"the replayed steps differ from the steps taken: {', '.join(map(str, differ))}")
        gap, rtol = number(m, "max_loss_rel_diff"), t["nondeterministic_loss_rtol"]
        if not flag(m, "bit_for_bit") and not gap <= rtol:
            problems.append(
                f"a replayed loss differs from the step taken by {gap:.3g} (relative), above {rtol}"
            )
    return problems


@judges(
    "GATE-CKPT-001",
    checks={
        "complete": ("missing", "checkpoint"),
        # rev 2: the model file read back after the save, against the model the run trains
        "weights": ("weights_compared", "weights_differing", "checkpoint"),
        # rev 3: the optimizer file read back after the save, against the optimizer's live state
        "optimizer": ("optimizer_compared", "optimizer_differing", "checkpoint"),
        # rev 4: each weights file read back has the mode a file created under the umask gets
        "modes": ("umask", "files_moded", "off_mode"),
    },
)
def _complete_checkpoint(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    if has(m, "umask", "files_moded", "off_mode") and (off := items(m, "off_mode")):
        problems.append(
            f"{len(off)} of the checkpoint's {count(m, 'files_moded')} weights file(s) are not the mode a "
            f"file created under umask {m['umask']} gets (contracts.file_modes): {first_few(off)}"
        )
    if has(m, "missing") and (missing := items(m, "missing")):
        problems.append(f"the checkpoint lacks {', '.join(map(str, missing))}")
    if has(m, "weights_compared", "weights_differing"):
        compared, differing = count(m, "weights_compared"), count(m, "weights_differing")
        if not compared:
            problems.append(
                f"no tensor of {m.get('checkpoint')}'s model file was compared with the model trained"
            )
        elif differing:
            problems.append(
                f"{differing} of the {compared} tensors of {m.get('checkpoint')}'s model file (first: "
                f"{m.get('first_differing')}) are not the model the run trained: a resume would continue "
                "another run"
            )
    # An optimizer that has not stepped holds no tensor: an empty state saved empty holds.
    if has(m, "optimizer_compared", "optimizer_differing") and (differing := count(m, "optimizer_differing")):
        problems.append(
            f"{differing} tensor(s) of {m.get('checkpoint')}'s optimizer file (first: "
            f"{m.get('first_optimizer_differing')}) are not the live optimizer's state, bit for bit and "
            "dtype for dtype: a resume would continue with other moments than the run's"
        )
    return problems


@judges(
    "GATE-CKPT-002",
    checks={
        "verified": ("files_verified", "checkpoint", "problem"),
        # rev 2: a command given a run directory reads its newest valid checkpoint
        "newest": ("chosen_checkpoint", "newer_checkpoints", "newer_valid"),
        # rev 3: every prune keeps the checkpoint the run's metrics log names its best
        "best": ("best_checkpoint", "kept_checkpoints"),
        # rev 4: a prune leaves exactly the newest ckpt.keep_last checkpoints written and the best;
        # rev 5: counted among those that verify, not set aside, and with the one resumed from
        "pruned": ("expected_checkpoints",),
    },
)
def _verified_checkpoint(m: Measured, t: Thresholds) -> list[str]:
    """The checkpoint read matches its manifest, file by file; and, chosen from a run directory, no
    checkpoint of the run with a later step loads."""
    problems = []
    if has(m, "files_verified", "problem"):
        if (problem := m.get("problem")) is not None:
            problems.append(f"refusing checkpoint: {problem}")
        elif count(m, "files_verified") < 1:
            problems.append("no file of the checkpoint was verified")
    if has(m, "newer_checkpoints", "newer_valid") and (newer := items(m, "newer_valid")):
        problems.append(
            f"{m.get('chosen_checkpoint')} was read from the run directory while its newer checkpoint(s) "
            f"{', '.join(map(str, newer))} load: a resume would repeat steps the run took, a command "
            "would read an older model than the run's"
        )
    best = m.get("best_checkpoint")
    if has(m, "best_checkpoint", "kept_checkpoints") and best is not None:
        kept = list(map(str, items(m, "kept_checkpoints")))
        if best not in kept:
            problems.append(
                f"the run's metrics log names {best} its best checkpoint (written right after its lowest "
                f"held-out loss), but a prune left only {', '.join(kept)}"
            )
    if has(m, "expected_checkpoints", "kept_checkpoints"):
        kept = sorted(map(str, items(m, "kept_checkpoints")))
        expected = sorted(map(str, items(m, "expected_checkpoints")))
        if kept != expected:
            problems.append(
                f"a prune left {', '.join(kept) or 'nothing'} that verify against their manifests, where the "
                f"run's metrics log says it keeps {', '.join(expected)} (the newest ckpt.keep_last written "
                "and not set aside, the best, and the checkpoint the run resumed from)"
            )
    return problems


# -- model, trace, export ------------------------------------------------------------------


def _deviations(compared: Any, kind: str, atol: float, rtol: float) -> list[str]:
    """'<name> differs by …' for each entry of `compared` (name → {"max_abs_diff", "ref_absmax"})
    whose difference exceeds atol + rtol × its reference's largest magnitude."""
    if not isinstance(compared, Mapping) or not compared:
        raise Malformed(f"the {kind}s must name at least one compared {kind}")
    problems = []
    for name, values in sorted(compared.items()):
        if not isinstance(values, Mapping):
            raise Malformed(f"{kind} {name!r} has no values")
        diff, scale = number(values, "max_abs_diff"), number(values, "ref_absmax")
        allowed = atol + rtol * scale
        if not diff <= allowed:
            problems.append(f"{name} differs by {diff:.3g} (allowed {allowed:.3g})")
    return problems


@judges("GATE-MODEL-001", needs=("paths+",))
def _attention_paths(m: Measured, t: Thresholds) -> list[str]:
    problems = _deviations(m.get("paths"), "path", t["path_atol"], t["path_rtol"])
    if problems:
        problems.append("is 1/sqrt(head_dim) applied twice, or not at all, somewhere?")
    return problems


@judges(
    "GATE-MODEL-003",
    checks={
        "architecture": ("checked", "forms"),
        "init": ("init+",),
        # rev 4: the parameters the model holds are those its config implies (contracts.model_parameters)
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
        problems = _deviations(m.get("forms"), "form", t["model_atol"], t["model_rtol"])
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


@judges("GATE-KERNEL-001", checks={"parity": ("outputs+", "low_precision"), "falsifiers": ("falsifiers+",)})
def _kernel_parity(m: Measured, t: Thresholds) -> list[str]:
    """Each output within atol + rtol × the reference's largest magnitude, per input precision.

    The conformance record (the falsifier tests' outcomes) is judged too, like any test gate.
    """
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "outputs", "low_precision"):
        prefix = "lowp" if flag(m, "low_precision") else "fp32"
        problems += _deviations(m["outputs"], "output", t[f"{prefix}_atol"], t[f"{prefix}_rtol"])
    return problems


@judges("GATE-MODEL-002", checks={"overfit": ("best_loss", "steps"), "falsifiers": ("falsifiers+",)})
def _tiny_model_overfits(m: Measured, t: Thresholds) -> list[str]:
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "best_loss", "steps"):
        loss, steps = number(m, "best_loss"), count(m, "steps")
        if not loss < t["overfit_max_loss"]:
            problems.append(f"the tiny model's best loss {loss:.4g} is not below {t['overfit_max_loss']}")
        if steps > t["overfit_max_steps"]:
            problems.append(f"it took {steps} steps, more than the budget of {t['overfit_max_steps']:g}")
    return problems


@judges(
    "GATE-TRACE-001",
    checks={"logits": ("differing_elements", "same_dtype"), "falsifiers": ("falsifiers+",)},
)
def _tracing_changes_nothing(m: Measured, t: Thresholds) -> list[str]:
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "differing_elements", "same_dtype"):
        if not flag(m, "same_dtype"):
            problems.append("the traced logits have another shape or dtype than the untraced ones")
        elif differing := count(m, "differing_elements"):
            problems.append(f"tracing changed {differing} logit(s)")
    return problems


@judges(
    "GATE-DIST-001",
    checks={
        "parity": ("max_loss_diff", "batches_differ_at", "steps_missing"),
        "falsifiers": ("falsifiers+",),
    },
)
def _data_parallel_matches(m: Measured, t: Thresholds) -> list[str]:
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "max_loss_diff", "batches_differ_at", "steps_missing"):
        diff, differ = number(m, "max_loss_diff"), items(m, "batches_differ_at")
        if differ:
            problems.append(f"different batches at step(s) {', '.join(map(str, differ[:5]))}")
        if not diff <= t["loss_atol"]:
            problems.append(f"losses differ by up to {diff:.3g} (atol {t['loss_atol']})")
        if count(m, "steps_missing"):
            problems.append(f"{count(m, 'steps_missing')} step(s) logged by one run only")
    return problems


@judges(
    "GATE-TRACE-003",
    checks={
        "site": ("std_ratio", "nonfinite"),
        "divergence": (
            "max_abs_error_over_rtol",
            "reference_error",
            "given_atol",
            "nonfinite_mismatch",
            "same_shape",
        ),
        "producer": ("nonfinite_elements", "nonfinite_inputs"),
        # rev 2: the anomalies a single-path trace names are those its sites' statistics give
        "anomalies": ("site_stats+", "sites_judged+", "anomalies_named"),
        # rev 3: an ablation's reported KL(intact ‖ ablated) is the one torch's kl_div gives
        "ablation": (
            "mean_kl_reported",
            "mean_kl_recomputed",
            # rev 4: the ablation's other numbers, each recomputed from the two forwards' tensors
            "output_change_reported",
            "output_change_recomputed",
            "argmax_changed_reported",
            "argmax_changed_recomputed",
            "positions_reported",
            "positions_recomputed",
        ),
        # rev 4: each greedy continuation of --sample N is N new ids
        "samples": ("samples_asked", "sample_ids+"),
        # rev 5: the sites the ablated forward zeroed (and the continuations shown) are those asked
        "ablated": ("ablate_asked+", "ablate_zeroed", "ablate_reported", "sample_asked", "continuations"),
        # rev 5: every compared site was judged at the tolerance --atol/--rtol ask for there
        "tolerance": ("atol_asked", "rtol_asked", "site_tolerances"),
        # rev 6: each compared site's reported minimum tolerances, recomputed from the sites' values
        "margins": ("margins_reported+", "margins_recomputed+"),
        "falsifiers": ("falsifiers+",),
    },
)
def _site_named(m: Measured, t: Thresholds) -> list[str]:
    """Whether a site is one the trace names: a problem found is the site named, none lets it pass.

    site (anomaly mode): its std beyond anomaly_std_multiple × the same site's median in the other
    layers, or not finite.
    divergence (bisection, path B against path A at one site): an element over the site's rtol
    differs by more than fp64_error_multiple × the reference path's own error from fp64 there (or
    by more than the atol the user gave, when one applies), NaN/Inf stand on one side only, or the
    shapes differ. The reference path's own rounding is no bug, so only a difference well beyond
    it counts; the largest difference over rtol decides as every element would.
    producer (NaN/Inf in one trace): a site holding NaN/Inf whose inputs are all finite made them;
    a site fed NaN/Inf only passes them on, and naming it would hide where they came from.
    anomalies (a single-path trace's report): the sites it names as anomalies, each with the layers
    of its baseline, are exactly those the `site` rule gives when every judged site is set against
    the same site in the other layers (contracts.trace_anomaly), from the statistics it measured.
    ablation (an ablation's report): the mean KL(intact ‖ ablated) it reports is within
    ablation_kl_atol of the one contracts.divergence gives from the intact and ablated logits; every
    layer's output change, the changed argmaxes and the positions it reports are those the
    contracts' formulas give from the two forwards' kept tensors, exactly (the run reports them by
    the same functions), and the changed argmaxes are at most the positions.
    samples (an ablation with --sample N): each greedy continuation holds exactly N new ids.
    ablated (an ablation): the sites the ablated forward's hooks overwrote with zeros are those the
    command line's --ablate names, and the report names them as given; the report shows two greedy
    continuations where --sample N > 0 asks for them and none otherwise.
    tolerance (a bisection): every compared site was judged at the atol and rtol
    contracts.trace_tolerance.asked_bounds gives from the command line's --atol/--rtol, and where no
    rule matches at fp64_error_multiple × the site's reference error and default_rtol.
    margins (a bisection): each compared site's reported min_atol and min_rtol (min_atol also
    decides the site) are exactly those contracts.trace_tolerance.tolerance_margins gives from the
    two sites' values at the site's tolerance.
    """
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "std_ratio", "nonfinite"):
        role = m.get("role")
        problems += _anomalous_site(number(m, "std_ratio"), flag(m, "nonfinite"), t, role)
    if has(m, "site_stats", "sites_judged", "anomalies_named"):
        problems += _anomalies_rederived(m, t)
    if has(m, "max_abs_error_over_rtol"):
        problems += _diverges(m, t)
    if has(m, "nonfinite_elements"):
        made, fed = count(m, "nonfinite_elements"), count(m, "nonfinite_inputs")
        if made and not fed:
            problems.append(f"the site makes {made} NaN/Inf value(s) from finite inputs")
    if has(m, "mean_kl_reported", "mean_kl_recomputed"):
        reported, recomputed = number(m, "mean_kl_reported"), number(m, "mean_kl_recomputed")
        if not abs(reported - recomputed) <= t["ablation_kl_atol"]:
            problems.append(
                f"the ablation reports a mean KL(intact ‖ ablated) of {reported:.6g} nats, but the intact "
                f"and ablated logits give {recomputed:.6g} (allowed {t['ablation_kl_atol']:g}): the KL "
                "reversed, or over other logits"
            )
    if has(m, "output_change_reported", "output_change_recomputed"):
        problems += _ablation_counts_wrong(m)
    if has(m, "ablate_asked", "ablate_zeroed", "ablate_reported", "sample_asked", "continuations"):
        problems += _ablation_unasked(m)
    if has(m, "atol_asked", "rtol_asked", "site_tolerances"):
        problems += _tolerances_unasked(m, t)
    if has(m, "margins_reported", "margins_recomputed"):
        problems += _margins_restated(m)
    if has(m, "samples_asked", "sample_ids"):
        asked, ids = count(m, "samples_asked"), m["sample_ids"]
        wrong = {k: n for k, n in ids.items() if n != asked} if isinstance(ids, Mapping) else ids
        if wrong:
            problems.append(f"--sample {asked} asks for {asked} new token(s); the continuations hold {wrong}")
    return problems


def _ablation_unasked(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `ablated`: the sites zeroed and named, and the continuations shown,
    against what --ablate and --sample asked for."""
    asked, zeroed, reported = items(m, "ablate_asked"), items(m, "ablate_zeroed"), items(m, "ablate_reported")
    problems = []
    if sorted(set(map(str, zeroed))) != sorted(set(map(str, asked))):
        problems.append(
            f"--ablate asks to zero {sorted(set(asked))}, but the ablated forward's hooks zeroed "
            f"{sorted(set(zeroed))}"
        )
    if reported != asked:
        problems.append(f"--ablate asks for {asked}, but the report says {reported} were ablated")
    sample, shown = count(m, "sample_asked"), count(m, "continuations")
    if shown != (2 if sample else 0):
        problems.append(
            f"--sample {sample} asks for {'two' if sample else 'no'} continuations; the report shows {shown}"
        )
    return problems


def _margins_restated(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `margins`: each site's reported minimum tolerances against those
    contracts.trace_tolerance.tolerance_margins gives from its values (both maxima of the same
    float64 elements, so exactly)."""
    reported, recomputed = m["margins_reported"], m["margins_recomputed"]
    if not (isinstance(reported, Mapping) and isinstance(recomputed, Mapping)):
        raise Malformed("'margins_reported' and 'margins_recomputed' must map each site to its margins")
    wrong = [
        f"{name} {key} {(reported.get(name) or {}).get(key)!r} (its values give {value!r})"
        for name, margins in recomputed.items()
        for key, value in (margins.items() if isinstance(margins, Mapping) else [])
        if (reported.get(name) or {}).get(key) != value
    ]
    wrong += [f"{name} reported, never recomputed" for name in reported if name not in recomputed]
    if not wrong:
        return []
    return [
        f"the bisection reports minimum tolerances its sites' values do not give "
        f"(contracts.trace_tolerance.tolerance_margins): {first_few(wrong, 4, '; ')}"
    ]


def _tolerances_unasked(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's check `tolerance`: each compared site's atol and rtol against the bounds the
    command line's --atol/--rtol ask for there (contracts.trace_tolerance), or the calibrated atol
    and the default rtol where no rule matches."""
    atol_words, rtol_words = items(m, "atol_asked"), items(m, "rtol_asked")
    if not all(isinstance(w, str) for w in [*atol_words, *rtol_words]):
        raise Malformed("'atol_asked' and 'rtol_asked' must list the command line's words")
    wrong = []
    for row in items(m, "site_tolerances"):
        if not isinstance(row, Mapping) or not isinstance(row.get("name"), str):
            raise Malformed("each entry of 'site_tolerances' must be an object with the site's 'name'")
        try:
            atol, rtol = asked_bounds(row["name"], atol_words, rtol_words)
        except ValueError as exc:
            raise Malformed(f"an --atol/--rtol word is not GLOB=VALUE: {exc}") from None
        reference = row.get("reference_error")
        judged = number(row, "atol")
        if atol is None:
            calibrated = isinstance(reference, int | float) and not isinstance(reference, bool)
            fits = calibrated and judged == t["fp64_error_multiple"] * reference
            want = f"{t['fp64_error_multiple']:g} × its fp64 error {reference}"
        else:
            fits, want = reference is None and judged == atol, f"{atol:g} (--atol)"
        want_rtol = t["default_rtol"] if rtol is None else rtol
        if not fits or number(row, "rtol") != want_rtol:
            wrong.append(
                f"{row['name']} judged at atol {judged:g}, rtol {row.get('rtol')} "
                f"(asked: atol {want}, rtol {want_rtol:g})"
            )
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    said = " ".join([*(f"--atol {w}" for w in atol_words), *(f"--rtol {w}" for w in rtol_words)]) or "none"
    return [f"{len(wrong)} site(s) were not judged at the tolerance the command line asks ({said}): {shown}"]


def _ablation_counts_wrong(m: Measured) -> list[str]:
    """GATE-TRACE-003's check `ablation`, beyond the KL: the per-layer output changes, the changed
    argmaxes and the positions reported, against those recomputed from the kept tensors."""
    problems = []
    reported, recomputed = m["output_change_reported"], m["output_change_recomputed"]
    if not isinstance(reported, Mapping) or not isinstance(recomputed, Mapping):
        raise Malformed("'output_change_reported' and '_recomputed' must map each layer to its change")
    unlike = {k: (reported.get(k), v) for k, v in recomputed.items() if reported.get(k) != v}
    if unlike or set(reported) != set(recomputed):
        pairs = list(unlike.items())[:4]
        shown = "; ".join(f"layer {k}: reported {r}, recomputed {v:.6g}" for k, (r, v) in pairs)
        problems.append(
            f"the per-layer output changes reported are not ‖ablated − intact‖ / ‖intact‖ of the two "
            f"forwards' block outputs ({shown or f'layers {sorted(reported)} against {sorted(recomputed)}'})"
        )
    positions = count(m, "positions_recomputed")
    if count(m, "positions_reported") != positions:
        reported_positions = m["positions_reported"]
        problems.append(f"the ablation reports {reported_positions} positions; the logits hold {positions}")
    flips, recounted = count(m, "argmax_changed_reported"), count(m, "argmax_changed_recomputed")
    if flips != recounted or flips > positions:
        problems.append(
            f"the argmax changes at {flips} of {positions} position(s) as reported, but the logits' "
            f"argmax over the vocabulary changes at {recounted}"
        )
    return problems


def _anomalous_site(ratio: float, nonfinite: bool, t: Thresholds, role: Any = None) -> list[str]:
    """GATE-TRACE-003's check `site`: a site holding NaN/Inf, or whose std is beyond
    anomaly_std_multiple × its baseline, is an anomaly (see `_site_named`); from rev 8 a site with a
    role (contracts.trace_anomaly.ROLES: `role` names it) is held to its role's multiple instead,
    `<role>_std_multiple`, calibrated on healthy models."""
    if nonfinite:
        return ["the site holds NaN or Inf"]
    multiple = t.get(f"{role}_std_multiple", t["anomaly_std_multiple"]) if role else t["anomaly_std_multiple"]
    if ratio > multiple:
        return [f"its std is {ratio:.3g}x the same site's median in the other layers (beyond {multiple:g})"]
    return []


def _anomalies_rederived(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's check `anomalies` (see `_site_named`): the named anomalies and their
    baselines' layers against those the sites' statistics give under the `site` rule."""
    stats = m["site_stats"]
    if not isinstance(stats, Mapping) or not all(isinstance(v, Mapping) for v in stats.values()):
        raise Malformed("'site_stats' is not an object of per-site statistics")
    named = [a for a in items(m, "anomalies_named") if isinstance(a, Mapping)]
    if len(named) != len(items(m, "anomalies_named")):
        raise Malformed("'anomalies_named' holds an entry that is not an object")
    derived = anomalies(
        stats,
        [str(n) for n in items(m, "sites_judged")],
        lambda b: bool(_anomalous_site(b.ratio, b.nonfinite, t, b.role.name if b.role else None)),
        ROLES_SINCE if "first_mlp_std_multiple" in t else EMBEDDING_STREAM_SINCE,
    )
    problems = []
    own = [str(a.get("name")) for a in named if _own_layer_in_baseline(a)]
    if own:
        problems.append(
            f"the baseline of {', '.join(own)} includes the site's own layer: a layer that blew up "
            "pulls its own baseline up and hides; a site is set against the other layers only"
        )
    given = [(str(a.get("name")), a.get("baseline_layers")) for a in named]
    wanted = [(b.name, list(b.baseline_layers)) for b in derived]
    if given != wanted:
        problems.append(
            f"the trace names anomalies {_named(given)}, but the statistics of its sites give "
            f"{_named(wanted)} (each site's std against the median of the same site in the other layers)"
        )
    return problems


def _own_layer_in_baseline(anomaly: Mapping[str, Any]) -> bool:
    """Whether a named anomaly's baseline lists its own layer."""
    where = block_site(str(anomaly.get("name")))
    layers = anomaly.get("baseline_layers")
    return where is not None and isinstance(layers, list) and where[0] in layers


def _named(pairs: list[tuple[str, Any]]) -> str:
    """Anomalies with their baselines' layers, for a message."""
    return "[" + "; ".join(f"{name} (of layers {layers})" for name, layers in pairs) + "]"


def _diverges(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-003's divergence check, path B leaving path A at one site (see `_site_named`)."""
    if not flag(m, "same_shape"):
        return ["the paths' values have different shapes"]
    problems = []
    if mismatched := count(m, "nonfinite_mismatch"):
        problems.append(f"{mismatched} element(s) are NaN/Inf on one side only")
    excess = number(m, "max_abs_error_over_rtol")
    if m["given_atol"] is not None:
        allowed, what = number(m, "given_atol"), "the given atol"
    else:
        allowed = t["fp64_error_multiple"] * number(m, "reference_error")
        what = f"{t['fp64_error_multiple']:g} × the reference path's error from fp64"
    if not excess <= allowed:
        problems.append(f"an element over rtol differs by {excess:.3g}, beyond {what} ({allowed:.3g})")
    return problems


@judges(
    "GATE-TRACE-002",
    checks={
        "complete": ("missing", "partial", "recorded_twice"),
        "identity": ("identities+",),
        # rev 3: a sample of sites' statistics are their definitions' from the tensors observed
        "statistics": ("stats_recorded+", "stats_recomputed+"),
        # rev 4: the sites each kept trace shows are those --layers and --sites select
        "selection": ("shown", "selected+"),
        # rev 5: a --dump read back holds each traced site's elements at the format's positions
        "dump": ("dump_sha256", "dump_sites", "dump_traced", "dump_unlike"),
        # rev 5: every traced site holds the dtype its path's --dtype / --dtype-b names
        "dtype": ("dtype_asked", "dtype_seen"),
    },
)
def _trace_complete(m: Measured, t: Thresholds) -> list[str]:
    """Every site present once with every statistic (`complete`), each site that is a module's
    output within site_identity_rtol × its largest magnitude of that module on the traced sites
    it reads (`identity`): a hook on the wrong module, or two names swapped, fails there; and the
    statistics recorded of a sample of sites consistent with each other and with those recomputed
    by their definitions from the tensors the sites observed (`statistics`); a --dump read back
    from its bytes holds every traced site, each at its elements at the positions the format keeps
    (`dump`, contracts.dump_sample)."""
    problems = _statistics_problems(m, t) if has(m, "stats_recorded", "stats_recomputed") else []
    if has(m, "shown", "selected"):
        problems += _selection_problems(m)
    if has(m, "dtype_asked", "dtype_seen"):
        problems += _dtype_problems(m)
    if has(m, "dump_sites", "dump_traced", "dump_unlike"):
        unlike, sites, traced = items(m, "dump_unlike"), count(m, "dump_sites"), count(m, "dump_traced")
        if unlike or sites != traced:
            problems.append(
                f"the dump written holds {sites} site(s) of the {traced} traced, and "
                f"{len(unlike)} hold other elements than the traced site's at the positions the format "
                f"keeps (contracts.dump_sample): {first_few([str(u) for u in unlike], 5)}"
            )
    if has(m, "identities"):
        found = _deviations(m["identities"], "site", 0.0, t["site_identity_rtol"])
        if found:
            problems.append(
                f"site(s) do not hold what their names say ({'; '.join(found)}, recomputed by the "
                "module each name names from the traced sites it reads): a hook on the wrong module?"
            )
        problems += _identity_sample_problems(m["identities"], t)
    if not has(m, "missing", "partial", "recorded_twice"):
        return problems
    gaps = {key: count(m, key) for key in ("missing", "partial", "recorded_twice")}
    if not any(gaps.values()):
        return problems
    examples = m.get("examples") if isinstance(m.get("examples"), Mapping) else {}
    parts = [
        f"{key.replace('_', ' ')}: {', '.join(map(str, examples.get(key, []))) or n}"
        for key, n in gaps.items()
        if n
    ]
    return [f"the trace is incomplete ({'; '.join(parts)})", *problems]


def _identity_sample_problems(identities: Any, t: Thresholds) -> list[str]:
    """GATE-TRACE-002's check `identity` from rev 6: each identity that states its rows was checked
    on at least min(rows, identity_sample_rows) of them (all of them under --verify); a sample
    shrunk below that catches less than the revision states."""
    if "identity_sample_rows" not in t or not isinstance(identities, Mapping):
        return []
    short = []
    for name, values in sorted(identities.items()):
        if isinstance(values, Mapping) and "rows" in values and "rows_checked" in values:
            rows, checked = number(values, "rows"), number(values, "rows_checked")
            if not checked >= min(rows, t["identity_sample_rows"]):
                short.append(f"{name} ({checked:g} of {rows:g})")
    if not short:
        return []
    return [
        f"identities checked on fewer rows than min(rows, identity_sample_rows = "
        f"{t['identity_sample_rows']:g}): {first_few(short, 4, '; ')}"
    ]


def _dtype_problems(m: Measured) -> list[str]:
    """GATE-TRACE-002's check dtype: per traced path, the dtypes its sites' tensors held against the
    one its --dtype / --dtype-b names (contracts.trace_paths.PATH_DTYPES)."""
    asked, seen = m["dtype_asked"], m["dtype_seen"]
    if not (isinstance(asked, Mapping) and isinstance(seen, Mapping)):
        raise Malformed("'dtype_asked' and 'dtype_seen' must map each path to its dtype(s)")
    problems = []
    for label, name in asked.items():
        want, held = PATH_DTYPES.get(str(name)), seen.get(label)
        if want is None or held != [want]:
            problems.append(
                f"path {label} asked for {name} ({want or 'no dtype a trace runs in'}), but its sites' "
                f"tensors held {held} (contracts.trace_paths)"
            )
    return problems


def _selection_problems(m: Measured) -> list[str]:
    """GATE-TRACE-002's check `selection`: every trace the report keeps shows exactly the sites
    contracts.selection.trace_sites selects from the forward's sites by --layers and --sites (a
    bisection stopped at the first NaN keeps none)."""
    shown, selected = m["shown"], items(m, "selected")
    if not isinstance(shown, Mapping):
        raise Malformed("'shown' must map each kept trace to the sites it shows")
    return [
        f"the {label} trace shows {len(sites)} site(s), but --layers and --sites select {len(selected)} "
        f"(contracts.selection.trace_sites): an option ignored?"
        for label, sites in shown.items()
        if list(sites) != list(selected)
    ]


def _statistics_problems(m: Measured, t: Thresholds) -> list[str]:
    """GATE-TRACE-002's check `statistics`: per sampled site, the recorded statistics against each
    other (contracts.site_statistics.inconsistencies) and against those recomputed from its tensor:
    the counts, min, max and absmax exactly, mean and std within statistics_rtol × the recomputed
    absmax, l1_fp64 within statistics_rtol × itself (other summation orders, float32 sums on the
    torch path)."""
    recorded, recomputed = m["stats_recorded"], m["stats_recomputed"]
    if not isinstance(recorded, Mapping) or not isinstance(recomputed, Mapping):
        raise Malformed("'stats_recorded' and 'stats_recomputed' must map each site to its statistics")
    if set(recorded) != set(recomputed):
        return [f"statistics recorded of sites {sorted(recorded)}, recomputed of {sorted(recomputed)}"]
    found = []
    for site in sorted(recorded):
        mine, again = recorded[site], recomputed[site]
        if not isinstance(mine, Mapping) or not isinstance(again, Mapping):
            raise Malformed(f"the statistics of {site} are not an object of statistics")
        found += [f"{site}: {p}" for p in inconsistencies(mine)]
        found += [f"{site}: {p}" for p in _unlike_recomputed(mine, again, t["statistics_rtol"])]
    if not found:
        return []
    shown = first_few(found, 4, "; ")
    return [
        f"the trace's statistics are not what their definitions give from the tensors the sites observed "
        f"({shown}): the statistics kernel computes another quantity?"
    ]


def _unlike_recomputed(mine: Mapping[str, Any], again: Mapping[str, Any], rtol: float) -> list[str]:
    """The statistics of one site recorded otherwise than recomputed (see `_statistics_problems`)."""
    scale = {"mean": "absmax", "std": "absmax", "l1_fp64": "l1_fp64"}
    off = []
    for key in STATISTICS:
        have, want = real_statistic(mine.get(key)), real_statistic(again.get(key))
        if have is None or want is None:
            raise Malformed(f"statistic {key} is {mine.get(key)!r} recorded, {again.get(key)!r} recomputed")
        if have == want or (math.isnan(have) and math.isnan(want)):
            continue
        size = real_statistic(again.get(scale.get(key, key))) or 0.0
        allowed = 0.0 if key in EXACT or not math.isfinite(want) else rtol * abs(size)
        if not abs(have - want) <= allowed:
            off.append(f"{key} {have!r}, recomputed {want!r}")
    return off


def _logits_within(m: Measured, prefix: str, atol: float, what: str) -> list[str]:
    diff, finite = number(m, f"{prefix}max_abs_diff"), flag(m, f"{prefix}finite")
    if finite and diff <= atol:
        return []
    return [f"{what} logits differ by up to {diff:.3g} (atol {atol}; finite: {finite})"]


# The dtype of the logits GATE-EXPORT-001's rounding is measured against (check exact): a float64
# forward's, as torch names it.
ROUNDING_REFERENCE_DTYPE = "torch.float64"


# What a gate comparing logits on a sample (GATE-EXPORT-001/002, GATE-HQQ-002) measures of it: the
# windows it consumed and what their named source gives (contracts.agreement_sample.source_facts).
SAMPLE_KEYS = ("sample_ids_sha256", "sample_windows", "source_ids_sha256", "source_windows")


def _sample_problems(m: Measured) -> list[str]:
    """Check sample: the windows compared on are, id for id and in number, those their source gives."""
    if not has(m, *SAMPLE_KEYS):
        return []
    source = m.get("sample_source", "its source")
    if count(m, "sample_windows") != count(m, "source_windows"):
        return [
            f"the comparison read {m['sample_windows']} window(s) of the sample, but {source} gives "
            f"{m['source_windows']}: fewer positions compared than the source allows"
        ]
    if m.get("sample_ids_sha256") != m.get("source_ids_sha256"):
        return [
            f"the comparison read other ids (sha256 {str(m['sample_ids_sha256'])[:12]}) than {source} gives "
            f"({str(m['source_ids_sha256'])[:12]}): the sample is not the text its record names"
        ]
    return []


def tensors_within(m: Measured, prefix: str, atol: float, what: str) -> list[str]:
    """Check tensors of the parity gates: the largest difference between the two logits tensors as
    contracts.logits_parity computes it (`…max_abs_diff_tensors`, nan or inf for logits not finite or
    of another shape) within `atol`, and the number the record states (`…max_abs_diff`) that one."""
    diff = number(m, f"{prefix}max_abs_diff_tensors")
    problems = [] if diff <= atol else [f"{what} logits differ by up to {diff:.3g} (atol {atol})"]
    return problems + restated_from_tensors(m, f"{prefix}max_abs_diff", what)


def restated_from_tensors(m: Measured, key: str, what: str) -> list[str]:
    """The number the record states (`key`) against the one contracts.logits_parity computes from the
    same two tensors (`key_tensors`): equal, nan for nan, since both read the same float64 values."""
    stated, measured = number(m, key), number(m, f"{key}_tensors")
    if stated == measured or (math.isnan(stated) and math.isnan(measured)):
        return []
    return [
        f"{what} {key} is stated as {stated:.6g}, but the two logits tensors give {measured:.6g} "
        "(contracts.logits_parity): the stated number is not the one its definition gives"
    ]


@judges(
    "GATE-EXPORT-001",
    checks={
        "logits": ("max_abs_diff", "finite"),
        "special": ("special_ids+", "eot_id"),
        # rev 3: the configuration read back from the export is the model's (rev 4: every field
        # of config.json as transformers loads it, dtype included, against contracts.hf_export)
        "architecture": ("architecture_keys", "architecture_differing"),
        # rev 4: a plain from_pretrained loads the export in the dtype its weights are stored in
        "loaded": ("loaded_dtypes+", "stored_dtypes+"),
        # rev 4: the tokenizer transformers reads back is the model's own
        "tokenizer": ("tokenizer_keys", "tokenizer_differing"),
        # rev 5: the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # rev 5: the largest difference recomputed from the two logits tensors (contracts.logits_parity)
        "tensors": ("max_abs_diff", "max_abs_diff_tensors"),
        # rev 5: the stack's own fp32 rounding on the sample, which scales the tolerance
        "rounding": ("rounding_error",),
        # rev 6: the rounding was measured against logits a float64 forward gave
        "exact": ("rounding_reference_dtype",),
    },
)
def _hf_parity(m: Measured, t: Thresholds) -> list[str]:
    """The HF model's logits within logits_atol of the stack's (`logits`), every special id an
    export names, where transformers reads it, the model's own (`special`), every setting the
    importer reads back from the export and every field of its config.json the model's own
    (`architecture`), the dtypes a plain load gives the ones stored (`loaded`), and the tokenizer
    transformers reads from it, its special tokens, chat template and ids, the model's own
    (`tokenizer`)."""
    what, atol = "the Hugging Face export's", hf_logits_tolerance(m, t)
    problems = _logits_within(m, "", atol, what) if has(m, "finite") else []
    problems += _sample_problems(m)
    if has(m, "max_abs_diff_tensors"):
        problems += tensors_within(m, "", atol, what)
    if has(m, "rounding_reference_dtype") and m["rounding_reference_dtype"] != ROUNDING_REFERENCE_DTYPE:
        problems.append(
            f"the stack's rounding was measured against {m['rounding_reference_dtype']} logits, not "
            f"{ROUNDING_REFERENCE_DTYPE}: the fp32 forward measured against itself, a rounding of about 0 "
            "that narrows the tolerance it scales"
        )
    if has(m, "loaded_dtypes", "stored_dtypes"):
        loaded, stored = (
            sorted(map(str, items(m, "loaded_dtypes"))),
            sorted(map(str, items(m, "stored_dtypes"))),
        )
        if loaded != stored:
            problems.append(
                f"transformers' plain from_pretrained loads the export in {', '.join(loaded)}, but its "
                f"weights are stored in {', '.join(stored)}: config.json declares another dtype than its "
                "weights', and users get a model other than the one exported"
            )
    if has(m, "special_ids", "eot_id"):
        problems += _special_id_problems(m)
    if has(m, "architecture_keys", "architecture_differing"):
        differing = _differing(m, "architecture_differing")
        if differing or count(m, "architecture_keys") < 1:
            problems.append(
                f"the configuration read back from the export is not the model's: {dict(differing)} "
                f"({count(m, 'architecture_keys')} setting(s) read back); a model loaded from it computes "
                "something else past what parity compared"
            )
    if has(m, "tokenizer_keys", "tokenizer_differing"):
        differing = _differing(m, "tokenizer_differing")
        if differing or count(m, "tokenizer_keys") < 1:
            listed = ", ".join(sorted(differing))
            problems.append(
                f"the tokenizer transformers reads back is not the model's own: {listed} differ "
                f"({count(m, 'tokenizer_keys')} value(s) read back); its users would get other special "
                "tokens, prompts or ids than the model's"
            )
    return problems


def _differing(m: Measured, key: str) -> Mapping[str, Any]:
    """A read-back's differing values, each setting to what differs."""
    differing = m[key]
    if not isinstance(differing, Mapping):
        raise Malformed(f"'{key}' must map each setting to what differs")
    return differing


def hf_logits_tolerance(m: Measured, t: Thresholds) -> float:
    """The largest logit difference GATE-EXPORT-001 admits: logits_atol, or, from rev 5, where the
    record measured it, logits_rounding_factor × the rounding the stack's own fp32 forward makes on
    the sample (its largest difference from the same model in float64), if that is larger. Two
    correct fp32 implementations differ by their summation order, which grows with depth, width and
    the logits' scale: a user's 8-layer Llama with logits near 8 was refused at 1.1e-4 (round-10
    user audit K04), while a wrong weight or rotary layout moves the logits by far more."""
    if not has(m, "rounding_error"):
        return float(t["logits_atol"])
    return max(float(t["logits_atol"]), float(t["logits_rounding_factor"]) * number(m, "rounding_error"))


def _special_id_problems(m: Measured) -> list[str]:
    """Each special id read from the export is the model's own (`special_expected`, by where it is
    read; rev 3 records name none, and then every one is the end of text of the stack's tokenizer)."""
    found, eot = m["special_ids"], count(m, "eot_id")
    if not isinstance(found, Mapping):
        raise Malformed("'special_ids' must map where each id was read to the id")
    expected = m.get("special_expected", dict.fromkeys(found, eot))
    if not isinstance(expected, Mapping):
        raise Malformed("'special_expected' must map where each id is read to the model's own")
    wrong = {
        where: (found.get(where), value)
        for where, value in sorted(expected.items())
        if isinstance(found.get(where), bool) or found.get(where) != value
    }
    if not wrong:
        return []
    listed = ", ".join(f"{where} is {got}, not {value}" for where, (got, value) in wrong.items())
    return [
        f"the export names other special ids than the model's own ({listed}): "
        "generation from it would not stop, or start, where the model learned to"
    ]


@judges(
    "GATE-EXPORT-002",
    checks={
        "fp32": ("fp32_max_abs_diff", "fp32_finite"),
        "int8": ("int8_argmax_agreement", "int8_finite"),
        # rev 2: the int8 graph, as saved, stores every quantised matmul weight as INT8
        "weights": ("int8_weight_types+",),
        # rev 3: the saved fp32 graph's opset_import declares the opset the export was asked for
        "opset": ("opset", "opset_asked"),
        # rev 4: the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # rev 4: the numbers recomputed from the two logits tensors (contracts.logits_parity)
        "tensors": ("fp32_max_abs_diff", "fp32_max_abs_diff_tensors"),
        "int8_tensors": ("int8_argmax_agreement_tensors", "int8_max_abs_diff_tensors"),
    },
)
def _onnx_parity(m: Measured, t: Thresholds) -> list[str]:
    problems = _int8_weight_problems(m) if has(m, "int8_weight_types") else []
    problems += _sample_problems(m)
    if has(m, "opset", "opset_asked") and count(m, "opset") != count(m, "opset_asked"):
        problems.append(
            f"the saved graph declares ai.onnx opset {count(m, 'opset')}, but the export was asked for opset "
            f"{count(m, 'opset_asked')}: a runtime that needs the asked opset's operators cannot load it"
        )
    if has(m, "fp32_max_abs_diff") and has(m, "fp32_finite"):
        problems += _logits_within(m, "fp32_", t["fp32_logits_atol"], "the fp32 graph's")
    if has(m, "fp32_max_abs_diff_tensors"):
        problems += tensors_within(m, "fp32_", t["fp32_logits_atol"], "the fp32 graph's")
    if has(m, "int8_argmax_agreement_tensors", "int8_max_abs_diff_tensors"):
        problems += _int8_tensor_problems(m, t["int8_argmax_agreement"])
    if has(m, "int8_argmax_agreement"):
        agreement, finite = number(m, "int8_argmax_agreement"), flag(m, "int8_finite")
        if not (finite and agreement >= t["int8_argmax_agreement"]):
            problems.append(
                f"the int8 graph keeps the next-token argmax at {agreement:.1%} of positions "
                f"(at least {t['int8_argmax_agreement']:.0%}; finite: {finite})"
            )
    return problems


def _int8_tensor_problems(m: Measured, least: float) -> list[str]:
    """Check int8_tensors: the int8 graph's logits finite and of the stack's shape, and its argmax
    agreement as contracts.logits_parity computes them from the two tensors at least `least`; the
    record's stated agreement and difference those."""
    what = "the int8 graph's"
    agreement, diff = number(m, "int8_argmax_agreement_tensors"), number(m, "int8_max_abs_diff_tensors")
    problems = []
    if not (math.isfinite(diff) and agreement >= least):
        problems.append(
            f"{what} logits, as the two tensors give them, keep the next-token argmax at {agreement:.1%} of "
            f"positions (at least {least:.0%}; largest difference {diff:.3g})"
        )
    for key in ("int8_argmax_agreement", "int8_max_abs_diff"):
        problems += restated_from_tensors(m, key, what) if has(m, key) else []
    return problems


def _int8_weight_problems(m: Measured) -> list[str]:
    """The element types of the saved int8 graph's quantised matmul weights and zero-points
    (contracts.onnx_weights), every one INT8 as the export states."""
    types = m.get("int8_weight_types")
    if not isinstance(types, Mapping) or not all(isinstance(n, int) for n in types.values()):
        raise Malformed("'int8_weight_types' must map element types to counts")
    other = {kind: n for kind, n in types.items() if kind != "INT8"}
    if not other:
        return []
    return [
        f"the int8 graph stores {sum(other.values())} of its {sum(types.values())} quantised matmul weights "
        f"and zero-points as {', '.join(sorted(other))}, not INT8 (as stored: {dict(types)})"
    ]


# -- gates judged by their falsifier tests (the conformance record) --------------------------


@judges("GATE-INTEG-001", checks={"check": ("violations",), "falsifiers": ("falsifiers+",)})
def _evidence_resolves(m: Measured, t: Thresholds) -> list[str]:
    """The integrity check's own verdict: no finding of this gate remains (or, in conformance, its tests)."""
    problems = _falsifiers_pass(m, t) if has(m, "falsifiers") else []
    if has(m, "violations") and (n := count(m, "violations")):
        problems.append(f"{n} integrity violation(s): the evidence does not resolve or is not true")
    return problems


def _falsifiers_pass(m: Measured, t: Thresholds) -> list[str]:
    tests = m.get("falsifiers")
    if not isinstance(tests, Mapping) or not tests:
        raise Malformed("'falsifiers' must map at least one test to its outcome")
    failed = sorted(name for name, outcome in tests.items() if outcome == TEST_FAILED)
    unknown = sorted(
        name for name, outcome in tests.items() if outcome not in {TEST_PASSED, TEST_FAILED, TEST_SKIPPED}
    )
    problems = [f"falsifier(s) failed: {', '.join(failed)}"] if failed else []
    if unknown:
        problems.append(f"falsifier outcome(s) not understood: {', '.join(unknown)}")
    if not any(outcome == TEST_PASSED for outcome in tests.values()):
        problems.append("no falsifier ran to a pass (all skipped?)")
    return problems


# -- the falsify record: every active gate proven by mutation --------------------------------


@judges("GATE-INTEG-002", checks={"check": ("violations",), "proof": ("gates+",)})
def _every_gate_turns_red(m: Measured, t: Thresholds) -> list[str]:
    """A gate is proven only when its falsifiers pass with it on and every one fails with it forced off.

    Having a falsifier is not enough: a test that stays green with its gate switched off does
    not depend on the gate, so it cannot show the gate firing, and a gate marker on it claims
    a proof it does not give (a test that plants nothing is marked `holds` instead). `make
    falsify` measures this (the "proof"); the integrity check's own verdict over its coverage
    findings is the "check".
    """
    problems = _gates_turn_red(m) if has(m, "gates") else []
    if has(m, "violations") and (n := count(m, "violations")):
        problems.append(f"{n} coverage violation(s): a gate lacks a falsifier or a binding, or is unproven")
    return problems


def _gates_turn_red(m: Measured) -> list[str]:
    """The proof by mutation of a falsify record's summary: every gate green on and red off."""
    gates = m.get("gates")
    if not isinstance(gates, Mapping) or not gates:
        raise Malformed("'gates' must map at least one gate to its falsifiers' summary")
    untested, not_green, not_red = [], [], []
    for gate_id, summary in sorted(gates.items()):
        if not isinstance(summary, Mapping):
            raise Malformed(f"gate {gate_id!r} has no summary")
        if count(summary, "falsifiers") == 0:
            untested.append(gate_id)
            continue
        if not flag(summary, "passed_on"):
            not_green.append(gate_id)  # red with the gate off then proves nothing
        elif not flag(summary, "red_off") or count(summary, "stayed_green"):
            not_red.append(f"{gate_id} ({count(summary, 'stayed_green')} of {count(summary, 'falsifiers')})")
    problems = [f"no falsifier test: {', '.join(untested)}"] if untested else []
    if not_green:
        problems.append(f"falsifiers do not pass with the gate on: {', '.join(not_green)}")
    if not_red:
        problems.append(f"falsifiers stay green with the gate forced off: {', '.join(not_red)}")
    return problems


# -- lenses and activation patching ----------------------------------------------------------


def _bit_for_bit(m: Measured, what: str) -> list[str]:
    """An identity that must hold exactly: no element of the compared logits may differ."""
    differing = count(m, "differing_elements")
    return [f"{what} changed {differing} of {count(m, 'elements')} logit(s)"] if differing else []


@judges("GATE-LENS-001", needs=("differing_elements", "elements"))
def _untrained_lens_is_logit_lens(m: Measured, t: Thresholds) -> list[str]:
    return _bit_for_bit(m, "the untrained tuned lens, against the logit lens,")


def _why_unmoved(probe: Mapping[str, Any], t: Thresholds) -> str | None:
    """Why a probe that never moved counts as stuck, or None when it had nothing to learn: it was
    trained (the optimizer held it, a gradient reached it at every step) and its layer read as the
    final distribution through the identity all along (its KL at most max_identity_kl_nats). A
    measurement without those facts (a lens not trained by the stack) has no such excuse."""
    if not all(key in probe for key in ("optimized", "grad_every_step", "max_kl")):
        return "they received no gradient"
    if not flag(probe, "optimized"):
        return "the optimizer does not hold them"
    if not flag(probe, "grad_every_step"):
        return "they received no gradient"
    kl = number(probe, "max_kl")
    if not kl <= t["max_identity_kl_nats"]:
        return (
            f"a gradient reached them, yet the identity reads their layer at KL {kl:.3g} nats: a broken path"
        )
    return None


@judges(
    "GATE-LENS-002",
    checks={
        "probes": ("probes+",),
        "schedule": ("applied_lrs+", "scheduled_lrs+"),
        # rev 4: every other hyper-parameter the record states is the one the optimizer applied
        "hyperparameters": ("applied_hyperparameters+", "stated_hyperparameters+"),
        # rev 5: the gradients every step applied are clipped to the clip norm the record states
        "clip": ("stepped_grad_norms+", "stated_clip_norm"),
    },
)
def _every_probe_learned(m: Measured, t: Thresholds) -> list[str]:
    """Every check present: each probe moved or had nothing to learn (probes), the rate the
    optimizer applied at every step within lr_rtol of the lens schedule's (schedule), every other
    hyper-parameter it applied at every step the one the record states (hyperparameters), and the
    norm of the gradients it stepped at every step at most the stated clip norm (clip)."""
    problems = _probes_moved(m, t) if "probes" in m else []
    problems += _stepped_as_stated(m) if "applied_hyperparameters" in m else []
    problems += _stepped_clipped(m, t) if "stepped_grad_norms" in m else []
    return problems + (_stepped_as_scheduled(m, t) if "applied_lrs" in m else [])


def _stepped_clipped(m: Measured, t: Thresholds) -> list[str]:
    """Per step, the norm of the gradients the optimizer stepped (read from the parameters it holds,
    after the loop's clip) at most the stated clip norm × (1 + clip_rtol)."""
    norms, clip = _reals(m, "stepped_grad_norms"), number(m, "stated_clip_norm")
    limit = clip * (1 + t["clip_rtol"])
    off = [(step, norm) for step, norm in enumerate(norms, start=1) if not norm <= limit]
    if not off:
        return []
    step, norm = off[0]
    return [
        f"at {len(off)} of {len(norms)} step(s) the optimizer stepped gradients of norm above the clip norm "
        f"the record states ({clip:g}, rtol {t['clip_rtol']:g}); first at step {step}: {norm:.6g} "
        "(clipped at another norm, or not at all?)"
    ]


def _stepped_as_stated(m: Measured) -> list[str]:
    """Per step, each hyper-parameter the optimizer applied (read from its parameter groups) against
    the value the record states, exactly: the stack hands the optimizer the setting's own value."""
    stated, applied = m["stated_hyperparameters"], items(m, "applied_hyperparameters")
    if not isinstance(stated, Mapping) or not all(isinstance(step, Mapping) for step in applied):
        raise Malformed("the stated and each step's applied hyper-parameters must be objects")
    off = [
        (step, key, values.get(key), want)
        for step, values in enumerate(applied, start=1)
        for key, want in stated.items()
        if not (values.get(key) == want and isinstance(values.get(key), bool) == isinstance(want, bool))
    ]
    if not off:
        return []
    step, key, have, want = off[0]
    keys, steps = sorted({k for _, k, _, _ in off}), len({s for s, *_ in off})
    return [
        f"the optimizer applied {', '.join(keys)} other than the record states at {steps} of "
        f"{len(applied)} step(s); first at step {step}: {key} {have!r}, stated {want!r}"
    ]


def _stepped_as_scheduled(m: Measured, t: Thresholds) -> list[str]:
    """One applied rate per scheduled step, each within lr_rtol of the schedule's rate for that step."""
    applied, scheduled = _reals(m, "applied_lrs"), _reals(m, "scheduled_lrs")
    if len(applied) != len(scheduled):
        return [f"the optimizer stepped {len(applied)} time(s), the schedule has {len(scheduled)} step(s)"]
    off = [
        (step, a, s)
        for step, (a, s) in enumerate(zip(applied, scheduled, strict=True), start=1)
        if not abs(a - s) <= t["lr_rtol"] * abs(s)
    ]
    if not off:
        return []
    step, a, s = off[0]
    return [
        f"at {len(off)} of {len(applied)} step(s) the optimizer's learning rate is not the lens schedule's "
        f"lr · (1 − (step − 1) / steps) (rtol {t['lr_rtol']:g}); first at step {step}: {a:.6g}, "
        f"scheduled {s:.6g}"
    ]


def _reals(m: Measured, key: str) -> list[float]:
    """A list of real numbers, each read as `number` reads one."""
    return [number({key: value}, key) for value in items(m, key)]


def _probes_moved(m: Measured, t: Thresholds) -> list[str]:
    stuck, broken = [], []
    for probe in items(m, "probes"):
        if not isinstance(probe, Mapping):
            raise Malformed("each entry of 'probes' must be an object")
        layer, norm = count(probe, "layer"), number(probe, "norm")
        if not (flag(probe, "finite") and math.isfinite(norm)):
            broken.append(str(layer))
        elif norm <= t["min_probe_norm"] and (why := _why_unmoved(probe, t)) is not None:
            stuck.append(f"{layer} (norm {norm:.3g}: {why})")
    problems = [f"probe(s) of layer(s) {', '.join(broken)} are not finite"] if broken else []
    if stuck:
        problems.append(
            f"probe(s) of layer(s) {', '.join(stuck)} never moved from the identity "
            f"(norm at most {t['min_probe_norm']:g}) though their layer had something to learn"
        )
    return problems


@judges("GATE-LENS-003", needs=("layers+",))
def _tuned_beats_logit_lens(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    for row in items(m, "layers"):
        if not isinstance(row, Mapping):
            raise Malformed("each entry of 'layers' must be an object")
        layer, logit, tuned = count(row, "layer"), number(row, "kl_logit"), number(row, "kl_tuned")
        if not tuned - logit <= t["max_kl_excess_nats"]:
            problems.append(
                f"layer {layer}: held-out KL {tuned:.4g} nats through the tuned lens, "
                f"{logit:.4g} through the logit lens"
            )
    return problems


@judges(
    "GATE-LENS-006",
    checks={
        "heldout": ("layers+", "recomputed_batches+"),
        "readings": ("reading_kl+", "recomputed_reading_kl+"),
        # rev 3: a reading's entropies are contracts.divergence's of the log-probabilities it read
        "entropy": ("reading_entropy+", "recomputed_reading_entropy+"),
        "top": ("reading_top+", "top_logprobs+", "recomputed_top_logprobs+"),
        "objective": ("objective_steps+", "objective_losses+", "objective_recomputed+"),
        # rev 4: the comparison read as many held-out windows as the record's settings state
        "windows": ("heldout_windows_read", "heldout_windows_stated"),
        # rev 5: a reading's --csv, parsed back, holds the rows contracts.lens_table derives
        "table": ("table_rows_written", "table_rows_derived", "table_rows_differing"),
    },
)
def _kl_is_defined(m: Measured, t: Thresholds) -> list[str]:
    """Every check present: each reported KL within kl_atol + kl_rtol × KL(final ‖ layer) recomputed
    apart from it by torch's kl_div against a plain forward's distribution: a comparison's held-out
    mean per layer and lens against the mean, taken here, of each batch's recomputed KL with each
    lens by name (heldout); a reading's value per layer and position, the model's own row at KL 0
    (readings); a reading's entropy per layer and position against −Σ p log p of the
    log-probabilities it read (entropy); a reading's top-k probabilities against those
    log-probabilities (top); the loss the lens training backpropagated against its documented
    objective (objective); the held-out windows the comparison read, as many as the record's
    --heldout-batches × --batch-size (windows); and a reading's --csv as written, its rows those of
    the reading (table)."""
    problems = _heldout_kl(m, t) if has(m, "layers", "recomputed_batches") else []
    problems += _heldout_windows(m) if has(m, "heldout_windows_read") else []
    problems += _reading_kl(m, t) if has(m, "reading_kl", "recomputed_reading_kl") else []
    problems += _reading_entropy(m, t) if has(m, "reading_entropy") else []
    problems += _reading_top(m, t) if has(m, "reading_top", "top_logprobs") else []
    problems += _table_rows(m) if has(m, "table_rows_written") else []
    return problems + (_trained_objective(m, t) if has(m, "objective_losses") else [])


def _table_rows(m: Measured) -> list[str]:
    """Check table: the --csv written holds, row for row and cell for cell, the reading's rows."""
    written, derived = count(m, "table_rows_written"), count(m, "table_rows_derived")
    differing = count(m, "table_rows_differing")
    if written == derived and differing == 0:
        return []
    return [
        f"the --csv written holds {written} rows, {differing} of them (first: line "
        f"{m.get('table_first_differing')}) not the rows the reading gives ({derived}, "
        "contracts.lens_table): the table says something else than the JSON and the record"
    ]


def _kl_off(have: float, want: float, t: Thresholds) -> bool:
    return not abs(have - want) <= t["kl_atol"] + t["kl_rtol"] * abs(want)


# What a KL other than KL(final ‖ layer), summed over the vocabulary and averaged as stated, suggests.
_KL_MISS = "another direction, normalisation, set of positions or final distribution"


def _batch_means(batches: list[Any]) -> list[Mapping[str, Any]]:
    """Per layer, the mean over batches of each batch's recomputed kl_logit and kl_tuned (fsum / count):
    the held-out mean over every position, the batches being of one shape, by no divisor of the stack's."""
    if not batches or not all(
        isinstance(b, list) and all(isinstance(r, Mapping) for r in b) for b in batches
    ):
        raise Malformed("'recomputed_batches' must be a non-empty list of per-layer row lists")
    layers = [count(r, "layer") for r in batches[0]]
    if any([count(r, "layer") for r in b] != layers for b in batches):
        raise Malformed("every batch of 'recomputed_batches' must hold the same layers")
    return [
        {
            "layer": layer,
            **{
                lens: math.fsum(number(b[i], lens) for b in batches) / len(batches)
                for lens in ("kl_logit", "kl_tuned")
            },
        }
        for i, layer in enumerate(layers)
    ]


def _heldout_windows(m: Measured) -> list[str]:
    read, stated = count(m, "heldout_windows_read"), count(m, "heldout_windows_stated")
    if read == stated:
        return []
    return [
        f"the comparison's forwards read {read} held-out window(s), but the record states "
        f"--heldout-batches × --batch-size = {stated}: the lenses were compared on another set than stated"
    ]


def _heldout_kl(m: Measured, t: Thresholds) -> list[str]:
    reported, recomputed = items(m, "layers"), _batch_means(items(m, "recomputed_batches"))
    if not all(isinstance(row, Mapping) for row in reported):
        raise Malformed("each entry of 'layers' must be an object")
    if [count(r, "layer") for r in reported] != [count(r, "layer") for r in recomputed]:
        return [f"{len(reported)} layer(s) reported and {len(recomputed)} recomputed: not the same layers"]
    problems = []
    for row, again in zip(reported, recomputed, strict=True):
        for lens in ("kl_logit", "kl_tuned"):
            have, want = number(row, lens), number(again, lens)
            if _kl_off(have, want, t):
                problems.append(
                    f"layer {count(row, 'layer')}: {lens} is {have:.10g} nats, but KL(final ‖ layer) "
                    f"recomputed by kl_div through that lens and averaged over the "
                    f"{len(items(m, 'recomputed_batches'))} held-out batch(es) is {want:.10g} ({_KL_MISS}, "
                    "a mean over other batches, or the lenses' columns swapped)"
                )
    return problems


def _trained_objective(m: Measured, t: Thresholds) -> list[str]:
    steps, losses = items(m, "objective_steps"), _reals(m, "objective_losses")
    recomputed = _reals(m, "objective_recomputed")
    if not len(steps) == len(losses) == len(recomputed):
        return [
            f"{len(losses)} loss(es) and {len(recomputed)} recomputed objective(s) for {len(steps)} step(s)"
        ]
    return [
        f"at step {step} the lens training backpropagated a loss of {loss:.10g}, but its objective, the sum "
        f"over lens layers of KL(final ‖ lens layer) recomputed by kl_div on that batch, is {want:.10g} "
        f"({_KL_MISS})"
        for step, loss, want in zip(steps, losses, recomputed, strict=True)
        if _kl_off(loss, want, t)
    ]


def _reading_kl(m: Measured, t: Thresholds) -> list[str]:
    reported, recomputed = items(m, "reading_kl"), items(m, "recomputed_reading_kl")
    shape = [len(row) if isinstance(row, list) else None for row in reported]
    if None in shape or shape != [len(row) if isinstance(row, list) else None for row in recomputed]:
        return ["the reading's KLs and the recomputed ones are not one value per layer and position alike"]
    rows = [_reals({"kl": row}, "kl") for row in reported]
    off = [
        (layer, position, have, want)
        for layer, (row, again) in enumerate(zip(rows, recomputed, strict=True))
        for position, (have, want) in enumerate(zip(row, _reals({"kl": again}, "kl"), strict=True))
        if _kl_off(have, want, t)
    ]
    problems = []
    if off:
        layer, position, have, want = off[0]
        problems.append(
            f"{len(off)} of the reading's KLs are not KL(final ‖ layer) recomputed by kl_div against a "
            f"plain forward's distribution; first layer {layer}, position {position}: {have:.10g} nats, "
            f"recomputed {want:.10g} ({_KL_MISS})"
        )
    own = [x for x in (rows[-1] if rows else []) if not abs(x) <= t["kl_atol"]]
    if own:
        problems.append(
            f"the model's own row (the reading's last) reads KL {own[0]:.10g} nats from the final "
            f"distribution at {len(own)} position(s), not 0: another row was taken as the final one"
        )
    return problems


def _reading_entropy(m: Measured, t: Thresholds) -> list[str]:
    """Each reported entropy within kl_atol + kl_rtol × the one contracts.divergence.entropy gives of
    the same log-probabilities, per layer and position (both float64 sums of the same terms)."""
    reported, recomputed = items(m, "reading_entropy"), items(m, "recomputed_reading_entropy")
    shape = [len(row) if isinstance(row, list) else None for row in reported]
    if None in shape or shape != [len(row) if isinstance(row, list) else None for row in recomputed]:
        return [
            "the reading's entropies and the recomputed ones are not one value per layer and position alike"
        ]
    off = [
        (layer, position, have, want)
        for layer, (row, again) in enumerate(zip(reported, recomputed, strict=True))
        for position, (have, want) in enumerate(
            zip(_reals({"e": row}, "e"), _reals({"e": again}, "e"), strict=True)
        )
        if _kl_off(have, want, t)
    ]
    if not off:
        return []
    layer, position, have, want = off[0]
    return [
        f"{len(off)} of the reading's entropies are not −Σ p log p of the distribution it read; first "
        f"layer {layer}, position {position}: {have:.10g} nats, recomputed {want:.10g} (a mean over the "
        "vocabulary for its sum, or bits for nats?)"
    ]


def _reading_top(m: Measured, t: Thresholds) -> list[str]:
    """Each reported top-k probability in [0, 1] and exp of the log-probability of its token in the
    reading's distribution, and those tokens the k likeliest (their log-probabilities the top k)."""
    top, logprobs, best = (items(m, k) for k in ("reading_top", "top_logprobs", "recomputed_top_logprobs"))
    cells = _cells(top, logprobs, best)
    if cells is None:
        return ["the reading's top tokens and the recomputed ones are not k per layer and position alike"]
    off = []
    for layer, position, pairs, lps, want in cells:
        probs = [number({"p": pair[1]}, "p") for pair in pairs]
        lps, want = _reals({"l": lps}, "l"), sorted(_reals({"w": want}, "w"), reverse=True)
        bad = [p for p, lp in zip(probs, lps, strict=True) if not 0 <= p <= 1 or _prob_off(p, lp, t)]
        ranked = zip(sorted(lps, reverse=True), want, strict=True)
        if bad or any(_prob_off(math.exp(have), top_k, t) for have, top_k in ranked):
            off.append((layer, position, bad[0] if bad else probs[0]))
    if not off:
        return []
    layer, position, p = off[0]
    return [
        f"{len(off)} of the reading's top-k lists are not probabilities of the k likeliest tokens of the "
        f"distribution it read; first layer {layer}, position {position} (probability {p:.6g}): a "
        "probability outside [0, 1], not exp of its token's log-probability, or not a top-k token"
    ]


def _prob_off(p: float, log_p: float, t: Thresholds) -> bool:
    return not abs(p - math.exp(log_p)) <= t["prob_atol"]


def _cells(
    top: list[Any], logprobs: list[Any], best: list[Any]
) -> list[tuple[int, int, list, list, list]] | None:
    """(layer, position, the reported (id, probability) pairs, their tokens' log-probabilities, the k
    largest log-probabilities) per layer and position, or None where the three are not alike in shape."""

    def shape(rows: list[Any]) -> list[list[int]] | None:
        if not all(isinstance(r, list) and all(isinstance(c, list) for c in r) for r in rows):
            return None
        return [[len(c) for c in r] for r in rows]

    if shape(top) is None or not shape(top) == shape(logprobs) == shape(best):
        return None
    if not all(isinstance(pair, list) and len(pair) == 2 for row in top for cell in row for pair in cell):
        return None
    return [
        (layer, position, pairs, lps, want)
        for layer, (row, lrow, brow) in enumerate(zip(top, logprobs, best, strict=True))
        for position, (pairs, lps, want) in enumerate(zip(row, lrow, brow, strict=True))
    ]


@judges("GATE-LENS-004", needs=("final_norm",))
def _lens_fits_model(m: Measured, t: Thresholds) -> list[str]:
    problems = [] if flag(m, "final_norm") else ["the model has no final norm for the lens to read through"]
    expected = m.get("lens_model_sha256")
    if expected is not None and expected != m.get("model_sha256"):
        problems.append(
            f"the lens was trained on a model whose final norm and unembedding hash to "
            f"{str(expected)[:12]}…, this model's to {str(m.get('model_sha256'))[:12]}…"
        )
    return problems


@judges("GATE-LENS-005", needs=("sites+", "differing_elements", "elements"))
def _lens_reads_pre_norm(m: Measured, t: Thresholds) -> list[str]:
    wrong = [s for s in items(m, "sites") if not (s == "embed" or _is_block_output(s))]
    problems = [f"the lens reads {', '.join(map(str, wrong))}, not the residual stream"] if wrong else []
    return problems + _bit_for_bit(m, "read at the last block, the logit lens")


def _is_block_output(site: object) -> bool:
    parts = site.split(".") if isinstance(site, str) else []
    return len(parts) == 3 and parts[0] == "layers" and parts[1].isdigit() and parts[2] == "output"


@judges("GATE-PATCH-001", needs=("differing_elements", "elements"))
def _self_patch_changes_nothing(m: Measured, t: Thresholds) -> list[str]:
    return _bit_for_bit(m, "patching the run with its own activations")


@judges(
    "GATE-PATCH-002",
    checks={
        "full": ("differing_elements", "elements"),
        # rev 2: each grid cell overwrote its site at its position; the scores are the plain forwards'
        "cells": ("cells+",),
        "scores": ("clean_recorded", "corrupted_recorded", "clean_plain", "corrupted_plain"),
        # rev 3: the grid is every stated cell once; each recorded recovery is the formula's
        "grid": ("grid_cells+", "grid_sites+", "grid_tokens", "grid_stated"),
        "recovery": ("recovery_clean", "recovery_corrupted", "recovery_cells+", "recovery_full"),
        # rev 4: the grid's cells are the ones the command line asked for
        "asked": ("asked_patch", "asked_cells+", "asked_tokens"),
    },
)
def _full_patch_recovers(m: Measured, t: Thresholds) -> list[str]:
    """The embedding patched at every position recovers the clean logits bit for bit (`full`); each
    grid cell's forward overwrote exactly its stated site at exactly its stated position, with the
    clean run's value there, computed from the corrupted run's own value there, and changed its
    position exactly where the two runs' kept values differ (`cells`); the clean and corrupted scores
    are the metric read at the last position of plain forwards of the prompts, within score_atol
    (`scores`); the grid's cells are every stated site × every stated position (a sweep: 0..T−1),
    each once (`grid`); every recorded recovered fraction is contracts.patching's formula over the
    recorded scores, exactly (`recovery`)."""
    problems = []
    if has(m, "differing_elements", "elements"):
        problems += _bit_for_bit(m, "against the clean run, patching the embedding at every position still")
    if has(m, "cells"):
        problems += _cells_miswritten(items(m, "cells"))
    if has(m, "grid_cells", "grid_sites", "grid_tokens", "grid_stated"):
        problems += _grid_unlike_stated(m)
    if has(m, "recovery_clean", "recovery_corrupted", "recovery_cells", "recovery_full"):
        problems += _recoveries_unlike_formula(m)
    if has(m, "asked_patch", "asked_cells", "asked_tokens"):
        problems += _cells_unasked(m)
    if has(m, "clean_recorded", "corrupted_recorded", "clean_plain", "corrupted_plain"):
        for side in ("clean", "corrupted"):
            recorded, plain = number(m, f"{side}_recorded"), number(m, f"{side}_plain")
            if not abs(recorded - plain) <= t["score_atol"]:
                problems.append(
                    f"the {side} score is {recorded:.6g}, but the metric at the last position of a plain "
                    f"forward of the {side} prompt is {plain:.6g} (allowed {t['score_atol']:g}): "
                    "the metric is read at another position, or on another forward"
                )
    return problems


def _cells_miswritten(cells: list[Any]) -> list[str]:
    """GATE-PATCH-002's check `cells`: the cells whose forward overwrote another site, another
    position, or a value not the clean run's, from what the hooks recorded; whose forward computed
    at its site something other than the corrupted run's kept value (it ran on another prompt, or
    the hook recorded its replacement as what was computed); or that changed their position where
    the two runs' kept values are equal there, or left it unchanged where they differ."""
    wrong = []
    for cell in cells:
        if not isinstance(cell, Mapping) or not isinstance(cell.get("written"), list):
            raise Malformed("each entry of 'cells' must be an object with its 'written' sites")
        site, position = cell.get("site"), count(cell, "position")
        must_change = [position] if count(cell, "clean_unlike_corrupted") else []
        written = [w for w in cell["written"] if isinstance(w, Mapping)]
        sites = [w.get("site") for w in written]
        changed = sorted({p for w in written for p in items(w, "changed")})
        unlike, computed = cell.get("unlike_clean"), cell.get("computed_unlike_corrupted")
        if sites != [site] or changed != must_change or unlike != 0 or computed != 0:
            wrote = "; ".join(f"{w.get('site')} at {items(w, 'changed')}" for w in written) or "nothing"
            wrong.append(
                f"{site} at position {position} wrote {wrote}, where the runs differ at {must_change}"
                + (f" ({unlike} element(s) there unlike the clean run's)" if unlike else "")
                + (f" (it computed {computed} element(s) unlike the corrupted run's)" if computed else "")
            )
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    return [
        f"{len(wrong)} of {len(cells)} grid cell(s) did not patch exactly their site at their position "
        f"with the clean value ({shown})"
    ]


def _grid_unlike_stated(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `grid`: the (site, position) cells the grid holds against every stated
    site × every stated position (a sweep states every position of its grid_tokens-token prompt)."""
    stated = m["grid_stated"]
    if stated == "every":
        positions = list(range(count(m, "grid_tokens")))
    elif isinstance(stated, list) and all(isinstance(p, int) and not isinstance(p, bool) for p in stated):
        positions = stated
    else:
        raise Malformed(f"'grid_stated' is {stated!r}, not 'every' or a list of positions")
    want = sorted((str(site), p) for site in items(m, "grid_sites") for p in positions)
    cells = items(m, "grid_cells")
    if not all(isinstance(c, list) and len(c) == 2 for c in cells):
        raise Malformed("each entry of 'grid_cells' must be [site, position]")
    have = sorted((str(site), p) for site, p in cells)
    if have == want:
        return []
    missing = sorted(set(want) - set(have))
    extra = [c for c in have if c not in want or have.count(c) > want.count(c)]
    span = f"{positions[0]}..{positions[-1]}" if positions else "none"
    return [
        f"the grid holds {len(have)} cell(s) where it states {len(want)} (every one of "
        f"{len(items(m, 'grid_sites'))} site(s) × positions {span}): "
        f"missing {missing[:4]}{' …' if len(missing) > 4 else ''}, "
        f"extra or repeated {sorted(set(extra))[:4]}"
    ]


def _cells_unasked(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `asked`: the (site, position) cells the grid patched against those
    contracts.patching.asked_cells gives from the command line's --patch-site, --patch-position and
    --patch-sweep and the prompt's length."""
    asked = m["asked_patch"]
    if not isinstance(asked, Mapping) or set(asked) != {"site", "position", "sweep"}:
        raise Malformed(f"'asked_patch' is {asked!r}, not an object of 'site', 'position' and 'sweep'")
    cells = items(m, "asked_cells")
    if not all(isinstance(c, list) and len(c) == 2 for c in cells):
        raise Malformed("each entry of 'asked_cells' must be [site, position]")
    have = [(str(site), p) for site, p in cells]
    want = asked_cells(asked, count(m, "asked_tokens"), [site for site, _ in have])
    if sorted(have) == sorted(want) and len({s for s, _ in have}) == len({s for s, _ in want}):
        return []
    said = " ".join(f"--patch-{k} {v}" for k, v in asked.items() if v is not None)
    return [
        f"the command line asks for {len(want)} cell(s) ({said}: {want[:4]}{' …' if len(want) > 4 else ''}), "
        f"but the grid patched {len(have)}: {have[:4]}{' …' if len(have) > 4 else ''}"
    ]


def _recoveries_unlike_formula(m: Measured) -> list[str]:
    """GATE-PATCH-002's check `recovery`: each recorded recovered fraction (every cell's and the full
    patch's) against contracts.patching's formula over the recorded patched, clean and corrupted
    scores; the run computes it with that function, so only a different formula differs."""
    clean, corrupted = number(m, "recovery_clean"), number(m, "recovery_corrupted")
    full = m["recovery_full"]
    if not isinstance(full, Mapping):
        raise Malformed(f"'recovery_full' is {full!r}, not an object with 'patched' and 'recovered'")
    entries = [{**full, "site": "the full patch"}, *items(m, "recovery_cells")]
    wrong = []
    for entry in entries:
        if not isinstance(entry, Mapping):
            raise Malformed("each recovery must be an object with its 'patched' score and 'recovered'")
        recorded, patched = number(entry, "recovered"), number(entry, "patched")
        formula = recovered_fraction(patched, clean, corrupted)
        if recorded != formula and not (math.isnan(recorded) and math.isnan(formula)):
            where = f"{entry.get('site')}" + (f" at {entry['position']}" if "position" in entry else "")
            wrong.append(f"{where}: recorded {recorded:.6g}, the formula gives {formula:.6g}")
    if not wrong:
        return []
    shown = first_few(wrong, 4, "; ")
    return [
        f"{len(wrong)} recorded recovered fraction(s) are not (patched − corrupted)/(clean − corrupted) "
        f"over the recorded scores ({shown})"
    ]


@judges("GATE-PATCH-003", needs=("hooks", "function_modes"))
def _no_hook_left(m: Measured, t: Thresholds) -> list[str]:
    hooks, modes, when = count(m, "hooks"), count(m, "function_modes"), m.get("when")
    if not hooks and not modes:
        return []
    return [
        f"at the {when} of the patching run the model holds {hooks} hook(s), {modes} torch function mode(s)"
    ]


# -- weight surgery ----------------------------------------------------------------------------


def _rows(m: Measured, key: str) -> list[Mapping[str, Any]]:
    """A list of per-matrix objects, each naming its matrix."""
    rows = items(m, key)
    if not all(isinstance(row, Mapping) and isinstance(row.get("matrix"), str) for row in rows):
        raise Malformed(f"each entry of {key!r} must be an object naming its 'matrix'")
    return rows


@judges("GATE-LASER-001", needs=("differing_elements", "elements"))
def _full_rank_is_identity(m: Measured, t: Thresholds) -> list[str]:
    differing = count(m, "differing_elements")
    if not differing:
        return []
    return [f"LASER at ρ = 1 changed {differing} of {count(m, 'elements')} weight(s) of the targets"]


@judges(
    "GATE-LASER-002",
    checks={
        "error": ("matrices+",),
        # rev 2: each matrix keeps the singular values ρ says (contracts.truncation)
        "kept": ("rho", "matrices+"),
    },
)
def _error_is_discarded_norm(m: Measured, t: Thresholds) -> list[str]:
    """Each truncation's error against the norm of the values it discarded, and (given ρ) the
    values it kept against ⌈ρ·rank⌉."""
    problems = []
    if has(m, "rho"):
        rho = number(m, "rho")
        for row in _rows(m, "matrices"):
            rank, kept = count(row, "rank"), count(row, "kept")
            if kept != rank_kept(rank, rho):
                problems.append(
                    f"{row['matrix']}: kept {kept} of {rank} singular values; ρ = {rho:g} keeps "
                    f"{rank_kept(rank, rho)} (⌈ρ·rank⌉)"
                )
    for row in _rows(m, "matrices"):
        error, discarded, norm = number(row, "error"), number(row, "discarded_norm"), number(row, "norm")
        if not abs(error - discarded) <= t["frobenius_rtol"] * norm:
            problems.append(
                f"{row['matrix']}: ‖W − W_k‖_F = {error:.6g}, but the discarded singular values' norm is "
                f"{discarded:.6g} (‖W‖_F {norm:.6g})"
            )
    return problems


@judges(
    "GATE-LASER-003",
    checks={
        "changed": ("targets+", "changed"),
        # rev 2: the targets are what the command line's --targets and --layers select
        "selection": ("targets+", "selected+"),
        # rev 3: the written checkpoint carries the source checkpoint's chat template
        "template": ("template_source", "template_written"),
    },
)
def _only_targets_change(m: Measured, t: Thresholds) -> list[str]:
    """Only the targets' tensors changed (`changed`), and the targets are exactly the tensors the
    command line selects by contracts.selection's rule (`selection`), and the written checkpoint's chat
    template its source's (`template`)."""
    targets = {str(name) for name in items(m, "targets")} if has(m, "targets") else set()
    problems = []
    if has(m, "changed"):
        stray = sorted(str(name) for name in items(m, "changed") if name not in targets)
        problems += [f"tensor(s) not named as targets changed: {', '.join(stray)}"] if stray else []
    if has(m, "selected"):
        chosen = {str(name) for name in items(m, "selected")}
        left, added = sorted(chosen - targets), sorted(targets - chosen)
        if left or added:
            problems.append(
                f"the surgery's targets are not the matrices its --targets and --layers select "
                f"(contracts.selection): left out {', '.join(left) or 'none'}; taken beyond them "
                f"{', '.join(added) or 'none'} (a range read without its last block?)"
            )
    if has(m, "template_source", "template_written"):
        problems += _template_problems(m.get("template_source"), m.get("template_written"))
    return problems


def _template_problems(source: Any, written: Any) -> list[str]:
    """Check template: the digest of the chat template the written checkpoint carries
    (contracts.checkpoints.chat_template_sha256) is its source checkpoint's, None for none."""
    if not all(value is None or isinstance(value, str) for value in (source, written)):
        raise Malformed("'template_source' and 'template_written' must be sha256 strings or null")
    if source == written:
        return []
    if written is None:
        return [
            f"the surgery's checkpoint carries no chat template, but its source carries one (sha256 "
            f"{source[:12]}): every export and chat rendering of it would fall back to another"
        ]
    return [
        f"the surgery's checkpoint carries chat template {written[:12]}, but its source carries "
        f"{'none' if source is None else source[:12]}: a surgery changes weights, not the template"
    ]


@judges(
    "GATE-HQQ-001",
    checks={
        "error": ("matrices+",),
        # rev 3: the weights written lie on a 2^bits grid per group, its codes dequantised
        "grid": ("grid+", "bits"),
        # rev 4: every matrix's groups are the --group-size the command's settings state
        "requested": ("grid+", "group_requested"),
    },
)
def _hqq_beats_rtn(m: Measured, t: Thresholds) -> list[str]:
    """Each matrix's HQQ error at most max_error_ratio × round-to-nearest's (`error`), each
    matrix as written a grid of at most 2^bits levels per group, one scale and one zero-point per
    group, integer codes in [0, 2^bits − 1] whose dequantisation is every written weight (`grid`),
    and each matrix's group the size the settings request, where they request one (`requested`)."""
    problems = []
    for row in _rows(m, "matrices") if has(m, "matrices") else []:
        hqq, rtn = number(row, "hqq_error"), number(row, "rtn_error")
        if not hqq <= t["max_error_ratio"] * rtn:
            problems.append(f"{row['matrix']}: HQQ error {hqq:.6g} > round-to-nearest's {rtn:.6g}")
    problems += _off_request(m) if has(m, "group_requested") else []
    return problems + (_off_grid(m) if has(m, "grid") else [])


def _off_request(m: Measured) -> list[str]:
    """Each grid row's group against the --group-size the settings state (none stated: one picked per
    matrix, nothing to hold here). A row's group is the grid's own, its scales one per group of it
    (check grid), so a quantiser that used another size shows here whatever size was asked."""
    requested = m.get("group_requested")
    if requested is None:
        return []
    if isinstance(requested, bool) or not isinstance(requested, int):
        raise Malformed(f"'group_requested' is {requested!r}, not a group size or null")
    off = [row for row in _rows(m, "grid") if count(row, "group") != requested]
    if not off:
        return []
    first = off[0]
    return [
        f"{len(off)} of {len(_rows(m, 'grid'))} matrices were quantised in groups other than the "
        f"--group-size {requested} the settings state (first {first['matrix']}: groups of {first['group']})"
    ]


def _off_grid(m: Measured) -> list[str]:
    """GATE-HQQ-001's check grid, matrix by matrix (see `_hqq_beats_rtn`)."""
    top = 2 ** count(m, "bits") - 1
    problems = []
    for row in _rows(m, "grid"):
        groups, found = count(row, "groups"), []
        if count(row, "levels") > top + 1:
            found.append(
                f"a group holds {row['levels']} distinct values (a {m['bits']}-bit grid has {top + 1})"
            )
        if count(row, "scales") != groups or count(row, "zeros") != groups:
            found.append(f"{row['scales']} scales and {row['zeros']} zero-points for {groups} groups")
        low, high = number(row, "codes_min"), number(row, "codes_max")
        if not (flag(row, "codes_integral") and 0 <= low <= high <= top):
            found.append(f"codes from {low:g} to {high:g}, not integers in 0..{top}")
        if unreproduced := count(row, "unreproduced"):
            found.append(f"{unreproduced} weights written are not the dequantisation of their codes")
        problems += (
            [f"{row['matrix']} as written is no {m['bits']}-bit grid: {'; '.join(found)}"] if found else []
        )
    return problems


@judges(
    "GATE-HQQ-002",
    checks={
        "agreement": ("mean_kl_nats",),
        # rev 2: the model compared is the model written
        "compared": ("compared_sha256", "written_sha256"),
        # rev 3: the mean KL reported is KL(original ‖ quantised) as contracts.divergence takes it
        "recomputed": ("mean_kl_recomputed",),
        # rev 4: the windows compared on are what the sample's named source gives
        "sample": SAMPLE_KEYS,
        # rev 5: the reference side is the source's weights as read, and not the quantised side
        "reference": ("reference_sha256", "source_sha256", "quantised_sha256"),
        # rev 5: the sample compared on is the one the request asked for (contracts.agreement_sample)
        "requested": ("sample_source", "requested_sample_text"),
    },
)
def _quantised_predicts_alike(m: Measured, t: Thresholds) -> list[str]:
    problems = _sample_problems(m) + _reference_problems(m)
    if has(m, "sample_source", "requested_sample_text"):
        wrong = requested_problem(str(m["sample_source"]), m["requested_sample_text"])
        problems += [] if wrong is None else [f"{wrong}: the agreement is not measured on the text asked for"]
    if has(m, "mean_kl_recomputed", "mean_kl_nats"):
        reported, again = number(m, "mean_kl_nats"), number(m, "mean_kl_recomputed")
        if not abs(reported - again) <= t["kl_rtol"] * abs(again):
            problems.append(
                f"the held-out mean KL reported is {reported:.10g} nats, but KL(original ‖ quantised) "
                f"recomputed by kl_div from the same logits is {again:.10g} (rtol {t['kl_rtol']:g}): "
                "the KL taken the other way round, or over other positions"
            )
    if has(m, "compared_sha256", "written_sha256") and m.get("compared_sha256") != m.get("written_sha256"):
        problems.append(
            "the held-out agreement was measured on another model than the one written (weights sha256 "
            f"{str(m.get('compared_sha256'))[:12]} compared, {str(m.get('written_sha256'))[:12]} written)"
        )
    if has(m, "mean_kl_nats"):
        problems += _kl_bound(m, t)
    return problems


def _reference_problems(m: Measured) -> list[str]:
    """GATE-HQQ-002's check reference: the model whose forward gave the reference logits has the
    source's weights as read (digest of every tensor taken before quantising) and not the quantised
    model's: a KL of a model with itself is 0 whatever the quantiser did."""
    if not has(m, "reference_sha256", "source_sha256", "quantised_sha256"):
        return []
    reference, source = str(m["reference_sha256"]), str(m["source_sha256"])
    problems = []
    if reference != source:
        problems.append(
            f"the agreement's reference model has weights sha256 {reference[:12]}, not the source's as "
            f"read ({source[:12]}): the KL is not taken against the original"
        )
    if reference == str(m["quantised_sha256"]):
        problems.append(
            f"the agreement's reference and quantised sides are one model (weights sha256 {reference[:12]}): "
            "the KL of a model with itself"
        )
    return problems


def _kl_bound(m: Measured, t: Thresholds) -> list[str]:
    """The mean held-out KL of the quantised model against max_mean_kl_nats."""
    kl = number(m, "mean_kl_nats")
    if kl <= t["max_mean_kl_nats"]:
        return []
    return [
        f"held-out mean KL(original ‖ quantised) is {kl:.4g} nats per position over "
        f"{count(m, 'positions')} positions, above {t['max_mean_kl_nats']:g}"
    ]


@judges("GATE-HQQ-003", needs=("tied_config",))
def _ties_kept(m: Measured, t: Thresholds) -> list[str]:
    if not flag(m, "tied_config"):
        return []
    problems = [] if flag(m, "same_storage") else ["lm_head.weight is no longer embed.weight's storage"]
    differing = count(m, "differing_elements")
    if differing:
        problems.append(f"lm_head.weight differs from embed.weight in {differing} element(s)")
    return problems


# -- architecture options: mixture of experts ----------------------------------------------


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
        # rev 2: the window's assignments are every token each MoE layer received × top_k
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
        found = _deviations(m["mixtures"], "mixture", t["dense_atol"], t["dense_rtol"])
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


# -- data: mixture policies ----------------------------------------------------------------


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
        # rev 2: a bandit is paid its reward's rule on each arm's own held-out windows
        "paid": ("reward", "losses", "before", "reference", "rewards", "windows_read", "windows_stated"),
        # rev 4: its log-weights step by EXP3's rule; the probabilities it asks for are EXP3's
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
        # rev 5: a bandit's pulls are the windows served of each arm since it began
        "tallied": ("tallied_pulls", "tallied_served"),
        # rev 5: a static policy serves contracts.curriculum.static_shares of its phase and the manifest
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
    problems = _bandit_paid(m) if has(m, *CHECKS["GATE-DATA-008"]["paid"]) else []
    if has(m, *CHECKS["GATE-DATA-008"]["shares"]):
        problems += _shares_follow(m, t)
    if has(m, *CHECKS["GATE-DATA-008"]["stepped"], "rewards"):
        problems += _bandit_stepped(m, t)
    if has(m, *CHECKS["GATE-DATA-008"]["wanted"]):
        problems += _bandit_wanted(m, t)
    if has(m, *CHECKS["GATE-DATA-008"]["tallied"]):
        problems += _bandit_tallied(m)
    if has(m, *CHECKS["GATE-DATA-008"]["static"]):
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


# -- evolution strategies ------------------------------------------------------------------


@judges("GATE-ES-001", needs=("evaluations", "grad_enabled", "graph_outputs", "grads_set"))
def _no_graph(m: Measured, t: Thresholds) -> list[str]:
    evaluations = count(m, "evaluations")
    if not evaluations:
        return ["no fitness evaluation was checked"]
    found = {
        "grad_enabled": "ran with gradient recording on",
        "graph_outputs": "returned a value that requires a gradient or carries a graph",
    }
    problems = [
        f"{count(m, key)} of {evaluations} fitness evaluation(s) {what}"
        for key, what in found.items()
        if count(m, key)
    ]
    if count(m, "grads_set"):
        problems.append(f"{count(m, 'grads_set')} parameter tensor(s) hold a .grad after the step")
    return problems


@judges(
    "GATE-ES-002",
    checks={
        "pairs": ("population", "pairs", "max_pair_sum", "min_noise_norm"),
        # rev 2: every forward of every member read θ + sign·σ·ε(seed), to the roundings of its sum,
        # and each evaluation is at its member's place
        "applied": (
            "evaluated_members",
            "misplaced_members",
            "unread_members",
            "perturbation_outliers",
            "perturbation_error",
        ),
        # rev 3: each step's members are the seeds the run's rule gives that step, none an earlier step's
        "seeds": ("seeds_run_seed", "seeds_population", "seeds_step", "member_seeds+"),
        # rev 4: the σ every forward's weights were perturbed by, as read, is the σ the record states
        "sigma": ("sigma_read+", "sigma_stated"),
    },
)
def _mirrored(m: Measured, t: Thresholds) -> list[str]:
    problems = _pairs_problems(m) if has(m, "population") else []
    if has(m, "evaluated_members"):
        problems += _applied_problems(m)
    if has(m, "sigma_read", "sigma_stated"):
        problems += _sigma_problems(m, t["sigma_rtol"])
    if has(m, "seeds_run_seed", "seeds_population", "seeds_step", "member_seeds"):
        problems += _seeds_problems(m)
    return problems


def _seeds_problems(m: Measured) -> list[str]:
    """The seeds a step's members were evaluated with, in population order, against the run's rule
    (contracts.es_seeds) for its seed, its population's P/2 pairs and that step, and against every
    seed the rule gave the steps before it."""
    seed, step, evaluated = count(m, "seeds_run_seed"), count(m, "seeds_step"), items(m, "member_seeds")
    population = count(m, "seeds_population")
    if not step or population < 2 or population % 2:
        return [f"step {step} of a population of {population} cannot be ± pairs"]
    *earlier, due = run_seeds(seed, step, population // 2)
    problems = []
    if evaluated != member_seeds(due):
        problems.append(
            f"step {step} evaluated the members of seeds {evaluated[::2]}; the run's rule (seed {seed}, "
            f"contracts.es_seeds) gives that step {due}: a generator re-seeded, restored from another "
            "step or drawn twice"
        )
    before = {s for seeds in earlier for s in seeds}
    if reused := sorted(set(evaluated) & before):
        problems.append(f"step {step} evaluated seed(s) {reused[:4]} that an earlier step of the run drew")
    return problems


def _sigma_problems(m: Measured, rtol: float) -> list[str]:
    """Each forward's perturbation scale, ⟨read − θ, sign·ε⟩ / ‖ε‖² of the weights it read, within
    `rtol` of the σ the record states: the estimate divides by the stated σ, so members perturbed
    by another make ĝ another multiple of the gradient than the record says."""
    read, stated = _reals(m, "sigma_read"), number(m, "sigma_stated")
    off = [sigma for sigma in read if not abs(sigma - stated) <= rtol * abs(stated)]
    if not off:
        return []
    return [
        f"{len(off)} of {len(read)} forward(s) read weights perturbed by σ {off[0]:.6g} along their "
        f"member's noise, but the record states σ {stated:g} (rtol {rtol:g}), which the estimate divides by"
    ]


def _pairs_problems(m: Measured) -> list[str]:
    """The noise list: P/2 pairs whose two members' noise are each other's negation, none zero."""
    population, pairs = count(m, "population"), count(m, "pairs")
    problems = (
        []
        if pairs and population == 2 * pairs
        else [f"a population of {population} is not {pairs} ± pair(s)"]
    )
    largest = number(m, "max_pair_sum")
    if largest != 0:
        problems.append(
            f"the two members of a pair are not each other's negation (|ε⁺ + ε⁻| up to {largest:.3g})"
        )
    if not number(m, "min_noise_norm") > 0:
        problems.append("a member's noise is zero")
    return problems


def _applied_problems(m: Measured) -> list[str]:
    """The weights each member's fitness read against θ + sign·σ·ε(seed) regenerated from its seed."""
    evaluated = count(m, "evaluated_members")
    if not evaluated:
        return ["no member's evaluation was checked"]
    problems = []
    if has(m, "population") and evaluated != count(m, "population"):
        problems.append(f"{evaluated} member(s) were evaluated of a population of {count(m, 'population')}")
    if misplaced := count(m, "misplaced_members"):
        problems.append(
            f"{misplaced} evaluation(s) are not at their member's place in the population: the estimate "
            "weights one member's noise by another's fitness"
        )
    if unread := count(m, "unread_members"):
        problems.append(
            f"the fitness of {unread} of {evaluated} member(s) read the model's weights in no forward"
        )
    if outliers := count(m, "perturbation_outliers"):
        problems.append(
            f"the weights the fitness forwards read differ from θ + sign·σ·ε(seed) beyond rounding in "
            f"{outliers} element(s) (the worst forward {number(m, 'perturbation_error'):.3g} × ‖σε‖ off): "
            "a member evaluated on the other side, at another scale, or at another member's weights"
        )
    return problems


@judges("GATE-ES-003", needs=("weight_sum",))
def _weights_centered(m: Measured, t: Thresholds) -> list[str]:
    total = number(m, "weight_sum")
    if abs(total) <= t["max_abs_weight_sum"]:
        return []
    return [
        f"the {count(m, 'population')} shaped weights sum to {total:.6g}, not 0: the fitness was not shaped"
    ]


@judges("GATE-ES-004", needs=("dimension", "pairs", "sigma", "angle_degrees"))
def _estimate_points_true(m: Measured, t: Thresholds) -> list[str]:
    case = {"dimension": "toy_dimension", "pairs": "toy_pairs", "sigma": "toy_sigma"}
    problems = [
        f"the self-test used {key} {number(m, key):g}, the spec's case has {t[name]:g}"
        for key, name in case.items()
        if number(m, key) != t[name]
    ]
    angle = number(m, "angle_degrees")
    if not angle <= t["max_angle_degrees"]:
        problems.append(
            f"on the planted quadratic the estimated gradient is {angle:.2f}° from the true one "
            f"(allowed {t['max_angle_degrees']:g}°)"
        )
    return problems


# -- judges kept in their own modules ------------------------------------------------------
# Areas added since spec 1.6.0 keep their judges in contracts/judges_<area>.py; each module
# registers with `@judges` when imported here, after the readers above exist.
import contracts.judges_arch_options  # noqa: E402
import contracts.judges_consumed  # noqa: E402
import contracts.judges_data_filters  # noqa: E402
import contracts.judges_ft  # noqa: E402
import contracts.judges_lora  # noqa: E402
import contracts.judges_optimizer  # noqa: E402
import contracts.judges_options  # noqa: E402
import contracts.judges_router  # noqa: E402
import contracts.judges_sft  # noqa: E402
import contracts.judges_tune  # noqa: E402,F401
