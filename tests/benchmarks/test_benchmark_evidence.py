"""Benchmarks, repeatability records and repeatable runs, held to the raw evidence filed with them.

Each test copies a real record the GPU sessions filed (tests/support/benchmark_evidence_support.py), plants
one lie a forger would tell (re-hashing every artifact) and asks the integrity check, in-process,
for its findings: MFU against tokens/s and the model's shape, medians against per-step rates, a
repeatability record's legs against their own records and logs, a run filed twice under two ids,
two repeatable twins that disagree, and gate values that imply each other. Each has a benign
twin the check must leave alone.
"""

from __future__ import annotations

import json
import statistics
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from contracts.evidence import EvidenceRecord
from contracts.implied_fields import implied_problems
from tests.support.benchmark_evidence_support import as_filed, copied, real_id, real_record
from tests.support.ledger_support import assert_found, findings, gate, log_lines, write_log


def _not_found(found: list[str], fragment: str) -> None:
    assert not any(fragment in line for line in found), "\n".join(found)


def _compiled(data: dict[str, Any]) -> dict[str, Any]:
    (mode,) = [m for m in data["metrics"]["modes"] if m["mode"] == "compiled"]
    return mode


def _legs(tmp_path: Path) -> list[Path]:
    """The repeatability record's legs as filed, checked beside it."""
    return as_filed(tmp_path, "repeat_A", "repeat_B", "repeat_C")


# -- MFU and speeds ------------------------------------------------------------------------------


def _raised(row: dict[str, Any], factor: float) -> None:
    row["tokens_per_s"] = round(row["tokens_per_s"] * factor)


def _ratios_again(metrics: dict[str, Any]) -> None:
    """A forger's finish: each ratio and the headline made to agree with the speeds beside them."""
    rows = metrics["rows"]
    for mode in metrics["ratios"]:
        stack, reference = rows[f"stack_{mode}"]["tokens_per_s"], rows[f"reference_{mode}"]["tokens_per_s"]
        metrics["ratios"][mode] = round(stack / reference, 4)
    metrics["ratio"] = min(metrics["ratios"].values())


def test_a_raised_tokens_per_s_with_its_mfu_left_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        _raised(data["metrics"]["rows"]["stack_eager"], 1.02)
        _ratios_again(data["metrics"])

    found = findings(copied(tmp_path, "model_speed_gpu", plant))
    assert_found(found, "metrics.rows.stack_eager.mfu is", "but mfu of its measurements gives")


