"""Falsifiers of the records that cite no artifacts: a benchmark's headline against its measurements,
a proof's counts against themselves.

A benchmark record keeps each contender's speed beside the ratio it is read for, so a ratio edited
to look better contradicts the speeds; rounding does not. Each record case plants one headline
just beyond what its rounded measurements allow (caught) and one just inside (not caught), with
the values worked out by hand from the record, so a tolerance widened or narrowed turns a test red.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.derive.benchmarks import Identity, half_unit, quotient
from tests.support.ledger_support import assert_caught, findings, planted


def _at(data: dict[str, Any], path: tuple[Any, ...], value: Any) -> None:
    for key in path[:-1]:
        data = data[key]
    data[path[-1]] = value


# (record, field, beyond its rounding, inside it, how the report names the field). The bounds,
# worked out from each record's rounded measurements and the headline's last digit (a planted
# value is written with the record's own decimals: fewer would claim a coarser rounding):
#   bench-trace ratio 1.2043 = 49.66 / 41.236 ms            -> 1.20410 … 1.20447
#   bench-train overhead -0.0278 = 1 - 18430 / 17933         -> -0.02782 … -0.02761
#   bench-prepare runs[3].ratio 1.284 (Parquet, bpe)         -> 1.28341 … 1.28802
#   bench-reader ratio 1.853 = 1081691045 / 583594259        -> 1.852998 … 1.853998 (a schema-1 record)
#   bench-smoke above_floor 7.17 = 12.05 - (0.04+1.7+1.27+1.69+0.18) -> 7.09 … 7.25
#   bench-train-options moe+... options[2].vs_dense 0.813 = 14027 / 17244 -> 0.81289 … 0.81399
#   gpu-check ratio, the unrounded geometric mean of ten shapes -> 0.9453138525400189 to ~1e-12
HEADLINES = [
    ("bench-trace-20261123T150358", ("metrics", "ratio"), 1.2046, 1.2044, "metrics.ratio"),
    ("bench-train-20261123T155206", ("metrics", "overhead"), -0.0275, -0.0277, "metrics.overhead"),
    (
        "bench-prepare-20261123T173842",
        ("metrics", "runs", 3, "ratio"),
        1.291,
        1.287,
        "metrics.runs[3].ratio",
    ),
    ("bench-reader-20261122T001940", ("metrics", "ratio"), 1.855, 1.8535, "metrics.ratio"),
    (
        "bench-smoke-20261123T150145",
        ("metrics", "above_floor_seconds"),
        7.26,
        7.24,
        "metrics.above_floor_seconds",
    ),
    (
        "bench-train-options-20261122T172734",
        ("metrics", "options", 2, "vs_dense"),
        0.816,
        0.8135,
        "metrics.options[2].vs_dense",
    ),
    ("gpu-check-20261122T160821", ("metrics", "ratio"), 0.9454, 0.94531385254, "metrics.ratio"),
]

RUNS = [case[0] for case in HEADLINES]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(("run", "path", "beyond", "inside", "name"), HEADLINES, ids=RUNS)
def test_a_headline_beyond_what_its_measurements_allow_is_caught(
    tmp_path: Path, run: str, path: tuple[Any, ...], beyond: float, inside: float, name: str
) -> None:
    tampered = planted(tmp_path / "beyond", run, lambda d, _: _at(d, path, beyond))
    assert_caught(tampered, run, f"{name} is {beyond}, but")


@pytest.mark.parametrize(("run", "path", "beyond", "inside", "name"), HEADLINES, ids=RUNS)
def test_a_headline_within_its_measurements_rounding_stands(
    tmp_path: Path, run: str, path: tuple[Any, ...], beyond: float, inside: float, name: str
) -> None:
    rounded = planted(tmp_path / "inside", run, lambda d, _: _at(d, path, inside))
    assert findings(rounded) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_gpu_check_overhead_its_compile_step_contradicts_is_caught(tmp_path: Path) -> None:
    """0.3116 = 1 - 118402 / 172006 from the compile step; the goal row repeats it."""
    run = planted(tmp_path, "gpu-check-20261122T160821", lambda d, _: d["metrics"].update(overhead=0.2))
    assert_caught(run, "metrics.overhead is 0.2, but overhead of its measurements gives 0.31")
    assert_caught(run, "metrics.goals.train_overhead.measured is 0.3116")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_model_ratio_better_than_both_of_its_modes_is_caught(tmp_path: Path) -> None:
    """The headline is the worse of eager 0.9651 and compiled 0.9785."""
    run = planted(tmp_path, "bench-model-20261123T150413", lambda d, _: d["metrics"].update(ratio=0.9785))
    assert_caught(run, "metrics.ratio is 0.9785, but smallest of its measurements gives 0.965")


def test_half_a_unit_of_the_last_digit_written() -> None:
    assert half_unit(0.9651) == pytest.approx(5e-5)
    assert half_unit(17933) == 0.5
    assert half_unit(1e-05) == pytest.approx(5e-6)
    assert half_unit(2.5e-07) == pytest.approx(5e-9)
    assert half_unit(0.9453138525400189) < 1e-15


def test_one_unit_of_the_last_digit_past_exact_measurements_is_caught() -> None:
    """200000 / 400000 is 0.5 to within 2.5e-6 from the integers' rounding; 0.5001 is not."""
    assert Identity("metrics.ratio", 0.5001, quotient, (200000, 400000)).problem() is not None
    assert Identity("metrics.ratio", 0.50000, quotient, (200000, 400000)).problem() is None


