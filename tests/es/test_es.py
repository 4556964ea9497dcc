"""`stack es`: evolution strategies from a checkpoint into a new run dir, under GATE-ES-001..004.

Falsifiers plant each bug in the stack's own code path: a fitness evaluated with autograd on, a
sampler that stops mirroring, members evaluated on one side whatever their sign, fitness left
unshaped, a fitness that scores other targets than the batch's next tokens, an Adam that steps
downhill or a step never written into the model; and the self-test's planted quadratic is where
unmirrored noise is shown to point the wrong way.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import threading
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from contracts import es_seeds
from contracts.errors import GateViolation
from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.spec import load_spec
from stack.cli import main
from stack.es import loop, noise, optimizer, population, rundir, shaping
from stack.es.noise import Member, check_pairs
from stack.es.population import InProcess, Pool, flatten, lm_fitness
from stack.es.rundir import Invocation, start
from stack.es.settings import EsSettings
from stack.model.gpt import GPT
from stack.train import checkpoint as ckpt
from stack.train.trained import load_trained
from tests.support.ledger_support import edited, findings, gate
from tests.support.processes import children
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared
from tests.support.tree_snapshot import snapshot
from tools.integrity.record_checks import check_record_truth


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model saved as a run, and a byte-tokenised DATA_DIR."""
    root = tmp_path_factory.mktemp("es")
    save_run(root / "source", tiny_model())
    return {"source": root / "source", "data": prepared(root)}


def _es(world: dict[str, Path], out: Path, *options: str) -> int:
    argv = ["es", str(world["source"]), "--data", str(world["data"]), "--out", str(out)]
    return main([*argv, "--population", "4", "--steps", "2", *options])


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


def _unmirrored(generator: torch.Generator, pairs: int) -> list[Member]:
    """The planted bug: a fresh seed for every member, all applied with +."""
    seeds = torch.randint(0, noise.SEED_BOUND, (2 * pairs,), generator=generator).tolist()
    return [Member(seed, 1) for seed in seeds]


# -- the clean path, through the real CLI ------------------------------------------------------


