"""The record of an evolution-strategies run (`stack es`) from its metrics log: each step's
population, seeds, σ and batches, its self-test, and the checkpoint it ends on. The loop's rules
a step shares with training (the log read, the settler, the served batches) come from
contracts/derive/training.py.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.checkpoints import checkpoint_name
from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.benchmarks import real as _real
from contracts.derive.reports import thresholds_in_force, version_key
from contracts.derive.restated import measured_of, whole
from contracts.derive.settling import Log
from contracts.derive.training import ENDED, METRICS_LOG, read_log
from contracts.es_noise import planted_angle
from contracts.es_seeds import member_seeds, run_seeds
from contracts.es_trend import loss_trend

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# Evolution strategies (`stack es`) gained its metrics log in spec 1.7.0.
ES_LOG_SINCE = "1.7.0"


# A step's mean fitness is the population's float32 mean, never above its best (its max); the mean
# of equal fitnesses may round a unit of float32 above them, hence this relative slack.
ES_MEAN_RTOL = 1e-6


def es_step_problems(reports: Any) -> list[str]:
    """Each ES step report's mean fitness is no higher than its best (stack.es.loop: mean and max of
    the same population)."""
    problems = []
    for index, report in enumerate(reports if isinstance(reports, list) else []):
        mean, best = (
            (report.get("fitness_mean"), report.get("fitness_best")) if isinstance(report, dict) else (0, 0)
        )
        above = _real(mean) and _real(best) and mean > best
        if above and not math.isclose(mean, best, rel_tol=ES_MEAN_RTOL):
            problems.append(
                f"metrics.steps[{index}] has fitness_mean {mean} above its fitness_best {best}, "
                "the population's max"
            )
    return problems


def _es_scorings(inputs: Inputs, derived: Derivation) -> None:
    """GATE-ES-005's counts of a step's evaluations from the config: one scoring per member, each
    of batch_size windows of seq_len next-token targets (the language-model fitness, the only one
    `stack es` runs), stated and consumed alike."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    sizes = [config.get(key) for key in ("population", "batch_size", "seq_len")]
    if "GATE-ES-005" in inputs.stale or not all(whole(size) for size in sizes):
        return
    population, batch, length = sizes
    counts = {"scorings": population, "targets": population * batch * length}
    for key, value in counts.items():
        for name in (key, f"stated_{key}"):
            derived.put(("gates", "GATE-ES-005", "measured", name), value, optional=True)


def _es_selftest(inputs: Inputs, derived: Derivation) -> None:
    """GATE-ES-004's planted case and angle: a pure function of the run's seed and the gate's
    thresholds the record judged under (toy_dimension, toy_pairs, toy_sigma), the self-test written
    out in contracts.es_noise (the angle restated within the threshold)."""
    seed = (inputs.record.config if isinstance(inputs.record.config, dict) else {}).get("seed")
    thresholds = thresholds_in_force(inputs, "GATE-ES-004") or {}
    case = [thresholds.get(name) for name in ("toy_dimension", "toy_pairs", "toy_sigma")]
    if "GATE-ES-004" in inputs.stale or not whole(seed) or any(value is None for value in case):
        return
    dimension, pairs, sigma = int(case[0]), int(case[1]), float(case[2])
    measured = {
        "dimension": dimension,
        "pairs": pairs,
        "sigma": sigma,
        "angle_degrees": planted_angle(seed, dimension, pairs, sigma),
    }
    for name, value in measured.items():
        derived.put(("gates", "GATE-ES-004", "measured", name), value, optional=True)