@given(
    st.floats(1e-3, 1e9),
    st.floats(1e-3, 1e9),
    st.integers(0, 6),
    st.integers(0, 6),
    st.integers(1, 8),
)
def test_honest_rounding_of_a_ratio_and_its_measurements_never_reads_as_tampering(
    a: float, b: float, a_digits: int, b_digits: int, digits: int
) -> None:
    """Whatever the benchmark rounds, and to how many decimals, the check accepts what it wrote
    (to whole numbers a benchmark rounds with `round(x)`, which writes an integer)."""
    recorded = round(quotient(a, b), digits)
    args = (_written(a, a_digits), _written(b, b_digits))
    assert Identity("metrics.ratio", recorded, quotient, args).problem() is None


def _written(value: float, digits: int) -> float:
    """A measurement as a benchmark keeps it; one that would round to 0 is kept unrounded."""
    kept = round(value) if digits == 0 else round(value, digits)
    return kept or value


# -- a gpu-check's steps ---------------------------------------------------------------------

GPU_CHECK = "gpu-check-20261122T160821"


def _step(data: dict[str, Any], name: str) -> dict[str, Any]:
    return next(step for step in data["metrics"]["steps"] if step["name"] == name)


def _tail_case_out(diff: float) -> Any:
    """The fp32 `tail` case's output deviation set to `diff`, the largest of the fp32 cases (the
    step's `largest_diff` with it); GATE-KERNEL-001 (rev 1) allows it 2e-4 + 2e-4 × its
    reference's largest magnitude 2.8826 = 7.77e-4."""

    def edit(data: dict[str, Any], _dir: Path) -> None:
        measured = _step(data, "kernel parity")["measured"]
        case = measured["cases"][0]
        assert (case["dtype"], case["case"], case["ok"]) == ("fp32", "tail", True)
        case["measured"]["outputs"]["out"]["max_abs_diff"] = diff
        measured["largest_diff"]["fp32"] = diff

    return edit


@pytest.mark.gate("GATE-INTEG-001")
def test_a_parity_case_beyond_tolerance_left_ok_is_caught(tmp_path: Path) -> None:
    run = planted(tmp_path, GPU_CHECK, _tail_case_out(8.0e-4))
    assert_caught(run, "cases[0] (fp32 tail) says ok is true, but GATE-KERNEL-001's judge finds")