@pytest.mark.holds("GATE-ES-001", "GATE-ES-002", "GATE-ES-003", "GATE-ES-004", "GATE-ES-005", "GATE-ES-006")
def test_es_writes_a_run_every_reader_takes(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _es(world, out) == 0
    printed = capsys.readouterr().out
    assert "step 2: population loss mean" in printed and "wrote" in printed
    required = load_spec().required_gates("es")
    assert {gate: verdict for gate, verdict in _verdicts(out).items() if gate in required} == dict.fromkeys(
        required, "PASS"
    )
    before, after = load_trained(world["source"]).model, load_trained(out).model
    assert not torch.equal(flatten(before), flatten(after))
    assert after.lm_head.weight is after.embed.weight  # written in place: still tied
    assert main(["sample", str(out), "--tokens", "4", "--prompt", "ab"]) == 0
    # The run records its DATA_DIR, so eval finds the held-out split (it said "DATA_DIR None is gone")
    assert (
        main(["eval", str(out), "--split", "val", "--max-bytes", "2000", "--record", str(tmp_path / "e")])
        == 0
    )
    assert read_evidence(tmp_path / "e" / "metadata.json").config["data"] == str(world["data"].resolve())


@pytest.mark.holds("GATE-ES-001", "GATE-ES-002", "GATE-ES-003")
def test_a_resume_continues_bit_for_bit(world: dict[str, Path], tmp_path: Path) -> None:
    straight, halves = tmp_path / "straight", tmp_path / "halves"
    assert _es(world, straight, "--steps", "4", "--save-every", "2") == 0
    assert _es(world, halves, "--steps", "2") == 0
    assert main(["es", "--resume", str(halves), "--steps", "4"]) == 0
    for name in ("model.safetensors", "optimizer.safetensors"):
        a = load_file(str(straight / "checkpoints" / "step-0000004" / name))
        b = load_file(str(halves / "checkpoints" / "step-0000004" / name))
        assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
    states = [
        json.loads((run / "checkpoints/step-0000004/state.json").read_text()) for run in (straight, halves)
    ]
    assert states[0]["es"]["generator"] == states[1]["es"]["generator"]
    assert states[0]["reader"] == states[1]["reader"]
    record = read_evidence(halves / "metadata.json")
    assert record.metrics["resumed_from"] == 2 and [s["step"] for s in record.metrics["steps"]] == [3, 4]
    # one log for the whole run, line for line the straight run's (ES logs no wall-clock time)
    assert (halves / "metrics.jsonl").read_text() == (straight / "metrics.jsonl").read_text()
    assert check_record_truth(record, halves, load_spec()).violations == []


def test_a_resume_past_a_corrupt_newest_checkpoint_sets_it_aside_whole(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """For ES: the resume passes over the damaged step 4 and sets it aside, so its own save
    of step 4 neither replaces nor deletes it (nothing a run cannot vouch for is deleted)."""
    out = tmp_path / "out"
    assert _es(world, out, "--steps", "4", "--save-every", "2") == 0
    weights = out / "checkpoints" / "step-0000004" / "model.safetensors"
    damaged = bytearray(weights.read_bytes())
    damaged[-1] ^= 1
    weights.write_bytes(damaged)
    capsys.readouterr()
    assert main(["es", "--resume", str(out), "--steps", "4"]) == 0
    assert "set aside step-0000004 as step-0000004.set-aside" in capsys.readouterr().err
    assert (out / "checkpoints" / "step-0000004.set-aside" / "model.safetensors").read_bytes() == damaged
    assert ckpt.verify(out / "checkpoints" / "step-0000004") is None


def test_a_resumed_record_keeps_the_start_s_command_line_and_is_held_to_it(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """The resume's record keeps the line that chose the settings (`run.argv`, as a training run's
    does) and the resume's in `metrics.resumes`; so a population edited in its config, which the
    resume's own line never gives, contradicts a command line."""
    out = tmp_path / "run"
    assert _es(world, out) == 0
    assert main(["es", "--resume", str(out), "--steps", "3"]) == 0
    record = read_evidence(out / "metadata.json")
    assert record.run.argv[:3] == ["stack", "es", str(world["source"])] and "--population" in record.run.argv
    (resume,) = record.metrics["resumes"]
    assert resume["from_step"] == 2 and resume["argv"][2:] == ["--resume", str(out), "--steps", "3"]
    assert record.config["steps"] == 3 and check_record_truth(record, out, load_spec()).violations == []
    record.config["population"] = 8
    violations = check_record_truth(record, out, load_spec()).violations
    assert "config.population is 8, but its command line gives 4" in violations


_calls: list[int] = []


def _counting_reward(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """A user reward: how likely the model finds the byte 'e' after each position."""
    _calls.append(1)
    return model(batch[:, :-1])[0].log_softmax(-1)[..., ord("e")].mean()


@pytest.mark.holds("GATE-ES-001", "GATE-ES-002", "GATE-ES-005")
def test_the_api_takes_a_user_reward(world: dict[str, Path], tmp_path: Path) -> None:
    _calls.clear()
    settings = EsSettings(steps=2, population=4, sigma=0.01, lr=0.01, seed=0, batch_size=2, seq_len=16)
    invocation = Invocation(["test"], fitness=_counting_reward)
    written = start(world["source"], world["data"], tmp_path / "out", settings, invocation)
    assert written.name == "step-0000002" and len(_calls) == 2 * 4
    assert [r.step for r in invocation.reports] == [1, 2]


@pytest.mark.holds("GATE-ES-001")
def test_worker_processes_score_the_members_as_this_process_does(world: dict[str, Path]) -> None:
    model = load_trained(world["source"]).model
    theta, batch = flatten(model), torch.randint(257, (2, 17), generator=torch.Generator().manual_seed(0))
    members = noise.mirrored(torch.Generator().manual_seed(0), 3)
    here, here_grads = InProcess(model, lm_fitness).evaluate(theta, batch, members, 0.01)
    pool = Pool(model, lm_fitness, 2)
    try:
        there, there_grads = pool.evaluate(theta, batch, members, 0.01)
    finally:
        pool.close()
    assert here_grads == there_grads == 0
    assert [e.fitness for e in there] == pytest.approx([e.fitness for e in here], rel=1e-5)
    assert not any(e.grad_enabled or e.graph for e in there)


def _starting_workers() -> list[int]:
    """This process's children that run multiprocessing's spawned interpreter: from their exec on,
    while they unpickle what they were started with (which imports torch), before the executor lists
    them as started."""
    workers = []
    for pid in children(os.getpid()):
        with contextlib.suppress(OSError):
            if b"spawn_main" in Path(f"/proc/{pid}/cmdline").read_bytes():
                workers.append(pid)
    return workers


def test_a_ctrl_c_while_the_workers_start_is_theirs_to_ignore(world: dict[str, Path]) -> None:
    """SIGINT sent to each worker process the moment its interpreter runs, long before its
    initializer (a terminal's Ctrl-C reaches the whole process group at any moment): the workers
    score the members all the same. Without the signals held while they start, the first worker
    died of a KeyboardInterrupt in its imports and the evaluation never returned."""
    model = load_trained(world["source"]).model
    theta, batch = flatten(model), torch.randint(257, (2, 17), generator=torch.Generator().manual_seed(0))
    members = noise.mirrored(torch.Generator().manual_seed(0), 2)
    interrupted: set[int] = set()
    scored: list[int] = []
    pool = Pool(model, lm_fitness, 2)

    def evaluate() -> None:
        scored.append(len(pool.evaluate(theta, batch, members, 0.01)[0]))

    evaluation = threading.Thread(target=evaluate, daemon=True)  # a hung one must not hold pytest
    evaluation.start()
    deadline = time.monotonic() + 120
    while evaluation.is_alive() and len(interrupted) < 2 and time.monotonic() < deadline:
        for pid in set(_starting_workers()) - interrupted:
            os.kill(pid, signal.SIGINT)
            interrupted.add(pid)
        time.sleep(0.001)
    evaluation.join(timeout=120)
    assert not evaluation.is_alive(), "the evaluation never returned"
    pool.close()
    assert len(interrupted) == 2 and scored == [len(members)]


def test_bad_input_is_one_line_and_exit_2(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    assert _es(world, out, "--population", "5") == 2
    assert "even number" in capsys.readouterr().err
    assert _es(world, out, "--seq-len", "999") == 2
    assert main(["es", str(world["source"]), "--out", str(out)]) == 2
    assert not out.exists()
    assert _es(world, out) == 0
    assert _es(world, out) == 2
    assert "--resume" in capsys.readouterr().err
    assert main(["es", "--resume", str(out), "--steps", "1"]) == 2
    assert "it has reached step 2 and its steps are 1" in capsys.readouterr().err
    assert main(["es", "--resume", str(out), "--population", "8"]) == 2
    assert "drop --population" in capsys.readouterr().err
    assert main(["es", "--resume", str(world["source"]), "--steps", "9"]) == 2
    assert "needs an evolution-strategies run directory" in capsys.readouterr().err


def test_two_es_runs_of_one_configuration_are_one_run_to_the_check_which_says_what_to_do(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """ES computes no backward, on the CPU: two honest runs of one configuration, filed into one
    ledger, log the same steps, as one record filed twice would, and an ES record has no
    repeatability claim to tell them apart. The finding says so and what the user can do; each
    run alone holds."""
    ledger = tmp_path / "ledger"
    for out in (tmp_path / "a", tmp_path / "b"):
        assert _es(world, out, "--evidence-dir", str(ledger)) == 0
    filed = sorted(ledger.iterdir())
    assert len(filed) == 2 and all(findings(run) == [] for run in filed)
    (line,) = findings(*filed)
    assert "one run filed under two ids" in line and "a `stack es` record claims no repeatability" in line


@pytest.mark.parametrize("steps", [(), ("--steps", "2")], ids=["own-steps", "same-steps"])
def test_a_completed_run_resumed_as_it_was_is_complete_and_left_alone(
    world: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str], steps: tuple[str, ...]
) -> None:
    """A retried job that finished: `stack train --resume` (and sft, dpo, distill) ends it with exit
    0 and writes nothing; `stack es --resume` ends the same way, not with exit 2, OUT and the ledger
    untouched, naming how to train on; one step more trains."""
    out, ledger_dir = tmp_path / "out", tmp_path / "ledger"
    assert _es(world, out) == 0
    capsys.readouterr()
    before = snapshot(out)
    assert main(["es", "--resume", str(out), *steps, "--evidence-dir", str(ledger_dir)]) == 0
    err = capsys.readouterr().err
    assert "is complete at step 2 (steps=2): nothing to resume" in err
    assert "to train on, give --steps N with N above 2" in err
    assert snapshot(out) == before and not ledger_dir.exists()
    assert main(["es", "--resume", str(out), "--steps", "3"]) == 0
    assert ckpt.latest_valid(out)[0].name == "step-0000003"


# -- falsifiers --------------------------------------------------------------------------------


@pytest.mark.gate("GATE-ES-001")
def test_an_evaluation_that_records_a_graph_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(population, "graph_free", contextlib.nullcontext)  # the planted bug: autograd on
    out = tmp_path / "out"
    assert _es(world, out) == 3
    assert "GATE-ES-001" in capsys.readouterr().err
    assert _verdicts(out)["GATE-ES-001"] == "FAIL"
    assert not (out / "checkpoints").exists()


@pytest.mark.gate("GATE-ES-002")
def test_a_population_that_is_not_mirrored_fires() -> None:
    check_pairs(noise.mirrored(torch.Generator().manual_seed(0), 4), 32)  # ± pairs: holds
    with pytest.raises(GateViolation, match="GATE-ES-002"):
        check_pairs(_unmirrored(torch.Generator().manual_seed(0), 4), 32)
    doubled = [Member(m.seed, 1) for m in noise.mirrored(torch.Generator().manual_seed(0), 4)]
    with pytest.raises(GateViolation, match="GATE-ES-002"):  # the pair's seed shared, its sign lost
        check_pairs(doubled, 32)


def _copy_task(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """The planted bug: the fitness scores each window against itself, not its next tokens."""
    _, loss = model(batch[:, :-1], batch[:, :-1])
    assert loss is not None
    return -loss


def _loss_outside_the_forward(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """A variant: the cross-entropy taken from the logits, outside the model's forward."""
    logits = model(batch[:, :-1])[0]
    return -torch.nn.functional.cross_entropy(logits.flatten(0, 1), batch[:, :-1].flatten())


def _negated(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """A variant: the loss itself, so ES climbs it (the population loss logged is then −loss)."""
    _, loss = model(batch[:, :-1], batch[:, 1:])
    assert loss is not None
    return loss


def _fires(world: dict[str, Path], out: Path, gate: str, capsys: pytest.CaptureFixture[str]) -> dict:
    """`stack es` stopped by `gate` (exit 3, the gate named, its FAIL in OUT's record): its values."""
    assert _es(world, out) == 3
    assert gate in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == gate)
    assert result.verdict.value == "FAIL"
    return result.measured  # type: ignore[return-value]


@pytest.mark.gate("GATE-ES-005")
@pytest.mark.parametrize(
    ("fitness", "disagree"),
    [
        (_copy_task, ("targets_sha256", "stated_targets_sha256")),
        (_loss_outside_the_forward, ("scorings", "stated_scorings")),
        (_negated, ("logged_loss", "forward_loss")),
    ],
    ids=["copy-task", "outside", "negated"],
)
def test_a_fitness_that_is_not_the_next_token_loss_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    fitness: object,
    disagree: tuple[str, str],
) -> None:
    """The body of the stack's language-model fitness replaced, as the mutant edited it."""
    monkeypatch.setattr(lm_fitness, "__code__", fitness.__code__)  # type: ignore[attr-defined]
    measured = _fires(world, tmp_path / "out", "GATE-ES-005", capsys)
    assert measured[disagree[0]] != measured[disagree[1]]


def _one_side(member: Member, dim: int, dtype: torch.dtype) -> torch.Tensor:
    """The planted bug: every member's weights written at +σε, whatever its sign."""
    return noise.noise(Member(member.seed, 1), dim, dtype)


@pytest.mark.gate("GATE-ES-002")
def test_members_evaluated_on_one_side_fire(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The noise list is still ± pairs (check pairs holds); the weights the forwards read are not."""
    monkeypatch.setattr(population, "noise", _one_side)  # the name the members' weights are written with
    measured = _fires(world, tmp_path / "out", "GATE-ES-002", capsys)
    assert measured["max_pair_sum"] == 0 and measured["perturbation_outliers"] > 0


@pytest.mark.gate("GATE-ES-002")
def test_members_scored_at_the_previous_member_s_weights_fire(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A variant: each member's weights written after its fitness was taken, so it scores the last."""
    written: list[torch.Tensor] = []
    real = population.write_flat

    def late(model: GPT, vector: torch.Tensor) -> None:
        if written:
            real(model, written.pop())
        written.append(vector)

    monkeypatch.setattr(population, "write_flat", late)
    _fires(world, tmp_path / "out", "GATE-ES-002", capsys)


@pytest.mark.gate("GATE-ES-002")
def test_evaluations_out_of_the_population_s_order_fire(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A variant: each member scored at its own weights, the fitness handed back in another order
    (as workers' chunks collected as they finish would be), so ĝ weights one's noise by another's."""
    real = InProcess.evaluate

    def reordered(self: InProcess, *args: object) -> tuple[list[population.Evaluation], int]:
        evaluations, grads = real(self, *args)  # type: ignore[arg-type]
        return evaluations[::-1], grads

    monkeypatch.setattr(InProcess, "evaluate", reordered)
    assert _fires(world, tmp_path / "out", "GATE-ES-002", capsys)["misplaced_members"] == 4


# -- GATE-ES-002 check seeds: each step's members are the seeds the run's rule gives that step ---------

REAL_MIRRORED = noise.mirrored


def _reseeded(_generator: torch.Generator, pairs: int) -> list[Member]:
    """Planted: the noise generator seeded afresh with the run's seed (0) at every
    step, so every step draws step 1's seeds."""
    return REAL_MIRRORED(torch.Generator().manual_seed(0), pairs)


@pytest.mark.gate("GATE-ES-002")
def test_a_generator_reseeded_every_step_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Step 1 draws its own seeds and passes; step 2 draws step 1's again: the pairs, the weights
    read and every other check within the step hold, and only the seeds the rule gives step 2
    (contracts.es_seeds) show the repeat. Exit 3 naming the gate, at step 2."""
    monkeypatch.setattr(noise, "mirrored", _reseeded)
    measured = _fires(world, tmp_path / "out", "GATE-ES-002", capsys)
    assert measured["seeds_step"] == 2 and measured["max_pair_sum"] == 0
    # The halted record is true as it stands: it reports step 1, the one line its log holds.
    record = read_evidence(tmp_path / "out" / "metadata.json")
    assert [s["step"] for s in record.metrics["steps"]] == [1]  # type: ignore[union-attr]
    assert check_record_truth(record, tmp_path / "out", load_spec()).violations == []


@pytest.mark.gate("GATE-ES-002")
def test_a_resume_that_restores_a_fresh_generator_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A resume whose generator is seeded afresh instead of restored from the checkpoint: its first
    step evaluates step 1's seeds again, where the rule gives step 3 its own."""
    out = tmp_path / "out"
    assert _es(world, out) == 0
    monkeypatch.setattr(rundir, "_decode", lambda _text: torch.Generator().manual_seed(0))
    assert main(["es", "--resume", str(out), "--steps", "3"]) == 3
    err = capsys.readouterr().err
    assert "GATE-ES-002" in err and "step 3 evaluated the members of seeds" in err, err


@pytest.mark.holds("GATE-ES-002")
def test_each_step_logs_the_seeds_the_rule_gives_it_and_the_checker_derives_them(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A clean run's step lines name the rule's seeds (contracts.es_seeds, from the config's seed),
    and its record checks clean; a step line whose seeds are step 1's, as a generator re-seeded
    every step would log them, is named by the checker from the config alone."""
    out = tmp_path / "out"
    assert _es(world, out, "--steps", "3", "--seed", "5") == 0
    lines = [json.loads(line) for line in (out / "metrics.jsonl").read_text().splitlines()]
    assert [line["seeds"] for line in lines] == es_seeds.run_seeds(5, 3, 2)
    record = read_evidence(out / "metadata.json")
    assert check_record_truth(record, out, load_spec()).violations == []
    lines[2]["seeds"] = lines[0]["seeds"]
    (out / "metrics.jsonl").write_text("".join(json.dumps(line) + "\n" for line in lines))
    violations = check_record_truth(record, out, load_spec()).violations
    assert any("step 3 logs noise seeds" in v and "contracts.es_seeds" in v for v in violations), violations


@pytest.mark.gate("GATE-ES-002")
def test_seeds_off_the_rule_or_repeated_fire_and_the_rule_s_own_hold() -> None:
    """The judge's check seeds on its own: step 2's members at the rule's seeds hold; at step 1's
    seeds, or with one member's seed changed, they fire."""
    due = es_seeds.run_seeds(7, 2, 2)
    seeds = {"seeds_run_seed": 7, "seeds_population": 4, "seeds_step": 2}
    assert measure("GATE-ES-002", {**seeds, "member_seeds": es_seeds.member_seeds(due[1])}).ok
    repeated = measure("GATE-ES-002", {**seeds, "member_seeds": es_seeds.member_seeds(due[0])})
    assert not repeated.ok and "that an earlier step of the run drew" in str(repeated.message)
    moved = es_seeds.member_seeds(due[1])
    moved[3] += 1
    assert not measure("GATE-ES-002", {**seeds, "member_seeds": moved}).ok
    more = es_seeds.member_seeds(es_seeds.run_seeds(7, 2, 4)[1])  # twice the population's pairs
    assert not measure("GATE-ES-002", {**seeds, "member_seeds": more}).ok


@pytest.mark.gate("GATE-ES-006")
def test_an_adam_that_steps_downhill_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The planted bug: Adam's step subtracted from θ (its moments as they should be)."""
    real = optimizer.EsAdam.ascend

    def descend(self: optimizer.EsAdam, gradient: torch.Tensor) -> None:
        before = self.theta.clone()
        real(self, gradient)
        self.theta.copy_(before - (self.theta - before))

    monkeypatch.setattr(optimizer.EsAdam, "ascend", descend)
    measured = _fires(world, tmp_path / "out", "GATE-ES-006", capsys)
    assert measured["update_worst"] == "θ weights" and measured["update_error"] > 1
    assert not (tmp_path / "out" / "checkpoints").exists()
    # The halted record is true as it stands: halted before its first step's line, it reports no
    # steps, and the checker derives none from its artifacts either.
    record = read_evidence(tmp_path / "out" / "metadata.json")
    assert "steps" not in record.metrics
    assert check_record_truth(record, tmp_path / "out", load_spec()).violations == []


@pytest.mark.gate("GATE-ES-006")
def test_a_step_never_written_into_the_model_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A variant: θ stepped but not written, so the model (and its checkpoint) keeps the last member."""
    monkeypatch.setattr(loop, "write_flat", lambda model, vector: None)
    _fires(world, tmp_path / "out", "GATE-ES-006", capsys)


@pytest.mark.gate("GATE-ES-006")
def test_an_update_error_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    limit = load_spec().threshold("GATE-ES-006", "update_rtol")
    step = {"update_worst": "θ weights", "updated_parameters": 1, "optimizer_steps": 1}
    assert not measure("GATE-ES-006", {**step, "update_error": 1.1 * limit}).ok
    assert measure("GATE-ES-006", {**step, "update_error": 0.9 * limit}).ok
    assert not measure("GATE-ES-006", {**step, "update_error": 0.0, "optimizer_steps": 2}).ok


@pytest.mark.gate("GATE-ES-003")
def test_unshaped_fitness_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(shaping, "centered_ranks", lambda fitness: fitness)  # the planted bug: raw fitness
    out = tmp_path / "out"
    assert _es(world, out) == 3
    assert "GATE-ES-003" in capsys.readouterr().err
    assert _verdicts(out)["GATE-ES-003"] == "FAIL"


@pytest.mark.gate("GATE-ES-003")
def test_a_weight_sum_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    limit = load_spec().threshold("GATE-ES-003", "max_abs_weight_sum")
    assert not measure("GATE-ES-003", {"population": 8, "weight_sum": -1.1 * limit}).ok
    assert measure("GATE-ES-003", {"population": 8, "weight_sum": 0.9 * limit}).ok


@pytest.mark.gate("GATE-ES-004")
def test_unmirrored_noise_on_the_planted_quadratic_fires(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setattr(noise, "mirrored", _unmirrored)
    out = tmp_path / "out"
    assert _es(world, out) == 3
    assert "GATE-ES-004" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-ES-004")
    limit = load_spec().threshold("GATE-ES-004", "max_angle_degrees")
    assert result.verdict.value == "FAIL" and result.measured["angle_degrees"] > limit  # type: ignore[index]


@pytest.mark.gate("GATE-ES-004")
def test_an_angle_just_beyond_the_limit_fires_and_just_inside_holds() -> None:
    spec = load_spec()
    case = {
        "dimension": spec.threshold("GATE-ES-004", "toy_dimension"),
        "pairs": spec.threshold("GATE-ES-004", "toy_pairs"),
        "sigma": spec.threshold("GATE-ES-004", "toy_sigma"),
    }
    limit = spec.threshold("GATE-ES-004", "max_angle_degrees")
    assert not measure("GATE-ES-004", {**case, "angle_degrees": 1.01 * limit}).ok
    assert measure("GATE-ES-004", {**case, "angle_degrees": 0.99 * limit}).ok
    assert not measure("GATE-ES-004", {**case, "pairs": 8, "angle_degrees": 1.0}).ok  # an easier case


@pytest.mark.skipif((os.cpu_count() or 1) < 2, reason="--workers 2 needs two cores")
def test_two_workers_score_a_routed_model_as_one_does(world: dict[str, Path], tmp_path: Path) -> None:
    """A mixture-of-depths model's routing threshold is a buffer, not a parameter: the workers get
    the run's model whole, so --workers 2 scores every member as --workers 1 does (workers built a
    fresh model whose threshold was 0, and the run went elsewhere with every gate passing)."""
    model = tiny_model(mod_every=1, mod_capacity=0.5)
    for block in model.layers:
        block.route_threshold.fill_(0.25)  # what a trained router's split left; a fresh one holds 0
    routed = {"source": tmp_path / "routed", "data": world["data"]}
    save_run(routed["source"], model)
    steps = {}
    for workers in (1, 2):
        out = tmp_path / f"w{workers}"
        assert _es(routed, out, "--workers", str(workers)) == 0
        steps[workers] = read_evidence(out / "metadata.json").metrics["steps"]
    for key in ("fitness_mean", "fitness_best"):
        one, two = ([s[key] for s in steps[w]] for w in (1, 2))  # type: ignore[index, union-attr]
        assert two == pytest.approx(one, rel=1e-5)


def test_workers_hold_models_of_their_own(world: dict[str, Path]) -> None:
    """Once torch.multiprocessing is imported (a data loader, an export, pytest's own plugins may),
    a tensor handed to a worker travels as shared memory: a model handed over as a module is one
    model shared by every worker and this process, each writing its members' weights into it while
    the others score (± members come out alike, and this process's weights change)."""
    import torch.multiprocessing  # registers the shared-memory reductions

    model = load_trained(world["source"]).model
    before = [p.detach().clone() for p in model.parameters()]
    theta, batch = flatten(model), torch.randint(257, (2, 17), generator=torch.Generator().manual_seed(0))
    members = noise.mirrored(torch.Generator().manual_seed(0), 4)
    pool = Pool(model, lm_fitness, 2)
    try:
        there, _ = pool.evaluate(theta, batch, members, 0.05)
    finally:
        pool.close()
    assert all(torch.equal(a, b) for a, b in zip(before, model.parameters(), strict=True))
    here, _ = InProcess(model, lm_fitness).evaluate(theta, batch, members, 0.05)
    assert [e.fitness for e in there] == pytest.approx([e.fitness for e in here], rel=1e-5)


@pytest.mark.holds("GATE-ES-002")
def test_weights_that_nearly_cancel_the_perturbation_are_read_within_rounding() -> None:
    """Where θ is about −σ·ε, θ + σ·ε is far finer than σ·ε, and σ's own rounding to float32 shows
    beside the product's: an honest write is still no outlier (one spacing of the perturbation
    fired on 368 elements of the demo model at σ 0.001)."""
    member, sigma = Member(seed=11, sign=-1), 0.001
    layer = torch.nn.Linear(256, 256, bias=False)
    epsilon = noise.noise(member, layer.weight.numel(), torch.float32)
    jitter = 1 + 1e-3 * torch.randn(epsilon.shape, generator=torch.Generator().manual_seed(0))
    theta = -(sigma * epsilon) * jitter
    population.write_flat(layer, theta + sigma * epsilon)  # the write the population makes
    reads = population.Reads(theta, member, sigma)
    reads(layer, ())
    assert reads.forwards == 1 and reads.outliers == 0
    assert reads.error < 1e-5


# -- the σ the members were perturbed by, measured from the weights read (GATE-ES-002 rev 4) ------


def _default_sigma(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the step hands its evaluator EsSettings.sigma, the default, whatever --sigma
    said (the estimate still divides by the stated σ)."""
    for evaluator in (InProcess, Pool):
        real = evaluator.evaluate

        def planted(
            self: object,
            theta: torch.Tensor,
            batch: torch.Tensor,
            members: list,
            _sigma: float,
            real: object = real,
        ) -> object:
            return real(self, theta, batch, members, EsSettings.sigma)  # type: ignore[operator]

        monkeypatch.setattr(evaluator, "evaluate", planted)


@pytest.mark.gate("GATE-ES-002")
def test_members_perturbed_at_the_default_sigma_not_the_stated_one_fire(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The weights each forward read moved by the default σ along its member's noise; the record
    states 0.05: exit 3 naming GATE-ES-002, though check applied (σ taken from the call) holds."""
    _default_sigma(monkeypatch)
    out = tmp_path / "out"
    assert _es(world, out, "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--sigma", "0.05") == 3
    assert "GATE-ES-002" in capsys.readouterr().err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-ES-002")
    assert result.verdict.value == "FAIL" and result.measured["perturbation_outliers"] == 0
    assert "the record states σ 0.05" in str(result.message)


@pytest.mark.holds("GATE-ES-002")
@pytest.mark.gate("GATE-ES-002")
def test_the_stated_sigma_holds_a_sigma_beyond_sigma_rtol_fires_and_the_checker_holds_it_to_the_config(
    world: dict[str, Path], tmp_path: Path
) -> None:
    """A clean --sigma 0.05 run reads every forward's σ within sigma_rtol of 0.05; one σ just inside
    holds, just beyond fires; a record whose stated σ is edited (with the σ read) is named by the
    checker against its config."""
    out = tmp_path / "out"
    assert _es(world, out, "--steps", "3", "--batch-size", "2", "--seq-len", "16", "--sigma", "0.05") == 0
    record = read_evidence(out / "metadata.json")
    result = next(g for g in record.gates if g.id == "GATE-ES-002")
    measured = dict(result.measured)
    assert (
        result.verdict.value == "PASS"
        and measured["sigma_stated"] == 0.05
        and len(measured["sigma_read"]) == 4
    )
    rtol = load_spec().threshold("GATE-ES-002", "sigma_rtol")
    for factor, fires in ((0.5, False), (2.0, True)):
        checked = {**measured, "sigma_read": [*measured["sigma_read"][1:], 0.05 * (1 + factor * rtol)]}
        assert (not measure("GATE-ES-002", checked).ok) is fires
    assert findings(out) == []

    def forged(data: dict, _dir: Path) -> None:  # stated and read alike: the judge passes
        measured = gate(data, "GATE-ES-002")["measured"]
        measured["sigma_stated"], measured["sigma_read"] = 0.01, [0.01] * 4

    found = findings(edited(out, forged))
    assert any("sigma_stated is 0.01, but its artifacts derive 0.05" in f for f in found), found