def test_a_raised_mfu_alone_is_caught_and_its_own_value_is_not(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["stack_mfu"] *= 1.001  # one part in a thousand: far beyond a rounding

    found = findings(copied(tmp_path / "raised", "train_overhead_gpu", plant))
    assert_found(found, "metrics.stack_mfu is", "but mfu of its measurements gives")
    _not_found(findings(copied(tmp_path / "as filed", "train_overhead_gpu", lambda *_: None)), ".mfu is")


def test_swapped_plain_and_stack_throughputs_are_caught(tmp_path: Path) -> None:
    """The overhead and ratio made to agree with the swap: each MFU then sits beside another speed."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        m = data["metrics"]
        m["plain_tokens_per_s"], m["stack_tokens_per_s"] = m["stack_tokens_per_s"], m["plain_tokens_per_s"]
        m["overhead"] = round(1 - m["stack_tokens_per_s"] / m["plain_tokens_per_s"], 4)
        m["eager_ratio"] = round(m["stack_tokens_per_s"] / m["plain_tokens_per_s"], 4)
        m["compiled_speedup"] = round(m["compiled_tokens_per_s"] / m["plain_tokens_per_s"], 3)

    found = findings(copied(tmp_path, "train_overhead_gpu", plant))
    assert_found(found, "metrics.stack_mfu is", "but mfu of its measurements gives")
    _not_found(found, "metrics.overhead is")  # what only the MFU could catch


def test_a_speed_raised_with_its_mfu_raised_by_the_same_function_stands(tmp_path: Path) -> None:
    """The benign side: a tokens/s with the MFU its model and GPU give (the rule is the function)."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        row = data["metrics"]["rows"]["stack_eager"]
        old = row["tokens_per_s"]
        _raised(row, 1.02)
        row["mfu"] *= row["tokens_per_s"] / old
        _ratios_again(data["metrics"])

    _not_found(findings(copied(tmp_path, "model_speed_gpu", plant)), ".mfu is")


def test_a_median_restated_against_its_per_step_rates_is_caught(tmp_path: Path) -> None:
    """A record that keeps each step's rate: its tokens/s is their median, to the last unit."""
    rates = [229000.5, 229949.0, 231000.25]

    def kept(median: float) -> Any:
        def plant(data: dict[str, Any], _dir: Path) -> None:
            m = data["metrics"]
            m["stack_step_tokens_per_s"] = rates
            m["stack_tokens_per_s"] = median

        return plant

    assert statistics.median(rates) == 229949.0
    _not_found(
        findings(copied(tmp_path / "kept", "train_overhead_gpu", kept(229949))), "stack_tokens_per_s is"
    )
    found = findings(copied(tmp_path / "raised", "train_overhead_gpu", kept(229951)))
    assert_found(found, "metrics.stack_tokens_per_s is 229951", "steady_median of its measurements gives")


# -- a repeatability record's legs ---------------------------------------------------------------


def test_the_filed_repeatability_record_and_its_legs_agree(tmp_path: Path) -> None:
    found = findings(copied(tmp_path, "repeat", lambda *_: None), *_legs(tmp_path))
    _not_found(found, "mode 'compiled'")


def test_a_b_leg_naming_run_a_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        mode = _compiled(data)
        mode["runs"]["B"] = mode["runs"]["A"]
        for key in ("flags", "replay", "tokens_per_s_median"):
            mode[key]["B"] = mode[key]["A"]

    found = findings(copied(tmp_path, "repeat", plant), *_legs(tmp_path))
    assert_found(found, "mode 'compiled': legs A and B name one run", real_id("repeat_A"))


def test_a_c_leg_that_was_never_stopped_is_caught(tmp_path: Path) -> None:
    """C's log and record with the stop and the resume taken out: a straight run named as C."""

    def straight(data: dict[str, Any], run_dir: Path) -> None:
        lines = log_lines(run_dir)
        write_log(run_dir, [ln for ln in lines if not (ln["type"] == "event" and ln["step"] == 17)])
        del data["metrics"]["resumes"]

    leg = copied(tmp_path / "legs", "repeat_C", straight)
    found = findings(
        copied(tmp_path, "repeat", lambda *_: None), leg, *as_filed(tmp_path, "repeat_A", "repeat_B")
    )
    assert_found(found, f"leg C ({real_id('repeat_C')}) logs its resume at step(s) []", "stopped at step 17")


def test_a_restated_stopped_at_step_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        _compiled(data)["stopped_at_step"] = 12

    found = findings(copied(tmp_path, "repeat", plant), *_legs(tmp_path))
    assert_found(found, "logs its resume at step(s) [17], but the mode says it was stopped at step 12")


def test_a_compiled_mode_citing_eager_legs_is_caught(tmp_path: Path) -> None:
    """Eager legs that agree with each other, their flags, replays and medians copied over too."""
    eager = {"A": "eager_A", "B": "eager_A_earlier", "C": "eager_C"}

    def plant(data: dict[str, Any], _dir: Path) -> None:
        mode = _compiled(data)
        mode["runs"] = {leg: real_id(role) for leg, role in eager.items()}
        for leg, role in eager.items():
            record = json.loads((real_record(role) / "metadata.json").read_text())
            mode["flags"][leg] = record["determinism"]["flags"]
            mode["replay"][leg] = record["metrics"]["repeatability"]

    found = findings(copied(tmp_path, "repeat", plant))
    assert_found(
        found, f"leg A ({real_id('eager_A')}) trained with train.compile=False, not the compiled mode's"
    )


def test_restated_flags_replays_and_medians_are_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        mode = _compiled(data)
        mode["flags"]["B"]["non_deterministic_ops"] = {"aten::index_add_": 1}
        mode["replay"]["C"]["seconds"] = 2.0
        mode["tokens_per_s_median"]["A"] *= 1.05

    found = findings(copied(tmp_path, "repeat", plant), *_legs(tmp_path))
    for key, leg in (("flags", "B"), ("replay", "C"), ("tokens_per_s_median", "A")):
        assert_found(found, f"mode 'compiled': {key}[{leg}] is", "but its run's record and log give")


# -- one run, one outcome ------------------------------------------------------------------------


def _jittered(data: dict[str, Any], run_dir: Path) -> None:
    """A forger's copy: a later start, every logged throughput moved by a little."""
    started = datetime.fromisoformat(data["run"]["started"]) + timedelta(seconds=1)
    data["run"]["started"] = started.isoformat().replace("+00:00", "Z")
    lines = log_lines(run_dir)
    for line in lines:
        if "tokens_per_s" in line:
            line["tokens_per_s"] *= 1.003
    write_log(run_dir, lines)


def test_a_copied_run_with_its_throughputs_jittered_is_one_run(tmp_path: Path) -> None:
    copy = copied(tmp_path, "cpu_run", _jittered, as_id="mix-run-20261127T2359-copy")
    found = findings(*as_filed(tmp_path, "cpu_run"), copy)
    assert_found(
        found,
        "logs the step lines (losses, batch hashes) of",
        real_id("cpu_run"),
        "one run filed under two ids",
    )


def _another_commit(data: dict[str, Any], run_dir: Path) -> None:
    """A forger's copy that also states another commit (the one of an older record)."""
    _jittered(data, run_dir)
    older = json.loads((real_record("repeat") / "metadata.json").read_text(encoding="utf-8"))
    data["code"]["git_sha"] = older["code"]["git_sha"]


def test_a_copied_run_that_states_another_commit_is_one_run(tmp_path: Path) -> None:
    copy = copied(tmp_path, "cpu_run", _another_commit, as_id="mix-run-20261127T2359-copy")
    found = findings(*as_filed(tmp_path, "cpu_run"), copy)
    assert_found(
        found, "logs the step lines (losses, batch hashes) of", real_id("cpu_run"), "at another commit"
    )


def test_a_run_again_at_another_commit_that_parts_from_it_is_no_copy(tmp_path: Path) -> None:
    """The benign side: code of another commit computes the same steps until a held-out loss parts them."""

    def rerun(data: dict[str, Any], run_dir: Path) -> None:
        _another_commit(data, run_dir)
        lines = log_lines(run_dir)
        last_eval = max(i for i, line in enumerate(lines) if line.get("type") == "eval")
        lines[last_eval]["heldout_loss"] += 1e-7
        write_log(run_dir, lines)

    copy = copied(tmp_path, "cpu_run", rerun, as_id="mix-run-20261127T2359-rerun")
    _not_found(findings(*as_filed(tmp_path, "cpu_run"), copy), "step lines (losses, batch hashes)")


def test_a_repeat_of_a_repeatable_run_is_no_copy_and_agrees(tmp_path: Path) -> None:
    """The benign side: a repeatable leg filed again under a new id is its configuration repeating."""
    copy = copied(tmp_path, "repeat_B", _jittered, as_id="bench-repeat-20261127T075408-compiled-D")
    found = findings(*_legs(tmp_path), copy)
    _not_found(found, "step lines (losses, batch hashes)")
    _not_found(found, "claims its run repeatable, but")


def test_a_repeatable_twin_whose_log_differs_is_named(tmp_path: Path) -> None:
    """A run re-filed as repeatable beside repeatable runs of its configuration, its step 20 loss another."""

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        _jittered(data, run_dir)
        lines = log_lines(run_dir)
        for line in lines:
            if line.get("type") == "step" and line["step"] == 20:
                line["loss"] += 1e-6
        write_log(run_dir, lines)

    copy = copied(tmp_path, "repeat_B", plant, as_id="bench-repeat-20261127T075408-compiled-D")
    found = findings(*_legs(tmp_path), copy)
    assert_found(found, "claims its run repeatable, but", real_id("repeat_A"), "differs from it in step 20")


# -- gate values that imply each other -----------------------------------------------------------


def test_bit_for_bit_beside_a_loss_difference_is_caught(tmp_path: Path) -> None:
    def gap(value: float) -> Any:
        def plant(data: dict[str, Any], _dir: Path) -> None:
            gate(data, "GATE-CKPT-003")["measured"]["max_loss_rel_diff"] = value

        return plant

    found = findings(copied(tmp_path / "moved", "repeat_A", gap(1e-7)))
    assert_found(found, "GATE-CKPT-003 held its replay bit for bit", "difference of 1e-07, but lists []")
    _not_found(findings(copied(tmp_path / "zero", "repeat_A", gap(0.0))), "held its replay bit for bit")


@given(
    gap=st.floats(min_value=0, max_value=1, allow_nan=False),
    exact=st.booleans(),
    listed=st.sampled_from([[], ["step 18 loss"], ["step 18 grad_norm"], ["model"]]),
)
def test_a_bit_for_bit_replay_lists_a_loss_exactly_when_one_moved(
    gap: float, exact: bool, listed: list[str]
) -> None:
    """Held bit for bit, a loss difference above 0 and a listed loss mismatch go together (a
    failing replay states both, a passing one neither); not held so, a difference within the
    gate's tolerance is the judge's to weigh, not a contradiction."""
    record = json.loads((real_record("repeat_A") / "metadata.json").read_text())
    gate(record, "GATE-CKPT-003")["measured"].update(
        bit_for_bit=exact, max_loss_rel_diff=gap, replay_mismatched=listed
    )
    problems = implied_problems(EvidenceRecord.model_validate(record))
    assert bool(problems) == (exact and (gap != 0) != (listed == ["step 18 loss"]))
