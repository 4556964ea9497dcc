"""A repeatability benchmark's comparisons are derived again from the runs it filed (tools/repeat_runs.py).

The H100 record `bench-repeat-20261126T180411` lists, for its eager mode, the straight run A and
the SIGTERM-and-resumed run C, both filed in the ledger with their metrics.jsonl and their last
checkpoint's weights digest. Its `C_differs` is [] because those files agree; pointing C at
another run (the compiled A of the same benchmark, whose numbers and weights differ) or at a run
the ledger does not hold must be caught, and the record as filed must not be.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from contracts.derive.benchmarks import run_differences
from tests.support.ledger_support import RECORDS, assert_found, findings, forger_finished, planted

REPEAT_RUN = "bench-repeat-20261126T180411"  # benchmarks/repeatability.py on an H100, eager met
EAGER_A, EAGER_C = f"{REPEAT_RUN}-eager-A", f"{REPEAT_RUN}-eager-C"
COMPILED_A = f"{REPEAT_RUN}-compiled-A"


def _eager(data: dict[str, Any]) -> dict[str, Any]:
    (mode,) = [m for m in data["metrics"]["modes"] if m["mode"] == "eager"]
    return mode


def test_the_filed_record_and_its_runs_agree(tmp_path: Path) -> None:
    assert findings(planted(tmp_path, REPEAT_RUN, forger_finished(lambda data, _dir: None))) == []


def test_a_repeated_run_swapped_for_one_that_differs_is_caught(tmp_path: Path) -> None:
    """C pointed at the compiled straight run: its files differ from eager A's, the list says []."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        _eager(data)["runs"]["C"] = COMPILED_A

    found = findings(planted(tmp_path, REPEAT_RUN, forger_finished(plant)))
    assert_found(
        found, "mode 'eager': C_differs is [], but runs", f"{COMPILED_A} as filed differ in", "final weights"
    )


def test_a_difference_hidden_from_a_list_is_caught(tmp_path: Path) -> None:
    """A list edited to name a difference the runs' files do not have: it is theirs to say."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        _eager(data)["C_differs"] = ["step 3 loss"]

    found = findings(planted(tmp_path, REPEAT_RUN, forger_finished(plant)))
    assert_found(found, "C_differs is ['step 3 loss'], but runs", "as filed differ in []")


def test_a_listed_run_the_ledger_does_not_hold_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _dir: Path) -> None:
        _eager(data)["runs"]["B"] = f"{REPEAT_RUN}-eager-B"  # B was not filed by this benchmark

    found = findings(planted(tmp_path, REPEAT_RUN, forger_finished(plant)))
    assert_found(found, "lists run(s) the ledger does not hold", f"B ({REPEAT_RUN}-eager-B)")


@pytest.mark.parametrize(
    ("leg", "code", "said"),
    [
        ("A", 1, "A exited 1"),
        ("C resumed", 3, "C resumed exited 3"),
        ("C", 0, "C exited 0, not stopped by SIGTERM"),
    ],
)
def test_a_mode_that_compared_runs_a_failed_leg_made_is_caught(
    tmp_path: Path, leg: str, code: int, said: str
) -> None:
    """A mode's exit codes are its own measurement: one saying a leg failed (A or C's resume
    exited non-zero, C was never stopped) beside the comparison of its runs contradicts it, as the
    benchmark would have stated the failure and compared nothing."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        _eager(data)["exit_codes"][leg] = code

    found = findings(planted(tmp_path, REPEAT_RUN, forger_finished(plant)))
    assert_found(found, "mode 'eager' compared its runs, but its exit codes say", said)


def test_run_differences_ignores_timings_and_names_values_lines_and_weights() -> None:
    """The comparison the benchmark and the checker share: timings never count; a value, a line
    on one side only and the final weights do; a run without a weights digest is never equal."""
    a = (RECORDS / EAGER_A / "metrics.jsonl").read_text(encoding="utf-8")
    c = (RECORDS / EAGER_C / "metrics.jsonl").read_text(encoding="utf-8")
    assert run_differences(a, c, "w", "w") == []
    retimed = a.replace('"tokens_per_s": ', '"tokens_per_s": 1').replace('"seconds": ', '"seconds": 1')
    assert retimed != a and run_differences(a, retimed, "w", "w") == []
    lines = a.splitlines()
    step_3 = next(i for i, line in enumerate(lines) if '"type": "step"' in line and '"step": 3,' in line)
    changed = lines[step_3].replace('"loss": ', '"loss": 1', 1)
    assert run_differences(a, "\n".join([*lines[:step_3], changed, *lines[step_3 + 1 :]]), "w", "w") == [
        "step 3 loss"
    ]
    assert run_differences(a, "\n".join(lines[:step_3] + lines[step_3 + 1 :]), "w", "w") == [
        "step 3: missing"
    ]
    assert run_differences(a, a, "w", "v") == run_differences(a, a, None, None) == ["final weights"]


def test_a_benchmark_restated_as_run_on_the_cpu_is_caught_by_its_legs(tmp_path: Path) -> None:
    """Its legs are runs of their own, each on the GPU its record names: the benchmark restated as
    the CPU's (its env agreeing with itself) is not where its legs ran."""

    def plant(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(device="cpu", torch="2.13.0+cpu", cuda=None)

    found = findings(planted(tmp_path, REPEAT_RUN, forger_finished(plant)))
    assert_found(found, f"leg A ({EAGER_A}) ran on 'cuda', the benchmark on 'cpu'")
