"""A benchmark's record as the checker reads it: the training benchmark's CPU path, end to end.

`benchmarks/train_throughput.py` computes its headline numbers with the formulas the integrity
check derives them by (contracts/derive/benchmarks.py), from measurements it rounds before writing.
Run for a few steps of the smoke preset, its record must pass the check as written, and fail it
once its overhead is edited past what those measurements allow. The test never looks at speed.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from benchmarks import train_throughput as throughput
from benchmarks.determinism_parts import PARTS, legs_table, parts_metrics, run_leg
from benchmarks.repeatability import main as repeatability_main
from benchmarks.train_throughput import WARMUP, ProfiledClock, plain_steps, profiled_steps, timed_pair
from benchmarks.train_throughput import main as throughput_main
from contracts.derive.benchmarks import leg_failures
from contracts.evidence import EVIDENCE_FILE, file_record, new_record, run_id
from contracts.spec import load_spec
from stack.trace.tracer import PHASES
from tests.support.ledger_support import ROOT, findings
from tests.support.train_support import prepared


def filed(command: list[str], ledger: Path) -> tuple[Path, dict[str, Any]]:
    """Run a benchmark script (its arguments after `python`) to file one record in `ledger`; the
    record must hold under the integrity check as written. Returns its directory and its record."""
    done = subprocess.run([sys.executable, *command], cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (run,) = ledger.iterdir()
    assert findings(run) == []
    return run, json.loads((run / EVIDENCE_FILE).read_text(encoding="utf-8"))


def slowed(leg: dict[str, Any]) -> None:
    """Every step of a leg twice as long: its median, so its tokens/s, moves whichever step is the
    slowest (one step edited alone may sit above the median and leave it where it was)."""
    leg["step_seconds"] = [2 * seconds for seconds in leg["step_seconds"]]


def shifted(row: dict[str, Any], key: str) -> None:
    """A number read off others (a price, a per-step cost, a ratio) moved by a quarter: past the
    rounding box of any number the record can hold. A fixed edit such as 0.5 is no edit when the
    measured number lies within that edit's own box (0.45 to 0.55, one decimal), and a small
    shift that lands on a number of fewer decimals (0.99 + 0.01) widens its box past the shift."""
    row[key] = row[key] + 0.25


def edited_findings(run: Path, record: dict[str, Any]) -> list[str]:
    """The check's findings once `record`, edited, is written over the run's own."""
    (run / EVIDENCE_FILE).write_text(json.dumps(record), encoding="utf-8")
    return findings(run)


@pytest.fixture(scope="module")
def training_record(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    """The training benchmark's record of six smoke steps a leg, eager and compiled, filed once for
    the tests that read it."""
    root = tmp_path_factory.mktemp("training-benchmark")
    data, ledger = prepared(root), root / "ledger"
    command = ["benchmarks/train_throughput.py", "--preset", "smoke", "--steps", "6", "--compile"]
    return filed([*command, "--data", str(data), "--ledger", str(ledger)], ledger)


def own_copy(filed_run: tuple[Path, dict[str, Any]], tmp_path: Path) -> tuple[Path, dict[str, Any]]:
    """A copy of a filed run and its record for one test to edit."""
    run, record = filed_run
    copy = shutil.copytree(run, tmp_path / "ledger" / run.name)
    return copy, json.loads(json.dumps(record))


def test_the_training_benchmark_files_a_record_its_own_numbers_hold(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    run, record = own_copy(training_record, tmp_path)
    metrics = record["metrics"]
    assert metrics["benchmark"] == "train_overhead" and metrics["preset"] == "smoke"
    assert metrics["timing"] == "paired"  # on a CPU the two loops take turns in one run
    # One unit of the last digit past what 1 - stack / plain allows from the rounded tokens/s.
    plain, stack = metrics["plain_tokens_per_s"], metrics["stack_tokens_per_s"]
    tampered = round(1 - (stack - 1) / (plain + 1), 4) + 0.0002
    if round(tampered, 3) == round(tampered, 4):  # a last digit 0 reads as a coarser rounding, whose
        tampered += 0.0001  # half unit (5e-4) would cover the tamper
    metrics["overhead"] = tampered
    assert any("metrics.overhead is" in line for line in edited_findings(run, record))


def test_the_training_benchmark_profiles_one_steady_step_of_each_loop(
    training_record: tuple[Path, dict[str, Any]],
) -> None:
    """Each loop's step past the warm-up, profiled in a run of its own: both read the loss off the
    device, so neither profile can be empty of host reads."""
    profiles = training_record[1]["metrics"]["step_profiles"]
    assert profiles["step"] == WARMUP + 1 and profiles["grad_accum"] == 1
    for loop in ("plain", "stack"):
        assert profiles[loop]["host_reads"] >= 1, loop


def test_the_compiled_legs_and_what_is_read_off_them_are_derived_from_their_steps(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Both loops compiled at grad_accum 1 (the smoke preset's own), their tokens/s from their steps,
    and stack ÷ plain, the per-step cost and the compiled tokens/s from those legs: any of them
    edited alone is named."""
    run, record = own_copy(training_record, tmp_path)
    metrics = record["metrics"]
    legs = [(leg["loop"], leg["grad_accum"], leg["compiled"]) for leg in metrics["compiled_legs"]]
    assert legs == [("plain", 1, True), ("stack", 1, True)]
    assert metrics["compiled_overhead"] == metrics["compiled_vs_plain"][0]["step_cost"]
    edits = {
        "metrics.compiled_legs[1].tokens_per_s": lambda m: slowed(m["compiled_legs"][1]),
        "metrics.compiled_vs_plain[0].step_cost": lambda m: shifted(m["compiled_vs_plain"][0], "step_cost"),
        "metrics.compiled_tokens_per_s": lambda m: m.__setitem__("compiled_tokens_per_s", 1),
        "metrics.compiled_overhead": lambda m: shifted(m, "compiled_overhead"),
    }
    for field, edit in edits.items():
        edited = json.loads(json.dumps(record))
        edit(edited["metrics"])
        assert any(f"{field} is" in line for line in edited_findings(run, edited)), field