def _es_sigma(inputs: Inputs, derived: Derivation) -> None:
    """GATE-ES-002's check sigma held every forward's perturbation scale to the config's sigma."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    if "GATE-ES-002" not in inputs.stale and "sigma" in config:
        derived.put(("gates", "GATE-ES-002", "measured", "sigma_stated"), config["sigma"], optional=True)


# ES step lines log each step's pair seeds from spec 1.30.0 (GATE-ES-002, check seeds).
ES_SEEDS_SINCE = "1.30.0"


def _es_seeds(inputs: Inputs, log: Log, derived: Derivation) -> None:
    """From spec ES_SEEDS_SINCE: every step line's `seeds` are those the run's rule gives its step
    (contracts.es_seeds, from the config's seed and population), so no seed is drawn by two steps;
    GATE-ES-002's check seeds restates the config's seed and the members of the step it judged last."""
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    seed, population = config.get("seed"), config.get("population")
    lines = [line for line in log.steps if whole(line.get("step")) and line["step"] > 0]
    if version_key(inputs.record.spec.version) < version_key(ES_SEEDS_SINCE) or not lines:
        return
    if not whole(seed, population) or population < 2:
        return
    due = run_seeds(seed, max(line["step"] for line in lines), population // 2)
    for line in lines:
        if line.get("seeds") != due[line["step"] - 1]:
            derived.problems.append(
                f"{METRICS_LOG}: step {line['step']} logs noise seeds {line.get('seeds')}, but the run's "
                f"rule (seed {seed}, contracts.es_seeds) gives that step {due[line['step'] - 1]}"
            )
    if "GATE-ES-002" in inputs.stale:
        return
    judged = measured_of(inputs.record, "GATE-ES-002").get("seeds_step")
    derived.put(("gates", "GATE-ES-002", "measured", "seeds_run_seed"), seed, optional=True)
    derived.put(("gates", "GATE-ES-002", "measured", "seeds_population"), population, optional=True)
    line = next((line for line in lines if line["step"] == judged), None)
    if line is not None and isinstance(line.get("seeds"), list):
        members = member_seeds(line["seeds"])
        derived.put(("gates", "GATE-ES-002", "measured", "member_seeds"), members, optional=True)


def _es_resumed_from(inputs: Inputs, derived: Derivation) -> int:
    """The step an ES record's run went on from (0 for a fresh start): `metrics.resumed_from`, which
    stack.es.rundir states as the last resume's `from_step` (None with no resume); its command lines
    (`metrics.resumes`, or a line without --resume in a record older than that list) decide it. A
    value that is no step is a named problem, not a crash (a path given
    as resumed_from)."""
    metrics = inputs.record.metrics
    stated, resumes = metrics.get("resumed_from"), metrics.get("resumes")
    if isinstance(resumes, list):
        last = resumes[-1] if resumes and isinstance(resumes[-1], dict) else {}
        derived.put(("metrics", "resumed_from"), last.get("from_step"))
    elif not any(str(word).split("=", 1)[0] == "--resume" for word in inputs.record.run.argv or []):
        derived.put(("metrics", "resumed_from"), None)
    if stated is None or whole(stated):
        return stated or 0
    derived.problems.append(
        f"metrics.resumed_from is {stated!r}, not a step: a run resumes from the step of a checkpoint"
    )
    return 0


# ES holds each step's batch to its planned windows from spec 1.33.0 (GATE-DATA-001).
ES_SERVED_SINCE = "1.33.0"


def _es_batches(inputs: Inputs, log: Log, derived: Derivation) -> None:
    """GATE-DATA-001's checks windows and stream in an ES run judge each step's batch as the step
    takes it, one batch a step: in a run that ended (its last step's line written), the counts of
    batches served and taken it states are its log's last step, a resume's included,
    and the last batch served is the plan's batch of that ordinal: epoch (last step − 1) // steps
    per epoch, step_in_epoch the rest (stack.data.reader.served_outcome), so a step_in_epoch of a
    batch the run never reached is found."""
    if version_key(inputs.record.spec.version) < version_key(ES_SERVED_SINCE) or not log.steps:
        return
    if inputs.record.run.status not in ENDED or "GATE-DATA-001" in inputs.stale:
        return
    for key in ("served_batches", "taken_batches"):
        derived.put(("gates", "GATE-DATA-001", "measured", key), log.last_step, optional=True)
    per_epoch = measured_of(inputs.record, "GATE-DATA-001").get("steps_per_epoch")
    if whole(per_epoch) and per_epoch > 0 and log.last_step > 0:
        epoch, index = divmod(log.last_step - 1, per_epoch)
        derived.put(("gates", "GATE-DATA-001", "measured", "epoch"), epoch, optional=True)
        derived.put(("gates", "GATE-DATA-001", "measured", "step_in_epoch"), index, optional=True)


def _es_checkpoint(inputs: Inputs, log: Log, derived: Derivation) -> None:
    """The checkpoint an ended ES run names is the one its loop saved last: the loop saves every
    save_every steps and always after the last step it took (stack.es.loop, `due` or a stop), so it
    is the checkpoint of its log's last step, GATE-CKPT-001's included (a
    checkpoint of step 25 named by a run of 3 steps)."""
    if inputs.record.checkpoint is None or inputs.record.run.status not in ENDED or not log.steps:
        return
    name = checkpoint_name(log.last_step)
    derived.put(("checkpoint", "name"), name)
    derived.put(("checkpoint", "step"), log.last_step)
    if "GATE-CKPT-001" not in inputs.stale:
        derived.put(("gates", "GATE-CKPT-001", "measured", "checkpoint"), name, optional=True)
        derived.put(("gates", "GATE-CKPT-001", "step"), log.last_step, optional=True)


def _es_trend(inputs: Inputs, log: Log, derived: Derivation) -> None:
    """GATE-ES-007's values from the log's step lines, the whole run's, as the run measured them when
    its steps ended (contracts.es_trend.loss_trend, with the window the record judged under)."""
    thresholds = thresholds_in_force(inputs, "GATE-ES-007") or {}
    window = thresholds.get("window_steps")
    if "GATE-ES-007" in inputs.stale or not whole(window):
        return
    means = [line.get("fitness_mean") for line in log.steps]
    if all(_real(mean) for mean in means):
        derived.gate("GATE-ES-007", loss_trend(means, int(window)), optional=True)


@derives("es")
def es_record(inputs: Inputs) -> Derivation:
    """An ES record's per-step reports are its log's step lines after the step it resumed from."""
    derived = Derivation()
    derived.problems += es_step_problems(inputs.record.metrics.get("steps"))
    _es_scorings(inputs, derived)
    _es_sigma(inputs, derived)
    _es_selftest(inputs, derived)
    log = read_log(inputs, derived, since=ES_LOG_SINCE)
    if log is None:
        return derived
    previous = None
    for line in log.steps:
        step = line.get("step")
        if previous is not None and step != previous + 1:
            derived.problems.append(f"{METRICS_LOG}: step {step} follows step {previous}")
        previous = step
    start = _es_resumed_from(inputs, derived)
    reports = [
        {key: value for key, value in line.items() if key != "type"}
        for line in log.steps
        if isinstance(line.get("step"), int) and line["step"] > start
    ]
    # A run halted before its first step's line holds no reports: it may leave `steps` out.
    derived.put(("metrics", "steps"), reports, optional=not reports)
    _es_seeds(inputs, log, derived)
    _es_batches(inputs, log, derived)
    _es_checkpoint(inputs, log, derived)
    _es_trend(inputs, log, derived)
    return derived