def test_a_parity_case_within_tolerance_stands(tmp_path: Path) -> None:
    assert findings(planted(tmp_path, GPU_CHECK, _tail_case_out(7.5e-4))) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_parity_cases_other_than_the_check_declares_are_caught(tmp_path: Path) -> None:
    """`make gpu-check` runs every precision over PARITY_CASES at its commit (tools/gpu_check.py
    then; tools/records/gpu_check.py since the code moved): a case said to have run at a longer
    sequence, or a case left out of a precision, is coverage the check never had."""

    def longer(data: dict[str, Any], _dir: Path) -> None:
        _step(data, "kernel parity")["measured"]["cases"][0]["shape"]["n"] = 4096

    def left_out(data: dict[str, Any], _dir: Path) -> None:
        cases = _step(data, "kernel parity")["measured"]["cases"]
        cases.remove(next(c for c in cases if c["dtype"] == "bf16" and c["case"] == "GQA 6/2, not causal"))

    assert_caught(planted(tmp_path / "longer", GPU_CHECK, longer), "(fp32 tail) states shape", "PARITY_CASES")
    assert_caught(
        planted(tmp_path / "left-out", GPU_CHECK, left_out),
        "cases of bf16 leave out 'GQA 6/2, not causal', which every precision runs",
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_resume_step_passing_over_differences_is_caught(tmp_path: Path) -> None:
    def differed(data: dict[str, Any], _dir: Path) -> None:
        _step(data, "fp16 resume")["measured"]["mismatched"] = ["step 52: loss 2.1 != 2.2"]

    assert_caught(planted(tmp_path, GPU_CHECK, differed), "metrics.steps[fp16 resume] is PASS, but")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_completed_gpu_check_with_a_failed_step_is_caught(tmp_path: Path) -> None:
    def failed(data: dict[str, Any], _dir: Path) -> None:
        _step(data, "compile")["status"] = "FAIL"

    assert_caught(
        planted(tmp_path, GPU_CHECK, failed), 'run.status is "completed", but its artifacts derive "failed"'
    )


def test_a_step_status_the_check_never_gives_is_caught(tmp_path: Path) -> None:
    """A step is PASS, FAIL or SKIPPED: any other word (read as passing by no rule) is named."""

    def passed(data: dict[str, Any], _dir: Path) -> None:
        _step(data, "nproc (NCCL)")["status"] = "PASSED"

    assert_caught(planted(tmp_path, GPU_CHECK, passed), "metrics.steps[nproc (NCCL)] has the status 'PASSED'")


def test_the_attention_steps_own_ratio_is_the_headlines(tmp_path: Path) -> None:
    """The attention step states the ratio the record's headline states, from the same shapes."""

    def raised(data: dict[str, Any], _dir: Path) -> None:
        _step(data, "attention speed")["measured"]["ratio"] = 1.04

    assert_caught(
        planted(tmp_path, GPU_CHECK, raised), "metrics.steps[attention speed].measured.ratio is 1.04"
    )


def test_a_goal_measured_by_another_metric_is_caught(tmp_path: Path) -> None:
    """A goal's measured value is read from the key of its metric: renamed, it would go underived."""

    def renamed(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["goals"]["train_overhead"]["metric"] = "compiled_speedup"

    found = findings(planted(tmp_path, GPU_CHECK, renamed))
    assert any("metrics.goals.train_overhead.metric is 'compiled_speedup'" in line for line in found), found


def test_a_gpu_check_restated_as_run_on_the_cpu_is_caught(tmp_path: Path) -> None:
    """The GPU check refuses to run without CUDA: a record of it on the CPU was never filed by it."""

    def moved(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(device="cpu", torch="2.13.0+cpu", cuda=None)

    assert_caught(planted(tmp_path, GPU_CHECK, moved), "the GPU check runs on CUDA alone")


# -- what a benchmark chose from its candidates -----------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_tile_search_naming_a_slower_candidate_its_best_is_caught(tmp_path: Path) -> None:
    """D = 64's forward: 128×64 tiles at 0.904 ms were the fastest of its candidates."""

    def slower(data: dict[str, Any], _dir: Path) -> None:
        found = data["metrics"]["search"]["64"]["fwd"]
        found["best"] = next(row for row in found["candidates"] if row["ms"] > found["best"]["ms"])

    run = planted(tmp_path, "bench-attention-tiles-20261122T160045", slower)
    assert_caught(run, "metrics.search.64.fwd.best")


@pytest.mark.gate("GATE-INTEG-001")
def test_manifests_said_identical_over_worker_counts_that_wrote_others_is_caught(tmp_path: Path) -> None:
    def differ(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["worker_manifests"]["2"] = "0" * 64

    run = planted(tmp_path, "bench-prepare-20261123T173842", differ)
    assert_caught(run, "metrics.manifests_identical is true, but its artifacts derive false")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_repeatability_benchmark_counting_fewer_differing_runs_than_it_lists_is_caught(
    tmp_path: Path,
) -> None:
    """No GPU has filed one yet: a CPU benchmark record re-shaped as benchmarks/repeatability.py
    writes it, whose compiled resume (C) differs while the count says none did."""

    def repeat(data: dict[str, Any], _dir: Path) -> None:
        modes = [
            {"mode": "eager", "B_differs": [], "C_differs": []},
            {"mode": "compiled", "B_differs": [], "C_differs": ["step 17: loss 2.1 != 2.2"]},
        ]
        goal = {"benchmark": "repeatable_runs_gpu", "goal": 0.0, "met": True}
        data["metrics"] = {**goal, "mismatched_runs": 0, "preset": "smoke", "sets": [], "modes": modes}

    run = planted(tmp_path, "bench-model-20261123T150413", repeat)
    assert_caught(run, "metrics.mismatched_runs is 0, but its artifacts derive 1")