def test_the_compiled_pair_states_its_goals_and_met_answers_for_them(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """With --compile the record states the compiled goals of spec/benchmarks.yaml beside the
    eager ones, each as the spec holds it, and `met` answers for every goal it states: a compiled
    goal restated, or the verdict turned, is named."""
    run, record = own_copy(training_record, tmp_path)
    metrics, spec = record["metrics"], load_spec()
    for bench in ("train_compile_speedup", "train_compiled_overhead", "train_compiled_peak_memory_ratio"):
        goal = spec.benchmark(bench)
        assert bench in metrics["also"] and metrics[f"goal_{goal.metric}"] == goal.goal, bench
    edited = json.loads(json.dumps(record))
    edited["metrics"]["goal_compiled_overhead"] = 0.5
    assert any("metrics.goal_compiled_overhead is" in line for line in edited_findings(run, edited))
    edited = json.loads(json.dumps(record))
    edited["metrics"]["met"] = not metrics["met"]
    assert any("metrics.met is" in line for line in edited_findings(run, edited))


def test_a_goal_the_record_measured_left_unstated_is_named(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """A record states the goal of every benchmark it names whose measurement it holds: one taken
    out is named, and `met` is derived over it still, so a goal missed cannot leave the verdict by
    not being stated."""
    run, record = own_copy(training_record, tmp_path)
    # The per-step cost's goal, stated as `goal`, is named by its metric once taken out.
    named = {"goal": "goal_overhead"}
    for key in ("goal_compiled_speedup", "goal_compiled_overhead", "goal_peak_memory_ratio", "goal"):
        edited = json.loads(json.dumps(record))
        del edited["metrics"][key]
        found = edited_findings(run, edited)
        expected = f"metrics.{named.get(key, key)} is (absent)"
        assert any(expected in line for line in found), (key, found)


def test_a_leg_renamed_or_timed_twice_leaves_what_is_read_off_it_caught(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The comparisons and headlines are read off legs named by loop, determinism setting and
    accumulation: a leg restated as another loop or accumulation leaves the rows that name it with
    nothing to derive from, and a leg timed twice lets either be read."""
    run, record = own_copy(training_record, tmp_path)
    legs = record["metrics"]["legs"]
    plain_at_1 = next(i for i, leg in enumerate(legs) if leg["loop"] == "plain" and leg["grad_accum"] == 1)
    edits = {
        "has a leg of loop 'plains'": lambda m: m["legs"][plain_at_1].update(loop="plains"),
        "metrics.plain_tokens_per_s is read off the plain leg at": lambda m: m["legs"][plain_at_1].update(
            grad_accum=2
        ),
        "metrics.vs_plain[0] is read off the plain leg at": lambda m: m["legs"][plain_at_1].update(
            grad_accum=2
        ),
        "times 'plain' at deterministic=": lambda m: m["legs"].append(dict(m["legs"][plain_at_1])),
        "metrics.compiled_vs_plain[0] is read off the stack leg": lambda m: m["compiled_legs"].pop(),
    }
    for said, edit in edits.items():
        edited = json.loads(json.dumps(record))
        edit(edited["metrics"])
        assert any(said in line for line in edited_findings(run, edited)), said


def test_what_was_live_at_a_peak_adds_up_to_it_by_category_too(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The profiler's categories of what was live at each loop's peak partition it, as its owners
    do: one category raised is named against the peak."""
    run, record = own_copy(training_record, tmp_path)
    held = record["metrics"]["memory"][0]["stack_at_peak"]
    assert sum(held["categories"].values()) == held["peak_bytes"]
    largest = max(held["categories"], key=held["categories"].get)
    held["categories"][largest] += 1 << 20
    said = "metrics.memory[0].stack_at_peak.peak_bytes is"
    assert any(said in line and "the sum of its categories" in line for line in edited_findings(run, record))


def test_a_training_benchmark_restated_as_a_gpus_states_no_peak_of_it(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Its peak FLOP/s is the stack's figure for the device it names: a CPU record restated as an
    H100's (env agreeing with itself) still says none."""
    run, record = own_copy(training_record, tmp_path)
    record["env"].update(device="NVIDIA H100 80GB HBM3", torch="2.11.0+cu128", cuda="12.8")
    found = edited_findings(run, record)
    assert any(
        "metrics.peak_flops is None, but env.device 'NVIDIA H100 80GB HBM3' peaks at" in f for f in found
    )


def test_a_memory_peak_relabelled_to_an_accumulation_no_leg_is_timed_at_is_named(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Each loop's peak is measured at the accumulations its legs are timed at, once each: the smoke
    preset's row at grad_accum 1 restated as 2 stands beside legs of grad_accum 1 alone."""
    run, record = own_copy(training_record, tmp_path)
    (row,) = record["metrics"]["memory"]
    assert row["grad_accum"] == 1
    row["grad_accum"] = 2
    said = "metrics.memory measures peaks at grad_accum 2, but metrics.legs are timed at 1"
    assert any(said in line for line in edited_findings(run, record))


def test_the_profiled_step_is_the_first_steady_one_and_a_cpu_profiles_no_gpu_kernel(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The step profiled is the one after the warm-up, at grad_accum 1, and on a CPU each loop's
    profile holds no GPU launch: a warm-up step restated as steady, or GPU time claimed, is named."""
    run, record = own_copy(training_record, tmp_path)
    profiles = record["metrics"]["step_profiles"]
    profiles["step"] -= 1
    profiles["stack"]["launches"] = 12
    found = edited_findings(run, record)
    assert any("metrics.step_profiles.step" in line for line in found), found
    assert any("metrics.step_profiles.stack.launches is 12, but on the CPU" in line for line in found)


def test_the_steps_no_option_sets_are_the_script_s_constants_at_its_commit(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """The warm-up a leg's tokens/s are read past and the length of a memory leg are WARMUP and
    MEMORY_STEPS of benchmarks/train_throughput.py: a memory peak claimed over more steps is named
    (the record stated as made from a clean tree, so that the commit's script decides, as in CI)."""
    run, record = own_copy(training_record, tmp_path)
    assert (record["metrics"]["warmup_steps"], record["metrics"]["memory_steps"]) == (
        throughput.WARMUP,
        throughput.MEMORY_STEPS,
    )
    record["code"]["git_dirty"] = False
    record["metrics"]["memory_steps"] += 1
    said = f"metrics.memory_steps is {throughput.MEMORY_STEPS + 1}, but benchmarks/train_throughput.py runs"
    assert any(said in line for line in edited_findings(run, record))


def test_the_flops_a_token_are_counted_again_from_the_model_the_record_stores(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """`flops_per_token` is what a reader compares with another stack's count, and on a CPU no MFU
    is read off it: one part in a thousand more is named against the stored model's count, and the
    record as filed states the count of that model."""
    run, record = own_copy(training_record, tmp_path)
    said = "metrics.flops_per_token is"
    assert not any(said in line for line in findings(run))
    record["metrics"]["flops_per_token"] *= 1.001
    assert any(said in line and "counts" in line for line in edited_findings(run, record))


def test_the_profiled_step_of_the_stack_is_a_steady_one(tmp_path: Path) -> None:
    """In the stack's profiled step the model multiplies as often as in the plain loop's: no probe
    (GATE-TRAIN-008's reference gradient is one more backward, which its last step takes)."""
    sets = ["train.device='cpu'", "train.warmup_steps=2"]
    plain, stack = profiled_steps(prepared(tmp_path), tmp_path / "work", "smoke", sets, "cpu")
    products = [
        sum(event.count for event in clock.profiler.key_averages() if event.key == "aten::mm")
        for clock in (plain, stack)
    ]
    assert products[0] > 0 and products[1] == products[0], products


def test_a_profiled_clock_profiles_the_one_step_it_names(tmp_path: Path) -> None:
    """The profile of step 2 of three holds one optimizer step: not the step before it, not the one
    after, whose tick reads the profile."""
    clock = plain_steps(prepared(tmp_path), "smoke", ["train.device='cpu'"], 3, clock=ProfiledClock(2))
    steps = [e.count for e in clock.profiler.key_averages() if e.key.startswith("Optimizer.step#")]
    assert steps == [1] and clock.profile is not None and len(clock.step_seconds) == 3


def test_paired_loops_take_turns_and_each_is_timed_without_the_others_step(tmp_path: Path) -> None:
    """On a CPU the plain loop steps between the stack's steps: each loop takes every step asked,
    and each step's time begins after the other loop's step before it ended, so the two never
    count the same second."""
    sets = ["train.device='cpu'", "train.warmup_steps=2", "eval.every=3", "ckpt.every=3"]
    timed = timed_pair(prepared(tmp_path), tmp_path / "run", "smoke", sets, 3, torch.device("cpu"))
    (plain, _), (stack, _) = timed["plain"], timed["stack"]
    assert len(plain.step_seconds) == len(stack.step_seconds) == 3
    moments = []  # every step's start and end, in the order the two loops took their steps
    for step in range(3):
        moments += [stack.starts[step], stack.ends[step + 1], plain.starts[step], plain.ends[step + 1]]
    assert moments == sorted(moments) and min(plain.step_seconds + stack.step_seconds) > 0, moments


def test_on_a_gpu_each_loop_is_timed_in_a_run_of_its_own(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Where the timing is sequential (a GPU's), the plain loop takes all its steps before the stack's
    run starts: no plain step waits behind the stack's queued work. Run here on the CPU with the
    GPU's timing chosen, the path the CUDA records take."""
    monkeypatch.setattr(throughput, "timing", lambda _device: "sequential")
    sets = ["train.device='cpu'", "train.warmup_steps=2", "eval.every=3", "ckpt.every=3"]
    timed = timed_pair(prepared(tmp_path), tmp_path / "run", "smoke", sets, 3, torch.device("cpu"))
    (plain, plain_peak), (stack, stack_peak) = timed["plain"], timed["stack"]
    assert len(plain.step_seconds) == len(stack.step_seconds) == 3
    assert plain.ends[-1] <= stack.starts[0] and (plain_peak, stack_peak) == (None, None)


def test_the_training_benchmark_derives_every_leg_ratio_and_peak_from_its_raw_steps(
    training_record: tuple[Path, dict[str, Any]], tmp_path: Path
) -> None:
    """Each loop's tokens/s is derived from the per-step seconds stored beside it, and each ratio,
    price and the peak-memory ratio from the legs and peaks they compare, and what was live at a
    peak adds up to it: a step's seconds, a price, a peak or an owner's bytes edited alone is a
    contradiction the check names."""
    run, record = own_copy(training_record, tmp_path)
    metrics = record["metrics"]
    legs = {(leg["loop"], leg["deterministic"], leg["grad_accum"]) for leg in metrics["legs"]}
    assert legs == {(loop, on, 1) for loop in ("plain", "stack") for on in (True, False)}
    assert [row["grad_accum"] for row in metrics["memory"]] == [1]
    # What each loop held at its peak, by owner: the stack's run is made by stack/ code.
    owners = [owned["owner"] for owned in metrics["memory"][0]["stack_at_peak"]["owners"]]
    assert any(name.startswith("stack/") for name in owners), owners
    edits = {
        "metrics.legs[0].tokens_per_s": lambda m: slowed(m["legs"][0]),
        "metrics.determinism_prices[0].price": lambda m: shifted(m["determinism_prices"][0], "price"),
        "metrics.memory[0].ratio": lambda m: m["memory"][0].__setitem__("stack_peak_bytes", 1),
        "metrics.memory[0].stack_at_peak.peak_bytes": lambda m: m["memory"][0]["stack_at_peak"]["owners"][
            0
        ].__setitem__("bytes", 1),
    }
    for field, edit in edits.items():
        edited = json.loads(json.dumps(record))
        edit(edited["metrics"])
        assert any(f"{field} is" in line for line in edited_findings(run, edited)), field


def test_the_trace_benchmark_under_bf16_files_a_record_its_own_numbers_hold(tmp_path: Path) -> None:
    """`--precision bf16` times both forwards under autocast and says so, and states the model it
    timed whole (the line's vocabulary); its derived per-element cost must hold as written and fail
    once edited, and so must the model's vocabulary."""
    ledger = tmp_path / "ledger"
    command = ["benchmarks/trace_overhead.py", "--preset", "smoke", "--device", "cpu", "--vocab", "300"]
    run, record = filed([*command, "--precision", "bf16", "--repeats", "2", "--ledger", str(ledger)], ledger)
    assert record["metrics"]["precision"] == "bf16" and record["metrics"]["model"]["vocab"] == 300
    # the host's time by the tracer's own parts, each inside the traced forward it is part of
    host = record["metrics"]["host_ms"]
    assert set(host) == {"plain", "traced", *PHASES}
    assert all(0 < host[part] <= host["traced"] for part in PHASES), host
    edited = json.loads(json.dumps(record))
    edited["metrics"]["statistics_ns_per_element"] += 1 + abs(edited["metrics"]["statistics_ns_per_element"])
    assert any("statistics_ns_per_element" in line for line in edited_findings(run, edited))
    record["metrics"]["model"]["vocab"] = 50257
    said = "metrics.model.vocab is 50257, but its command line asks for 300"
    assert any(said in line for line in edited_findings(run, record))


def test_the_options_benchmark_measures_the_preset_it_is_given(tmp_path: Path) -> None:
    """`--options --preset smoke`: every model of the options matrix is the smoke preset's, shaped to
    each option (its dense row the preset itself, which the matrix does not list), filed in the
    --ledger given; the record holds as written, and a dense row restated by one parameter is caught."""
    ledger = tmp_path / "ledger"
    command = ["benchmarks/train_throughput.py", "--options", "--preset", "smoke", "--steps", "6"]
    run, record = filed([*command, "--data", str(prepared(tmp_path)), "--ledger", str(ledger)], ledger)
    assert record["metrics"]["preset"] == "smoke"
    dense = next(row for row in record["metrics"]["options"] if row["option"] == "dense")
    dense["params"] += 1
    assert any("metrics.options' dense row states" in line for line in edited_findings(run, record))


@pytest.mark.parametrize("options", [[], ["--options"]])
def test_a_data_dir_that_is_not_prepared_is_refused_in_one_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    """`--data` naming no prepared DATA_DIR: one line saying so and how to make one, exit 2, before
    anything is measured or filed, for the timed loops and for `--options` alike."""
    ledger = tmp_path / "ledger"
    argv = ["train_throughput.py", *options, "--data", str(tmp_path / "missing"), "--ledger", str(ledger)]
    monkeypatch.setattr(sys, "argv", argv)
    assert throughput_main() == 2
    said = capsys.readouterr().out
    assert said.count("\n") == 1 and "does not exist" in said and "stack prepare" in said
    assert not ledger.exists()


def test_the_model_benchmark_times_both_models_at_its_cpu_shapes_and_its_ratio_holds(tmp_path: Path) -> None:
    """`benchmarks/model_speed.py` on CPU: the stack's GPT and the hand-written reference at
    SHAPES["cpu"], a few steps each, eager (`--modes eager`: Inductor's compilation of both models
    would take three quarters of the test's time and is the same loop with `torch.compile` around
    the model). The ratio is judged against `model_vs_reference_cpu` in the record, never here (a
    speed is evidence, not an assertion); the record must hold under the check as written and fail
    once its ratio is edited."""
    ledger = tmp_path / "ledger"
    argv = ["benchmarks/model_speed.py", "--steps", "2", "--modes", "eager", "--ledger", str(ledger)]
    run, record = filed(argv, ledger)
    metrics = record["metrics"]
    assert metrics["benchmark"] == "model_vs_reference_cpu" and metrics["batch"] == 8
    assert sorted(metrics["rows"]) == ["reference_eager", "stack_eager"]
    assert metrics["ratios"] == {"eager": metrics["ratio"]}
    assert metrics["ratio"] == min(metrics["ratios"].values())
    shifted(metrics["ratios"], "eager")
    assert any("ratios" in line for line in edited_findings(run, record))


def test_the_repeatability_benchmark_compares_a_straight_run_a_repeat_and_a_resume(tmp_path: Path) -> None:
    """`benchmarks/repeatability.py` on the smoke preset, eager: C ends with SIGTERM's 143 (the
    stack's exit for a run a signal stopped after saving, which the first H100 run of it counted as
    a failure) and its resume with 0; B and C agree with A, so the record meets its goal and holds
    under the check; a run that never got its SIGTERM is named as such."""
    data, ledger, work = prepared(tmp_path), tmp_path / "ledger", tmp_path / "work"
    command = [sys.executable, "benchmarks/repeatability.py", "--data", str(data), "--preset", "smoke"]
    command += ["--set", "train.steps=8", "--stop-at", "3", "--modes", "eager"]
    command += ["--work", str(work), "--ledger", str(ledger)]
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True, check=False)
    assert done.returncode == 0, done.stderr[-2000:]
    (bench,) = [
        run for run in ledger.iterdir() if run.name.startswith("bench-repeat") and "-eager-" not in run.name
    ]
    metrics = json.loads((bench / EVIDENCE_FILE).read_text(encoding="utf-8"))["metrics"]
    (eager,) = metrics["modes"]
    assert eager["exit_codes"] == {"A": 0, "B": 0, "C": 143, "C resumed": 0}
    assert sorted(eager["runs"]) == ["A", "B", "C"]  # each filed: the checker derives both lists again
    assert 3 <= eager["stopped_at_step"] < eager["steps"] == 8
    assert (
        eager["B_differs"] == eager["C_differs"] == [] and metrics["mismatched_runs"] == 0 and metrics["met"]
    )
    assert findings(*ledger.iterdir()) == []

    assert "C exited 0, not stopped by SIGTERM" in leg_failures({"A": 0, "B": 0, "C": 0, "C resumed": 0})
    assert leg_failures({"A": 0, "B": 2, "C": 143, "C resumed": 0}) == "B exited 2"


def test_the_repeatability_benchmark_refuses_what_no_run_could_start_from(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --data that is no prepared DATA_DIR, or a --work that already exists: one line, exit 2, no
    record. Its runs would each have exited 2, and the record filed from them said four runs
    differed."""
    data, ledger = prepared(tmp_path), tmp_path / "ledger"
    taken = tmp_path / "taken"
    taken.mkdir()
    for given, said in (
        (["--data", str(tmp_path / "missing"), "--work", str(tmp_path / "work")], "does not exist"),
        (["--data", str(data), "--work", str(taken)], "already exists"),
    ):
        monkeypatch.setattr(sys, "argv", ["repeatability.py", *given, "--ledger", str(ledger)])
        assert repeatability_main() == 2
        out = capsys.readouterr().out
        assert out.count("\n") == 1 and said in out
    assert not ledger.exists() and not (tmp_path / "work").exists()


def test_each_part_of_determinism_is_priced_from_its_legs_and_an_edit_is_named(tmp_path: Path) -> None:
    """benchmarks/determinism_parts.py's record: every leg's tokens/s from its per-step seconds,
    each part's price from the every-part-on leg and the leg with that part off, and a leg's
    `repeats` from its weights' digests; a price, a rate or a repeat edited alone is named. The
    legs run in this process here (the script runs each in a fresh one)."""
    data, ledger = prepared(tmp_path), tmp_path / "ledger"
    rows = legs_table(data, "smoke", 6, "cpu", runs=2, run=run_leg)
    by_leg = {row["leg"]: row for row in rows}
    assert set(by_leg) == {"on", "off", *PARTS}
    assert by_leg["cublas_workspace"]["switches"]["cublas_workspace_config"] is None
    assert by_leg["on"]["switches"]["deterministic_algorithms"]
    assert not by_leg["off"]["switches"]["deterministic_algorithms"]
    assert all(row["repeats"] for row in rows), "CPU kernels repeat bit for bit under every leg"
    argv = ["benchmarks/determinism_parts.py", "--preset", "smoke", "--steps", "6", "--runs", "2"]
    record = new_record("benchmark", run_id("bench-determinism"), argv, device="cpu")
    record.metrics = parts_metrics(rows, "smoke", 6, 2)
    run = file_record(ledger, record).parent
    assert findings(run) == []
    recorded = json.loads((run / EVIDENCE_FILE).read_text(encoding="utf-8"))
    edits = {
        "metrics.prices.cublas_workspace": lambda m: shifted(m["prices"], "cublas_workspace"),
        "metrics.legs[1].tokens_per_s": lambda m: slowed(m["legs"][1]),
        "metrics.legs[2].repeats": lambda m: m["legs"][2]["weights"].__setitem__(1, "0" * 64),
    }
    for field, edit in edits.items():
        edited = json.loads(json.dumps(recorded))
        edit(edited["metrics"])
        assert any(f"{field} is" in line for line in edited_findings(run, edited)), field
