"""A training record from its metrics log and config: every line of metrics.jsonl, every gate it decides.

One loop writes every training kind's log (train, finetune, sft, dpo, distill), one typed JSON
line per optimizer step, evaluation, sample and event. Replaying that log through the same
rules the loop applies, in the same order, gives what the record must say:

* the summary (`metrics.step`, the held-out losses, the coherence scores, the loss spikes, where
  overfitting was first seen, the phase switches, the token counts behind GATE-DATA-004);
* each gate the log decides, as the run's ledger would have settled it (`contracts.ledger.settle`):
  GATE-TRAIN-001 (every step line complete, none skipped), TRAIN-003 (finite loss and gradient
  norm), TRAIN-004 (the first loss), TRAIN-006 (spikes against the trailing window), TRAIN-005
  (the coherence streak, and that sampling ran), EVAL-004 (held-out loss rising while train loss
  falls), and the parts of TRAIN-002 (warmup, the clipped norm), TRAIN-008 (each step's logged
  rate against the schedule of the config) and EVAL-002 (the standard error of each evaluation,
  the early-stopping decisions) that the log holds.

The rules here are the loop's own: stack/train imports `STEP_FIELDS`, `window_stats`,
`diverging`, `improves` and `COHERENCE_SHOWN` from this module, so the run and the check cannot
drift apart. A gate that halted the run at a step whose line was never written is left to its
record (its values are the first evidence of that step). The records of an evolution-strategies
run and of a lens's training read their logs with the same rules, in contracts/derive/es.py and
contracts/derive/lens_train.py.
"""

from __future__ import annotations

import json
import math
import tomllib
from collections import deque
from collections.abc import Collection, Mapping
from typing import Any

from contracts.checkpoint_layout import model_file_bytes, optimizer_file_bytes
from contracts.checkpoints import BestSoFar, best_checkpoint_of, checkpoint_name
from contracts.coherence import coherence_score, sample_score
from contracts.curriculum import phase_at
from contracts.derive.base import Derivation, Deriver, Inputs, registrar, same
from contracts.derive.benchmarks import real as _real
from contracts.derive.invocations import invocation_problems
from contracts.derive.reports import thresholds_in_force, version_key
from contracts.derive.restated import (
    SHARES_LOGGED,
    changed_by_resumes,
    measured_of,
    restate,
    restated_settings,
    touched_matrices,
    whole,
)
from contracts.derive.settling import Log, Settler
from contracts.evidence import RunStatus, Verdict
from contracts.gate_counts import isolation_positions, pad_appended, teacher_forwards_at_least
from contracts.heldout import heldout_set_batches, heldout_set_shape
from contracts.judges import judge
from contracts.judges.eval import heldout_precise
from contracts.model_parameters import lora_touched
from contracts.model_shape import lora_parameters, matrix_share, param_count
from contracts.process_group import process_group_backend
from contracts.replay import REPLAY_GATE, replay_plan
from contracts.schedule import SCHEDULE_KEYS, scheduled

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds

METRICS_LOG = "metrics.jsonl"
CONFIG_FILE = "config.toml"
# The run kinds of the one training loop: their records cite its metrics log and config.
LOOP_KINDS = ("train", "finetune", "sft", "dpo", "distill")
# The revision of GATE-EVAL-002 that brought its check asked (`asked_batches`).
ASKED_SINCE = 5
# The revision of GATE-EVAL-001 from which early stopping judges only a precise held-out loss (noise).
NOISE_SINCE = 6
# The revision of GATE-EVAL-001 from which a set that lands on the split's copies is read one window
# a batch (contracts.heldout.heldout_set_shape, given the set's distinct windows).
COPIES_SINCE = 7
# The revision of GATE-TRAIN-007 that brought its check manifest (`stated_split_targets`).
SPLIT_TARGETS_SINCE = 6
# Fields every step line carries (GATE-TRAIN-001); later keys of a line are the loop's to add.
STEP_FIELDS = ("step", "epoch", "loss", "lr", "grad_norm", "tokens_per_s", "batch_sha256")
# The gradient norm after clipping, as the optimizer saw it (GATE-TRAIN-002's clip check).
CLIPPED_NORM = "clipped_grad_norm"
# How many of the latest coherence scores the record's summary shows.
COHERENCE_SHOWN = 20
# The log ends where a run stopped by itself: the end-of-run checks ran.
ENDED = (RunStatus.COMPLETED, RunStatus.INTERRUPTED, RunStatus.EXHAUSTED)
# The train settings a record restates under `determinism.flags` (the rest of its flags are what
# PyTorch had switched on when the first step ran, which no artifact holds).
STATED_FLAGS = ("precision", "compile", "deterministic")
# What `train.deterministic` switches, as the flags read at a run's first step must show them
# (stack/train/determinism.py sets the switches from these): on, every switch that decides which
# kernels run set for determinism, no SDPA backend without a deterministic backward, cuBLAS's
# workspace fixed; off, PyTorch's determinism checks off and the rest left as the process had them.
SWITCHES_WHEN_DETERMINISTIC = {
    True: {
        "deterministic_algorithms": True,
        "warn_only": False,
        "cudnn_deterministic": True,
        "cudnn_benchmark": False,
        "inductor_deterministic": True,
    },
    False: {"deterministic_algorithms": False, "warn_only": False},
}
# SDPA's backends by torch.backends.cuda's names (the switches a record's flags list enabled), and
# those whose backward has no deterministic mode (cuDNN's).
SDPA_BACKENDS = ("flash", "mem_efficient", "math", "cudnn")
NONDETERMINISTIC_SDPA = ("cudnn",)
# The workspace settings (CUBLAS_WORKSPACE_CONFIG) cuBLAS documents as giving reproducible results,
# the only ones PyTorch's deterministic mode accepts; the first is what the stack sets when the
# environment sets neither.
CUBLAS_REPRODUCIBLE = (":4096:8", ":16:8")
# What `train.deterministic` on sets beside SWITCHES_WHEN_DETERMINISTIC, from spec 1.51.0 on: new
# memory left unfilled (stack/train/determinism.py says why; before, PyTorch's default, filled).
UNFILLED = {"fill_uninitialized_memory": False}
UNFILLED_SINCE = "1.51.0"


def unsafe_sdpa(flags: Mapping[str, Any]) -> list[str]:
    """The SDPA backends `flags` holds enabled that have no deterministic backward."""
    return sorted(set(flags.get("sdpa_backends") or []) & set(NONDETERMINISTIC_SDPA))


def deterministic_kernels(flags: Mapping[str, Any]) -> bool:
    """Whether the switches `flags` states (as `determinism.flags` holds them) let only deterministic
    kernels run: every switch `train.deterministic` sets for it as it sets it, no SDPA backend
    without a deterministic backward, and cuBLAS's workspace fixed. The run reads this at its probes
    (GATE-TRAIN-008's gradient tolerance follows it) and the checker from the record's flags."""
    return (
        all(flags.get(key) == value for key, value in SWITCHES_WHEN_DETERMINISTIC[True].items())
        and not unsafe_sdpa(flags)
        and flags.get("cublas_workspace_config") in CUBLAS_REPRODUCIBLE
    )


# What each invocation's schedule event states of the settings its steps follow: the schedule's
# own keys, and the clip (logged from spec 1.22.0 on; before, the config's is taken).
INVOCATION_KEYS = (*SCHEDULE_KEYS, "clip_norm")
# torch.nn.utils.clip_grad_norm_ scales by clip / (norm + 1e-6) when that is below one; the norm
# measured after the clip agrees with that to float32 rounding, well inside CLIPPED_RTOL.
CLIP_EPS = 1e-6
CLIPPED_RTOL = 1e-4


def reached_steps(steps: int) -> str:
    """The stop reason of a run that ran all its steps."""
    return f"reached train.steps={steps}"


def stated_determinism(config: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """The seeds and settings a training record states of its config, under `determinism`."""
    train = config.get("train", {})
    return {"train": train.get("seed")}, {key: train.get(key) for key in STATED_FLAGS}


def clipped_norm(grad_norm: float, clip_norm: float) -> float:
    """The gradient norm after clipping to `clip_norm`, as clip_grad_norm_ leaves it."""
    return grad_norm * min(1.0, clip_norm / (grad_norm + CLIP_EPS))


def window_stats(window: Collection[float]) -> tuple[float, float]:
    """Mean and population std of a trailing window (0, 0 when empty), with exactly rounded sums."""
    if not window:
        return 0.0, 0.0
    mean = math.fsum(window) / len(window)
    return mean, math.sqrt(math.fsum((x - mean) ** 2 for x in window) / len(window))


def diverging(previous: tuple[float, float] | None, train_loss: float, heldout_loss: float) -> bool:
    """An evaluation whose held-out loss rose while its train loss fell, against the one before
    (`previous` is that evaluation's train and held-out loss)."""
    return previous is not None and heldout_loss > previous[1] and train_loss < previous[0]


def mean_and_stderr(losses: list[float]) -> tuple[float, float]:
    """Mean of per-batch held-out losses and its standard error (sample std / sqrt(n)): what an
    evaluation reports, what early stopping judges, and what the checker derives from the losses
    an evaluation line logs (GATE-EVAL-002's aggregated check holds the first two to it).

    Needs two losses at least: one batch has no spread to estimate, and an unknown error would let
    any improvement look significant.
    """
    if len(losses) < 2:
        raise ValueError(f"a standard error needs at least 2 held-out losses, got {len(losses)}")
    # Plain arithmetic rather than `statistics`: a NaN loss must come out as a NaN error, not a crash.
    n = len(losses)
    mean = math.fsum(losses) / n
    variance = math.fsum((x - mean) ** 2 for x in losses) / (n - 1)
    return mean, math.sqrt(variance) / math.sqrt(n)


def improves(best: float | None, loss: float, stderr: float, multiple: float) -> bool:
    """Whether a held-out loss beats the best one by more than `multiple` standard errors."""
    return best is None or best - loss > multiple * stderr


def finite_or_text(value: Any) -> Any:
    """A measured number as the record keeps it: non-finite floats as text (JSON has no NaN)."""
    return value if not isinstance(value, float) or math.isfinite(value) else str(value)


def overflowed(loss: Any, grad_norm: Any, loss_scale: Any) -> bool:
    """Whether a step under fp16 loss scaling (a `loss_scale`) found its gradient overflowing with
    a finite loss: the scaler skips such a step, the weights untouched, and lowers the scale."""
    values = (loss, grad_norm, loss_scale)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
        return False
    return math.isfinite(loss) and not math.isfinite(grad_norm)


def finite_measured(loss: Any, grad_norm: Any, loss_scale: Any) -> dict[str, Any]:
    """GATE-TRAIN-003's values of a step: its loss and gradient norm, and, for a step the fp16
    scaler skipped on an overflow, the loss scale it left (which must stay at least min_loss_scale)."""
    measured = {"loss": finite_or_text(loss), "grad_norm": finite_or_text(grad_norm)}
    if overflowed(loss, grad_norm, loss_scale):
        measured["loss_scale"] = loss_scale
    return measured


def read_log(inputs: Inputs, derived: Derivation, since: str = "1.0.0") -> Log | None:
    """The metrics log the record cites, every line parsed; None (and a missing artifact, cited from
    spec `since` on) without it."""
    if not inputs.artifacts.has(METRICS_LOG):
        derived.missing.append((METRICS_LOG, since))
        return None
    log = Log()
    kinds = {"step": log.steps, "eval": log.evals, "sample": log.samples, "event": log.events}
    for number, line in inputs.artifacts.lines(METRICS_LOG):
        try:
            parsed = json.loads(line)
        except ValueError:
            derived.problems.append(f"{METRICS_LOG} line {number} is not JSON")
            continue
        if not isinstance(parsed, dict):
            derived.problems.append(f"{METRICS_LOG} line {number} is not an object")
            continue
        kinds.get(str(parsed.get("type")), []).append(parsed)
        log.lines.append(parsed)
    return log


def read_config(inputs: Inputs, derived: Derivation) -> dict[str, Any]:
    """config.toml as the record must state it (the record's `config` is this file, parsed)."""
    text = inputs.artifacts.text(CONFIG_FILE)
    if text is None:
        derived.missing.append((CONFIG_FILE, "1.0.0"))
        return inputs.record.config
    try:
        config = tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        derived.problems.append(f"{CONFIG_FILE} is not valid TOML: {exc}")
        return inputs.record.config
    derived.put(("config",), config)
    return config


def _step_lines(
    log: Log, per_step: int | None, derived: Derivation
) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-TRAIN-001 per step line: complete, and following the step before it; and, where the
    line counts the tokens its batches served (from 1.18.0), those against `per_step`, the tokens
    of every step (`step_tokens`; None where neither the config nor the record says: then the
    check is not derived, and `tokens_seen` is still held to the lines' sum)."""
    outcomes, previous = [], None
    for line in log.steps:
        step = line.get("step")
        missing = [key for key in STEP_FIELDS if line.get(key) is None]
        number = step if isinstance(step, int) and not isinstance(step, bool) else -1
        measured: dict[str, Any] = {"missing": missing, "previous_step": previous, "step": number}
        if "tokens" in line and per_step is not None:
            measured |= {"served_tokens": line["tokens"], "step_tokens": per_step}
        outcomes.append((measured, number))
        if previous is not None and number != previous + 1:
            derived.problems.append(f"{METRICS_LOG}: step {number} follows step {previous}")
        previous = number
    return outcomes


def _spikes(log: Log, thresholds: Any) -> tuple[list[tuple[dict[str, Any], int | None]], list[Any]]:
    """GATE-TRAIN-006 per step: each loss against the trailing window before it (SpikeDetector's rule);
    and the steps whose loss spikes."""
    window: deque[float] = deque(maxlen=int(thresholds["spike_window_steps"]))
    outcomes = []
    for line in log.steps:
        loss = line.get("loss")
        if not isinstance(loss, int | float) or not math.isfinite(loss):
            continue  # a non-finite loss halts the run (TRAIN-003) before the detector sees it
        mean, std = window_stats(window)
        measured = {"loss": float(loss), "window_mean": mean, "window_std": std, "window_len": len(window)}
        outcomes.append((measured, line.get("step")))
        window.append(float(loss))
    spiked = [step for measured, step in outcomes if judge("GATE-TRAIN-006", measured, thresholds)]
    return outcomes, spiked


def _overfit(log: Log) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-EVAL-004 per evaluation: the streak of held-out rises under train-loss falls, and the
    losses the detector compared, which are the line's (the train loss held to the step lines by
    `_train_losses`, the held-out loss to the batches' by GATE-EVAL-002)."""
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    previous, streak = None, 0
    for line in log.evals:
        train_loss, heldout = line.get("train_loss"), line.get("heldout_loss")
        if not isinstance(train_loss, int | float) or not isinstance(heldout, int | float):
            continue
        streak = streak + 1 if diverging(previous, train_loss, heldout) else 0
        previous = (train_loss, heldout)
        outcomes.append(({"diverging_evals": streak}, line.get("step")))
        compared = {"compared_train_loss": train_loss, "compared_heldout_loss": heldout}
        reported = {"reported_train_loss": train_loss, "reported_heldout_loss": heldout}
        outcomes.append(({k: finite_or_text(v) for k, v in (compared | reported).items()}, line.get("step")))
    return outcomes


def _coherence(
    log: Log, shown: int, ended: bool, sample_every: Any
) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-TRAIN-005: the latest `shown` scores at every sample, and, once the run ended, that it sampled."""
    scores: list[float] = []
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    for line in log.samples:
        score, texts = line.get("score"), line.get("texts")
        if isinstance(score, int | float):
            scores.append(float(score))
            outcomes.append(({"recent_scores": scores[-shown:]}, line.get("step")))
            if isinstance(texts, list) and texts and all(isinstance(t, str) for t in texts):
                # The streak counts the score the line logs (recent_scores above), so that is the
                # score the monitor observed; the texts are scored again.
                again = sample_score([coherence_score(text) for text in texts])
                scored = {"texts_score": again, "observed_score": score, "logged_score": score}
                outcomes.append((scored, line.get("step")))
    if ended:
        ran = {"samples_scored": len(scores), "steps": log.last_step, "sample_every": sample_every}
        outcomes.append((ran, log.last_step))
    return outcomes


def _invocation_events(log: Log) -> list[dict[str, Any]]:
    """The log's schedule events by step: one at each invocation's start, with the settings its
    steps follow (a resume may change them)."""
    return sorted(
        (e for e in log.events if e.get("event") == "schedule" and isinstance(e.get("step"), int)),
        key=lambda e: e["step"],
    )


def _in_force(events: list[dict[str, Any]], step: int, train: dict[str, Any]) -> dict[str, Any]:
    """The train settings a step followed: the config's, over them those its invocation's schedule
    event states (the clip from spec 1.22.0 on; a log without events, the config's alone)."""
    event = next((e for e in reversed(events) if e["step"] < step), None)
    return train if event is None else {**train, **{k: v for k, v in event.items() if k in INVOCATION_KEYS}}


def _stability(log: Log, train: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """The parts of GATE-TRAIN-002 in the config and the log, as the loop judges them: each
    invocation's settings at its start, the warmup's rates, the clip, each under the settings in
    force for its step. A warmup's previous rate is its own invocation's when a resume changed
    the warmup or the peak rate (the earlier ones followed another schedule)."""
    events = _invocation_events(log)
    starts = [None] if not events else [e["step"] for e in events]
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    previous, ramp = None, None
    for line in log.steps:
        step, lr = line.get("step"), line.get("lr")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        settings = _in_force(events, step, train)
        if starts and (starts[0] is None or starts[0] < step):
            starts.pop(0)
            keys = ("clip_norm", "warmup_steps", "weight_decay")
            outcomes.append(({key: settings.get(key) for key in keys}, None))
            if ramp is not None and ramp != (settings.get("warmup_steps"), settings.get("lr")):
                previous = None
            ramp = (settings.get("warmup_steps"), settings.get("lr"))
        warmup = settings.get("warmup_steps")
        if isinstance(warmup, int) and step <= warmup:
            measured = {
                "warmup_lr": lr,
                "previous_warmup_lr": previous if step > 1 else None,
                "warmup_step": step,
                "warmup_steps": warmup,
                "peak_lr": settings.get("lr"),
            }
            outcomes.append((measured, step))
            previous = lr
        skipped = overflowed(line.get("loss"), line.get("grad_norm"), line.get("loss_scale"))
        if CLIPPED_NORM in line and not skipped:  # a step the fp16 scaler skipped clipped nothing
            outcomes.append(
                ({"post_clip_norm": line[CLIPPED_NORM], "clip_norm": settings.get("clip_norm")}, step)
            )
    if not outcomes:
        keys = ("clip_norm", "warmup_steps", "weight_decay")
        outcomes.append(({key: train.get(key) for key in keys}, None))
    return outcomes


def _schedule(log: Log, train: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-TRAIN-008's schedule check per step line: the rate it logs (read back from the
    optimizer) against the loop's own schedule under the settings in force for that step: those
    of the last "schedule" event before it (each invocation logs one; a resume may change them),
    else the config's."""
    events = _invocation_events(log)
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    for line in log.steps:
        step = line.get("step")
        if not isinstance(step, int) or isinstance(step, bool):
            continue
        settings = next((e for e in reversed(events) if e["step"] < step), train)
        if not all(_real(settings.get(k)) for k in SCHEDULE_KEYS):
            continue
        outcomes.append(({"applied_lr": line.get("lr"), "scheduled_lr": scheduled(step, settings)}, step))
    return outcomes


def _probed_gradient(log: Log, config: dict[str, Any], settler: Settler) -> None:
    """GATE-TRAIN-008's gradient check runs at the loop's probes (each invocation's first step, and
    every step that evaluates: a multiple of eval.every, and train.steps), and the record keeps the
    last probe's values. Where the log's last step is one, its `logged_grad_norm` is the norm that
    step line logs (the loop hands the line's to the check), unless a loss scale may have had the
    step skipped (fp16: a skipped step is not judged). Whether the probe let non-deterministic
    kernels run is what the record's flags, read at the first step, say. The gradient is compared
    wherever the model is not sharded (a sharded backward writes each rank's gradient shards
    itself): a record that says it was not compared has its gradient check judge nothing."""
    flags = settler.inputs.record.determinism.flags
    sharded = flags.get("world_size", 1) != 1 and config.get("train", {}).get("parallel") == "fsdp"
    restate(settler, "GATE-TRAIN-008", "gradient_compared", not sharded)
    if "deterministic_algorithms" in flags:
        restate(settler, "GATE-TRAIN-008", "deterministic_kernels", deterministic_kernels(flags))
    last = log.steps[-1] if log.steps else {}
    step, every = last.get("step"), config.get("eval", {}).get("every")
    if not (whole(step, every) and every > 0) or "loss_scale" in last:
        return
    if settler.inputs.record.determinism.flags.get("world_size", 1) != 1:
        return  # the line logs the ranks' reduced norm; the probe, its own rank's
    if (step % every == 0 or step == config.get("train", {}).get("steps")) and "grad_norm" in last:
        restate(settler, "GATE-TRAIN-008", "logged_grad_norm", finite_or_text(last["grad_norm"]))


def _clip_problems(log: Log, train: dict[str, Any]) -> list[str]:
    """Step lines whose norm after the clip is not what clipping their norm before it gives, by
    the clip in force for the step."""
    events, problems = _invocation_events(log), []
    for line in log.steps:
        norm, after, step = line.get("grad_norm"), line.get(CLIPPED_NORM), line.get("step")
        clip = _in_force(events, step, train).get("clip_norm") if isinstance(step, int) else None
        if not isinstance(clip, int | float) or clip <= 0:
            continue
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in (norm, after)):
            continue
        expected = clipped_norm(norm, clip)
        if not math.isclose(after, expected, rel_tol=CLIPPED_RTOL):
            problems.append(
                f"{METRICS_LOG}: step {line.get('step')} logs grad_norm {norm:.6g} and {CLIPPED_NORM} "
                f"{after:.6g}, but clipping {norm:.6g} to {clip} leaves {expected:.6g}"
            )
    return problems


def _switches(inputs: Inputs, deterministic: Any, derived: Derivation) -> None:
    """The switches the first step ran under, against what `train.deterministic` sets. Records from
    before the stack read them at the first step hold no `deterministic_algorithms`: not compared."""
    flags = inputs.record.determinism.flags
    if not isinstance(deterministic, bool) or "deterministic_algorithms" not in flags:
        return
    for key, value in SWITCHES_WHEN_DETERMINISTIC[deterministic].items():
        derived.put(("determinism", "flags", key), value)
    named = flags.get("sdpa_backends")
    if not (isinstance(named, list) and set(named) <= set(SDPA_BACKENDS)):
        derived.problems.append(
            f"determinism.flags.sdpa_backends is {named!r}, not a list of SDPA's backends "
            f"{list(SDPA_BACKENDS)}"
        )
    if not deterministic:
        return
    if unsafe := unsafe_sdpa(flags):
        derived.problems.append(
            f"determinism.flags.sdpa_backends holds {', '.join(unsafe)}, which has no deterministic "
            "backward, under train.deterministic"
        )
    if (workspace := flags.get("cublas_workspace_config")) not in CUBLAS_REPRODUCIBLE:
        derived.problems.append(
            f"determinism.flags.cublas_workspace_config is {workspace!r} under train.deterministic, not "
            f"one of cuBLAS's reproducible settings {', '.join(CUBLAS_REPRODUCIBLE)}: cuBLAS was free to "
            "pick a non-deterministic reduction"
        )
    for key, value in UNFILLED.items():
        derived.put(("determinism", "flags", key), value, since=UNFILLED_SINCE)


def _checkpoints(inputs: Inputs, log: Log, settler: Settler) -> None:
    """The last checkpoint the log wrote is the one the record names, GATE-CKPT-001 checked and
    GATE-CKPT-002 verified, every one of its files."""
    written = [e for e in log.events if e.get("event") == "checkpoint"]
    record, derived = inputs.record, settler.derived
    derived.problems += [
        f"{METRICS_LOG}: the checkpoint written at step {e.get('step')} is logged as {e.get('path')!r}, "
        f"but a checkpoint of that step is {checkpoint_name(e['step'])!r}"
        for e in written
        if whole(e.get("step")) and e.get("path") != checkpoint_name(e["step"])
    ]
    fold = BestSoFar()
    for line in log.lines:
        fold.take(line)
    restate(settler, "GATE-CKPT-002", "best_checkpoint", fold.best)
    keep_last = (
        (record.config.get("ckpt") or {}).get("keep_last") if isinstance(record.config, dict) else None
    )
    if whole(keep_last) and keep_last > 0:
        restate(settler, "GATE-CKPT-002", "expected_checkpoints", fold.kept(keep_last))
    if not written or record.checkpoint is None or record.run.status not in ENDED:
        return
    last = written[-1]
    derived.put(("checkpoint", "name"), last.get("path"))
    derived.put(("checkpoint", "step"), last.get("step"))
    if settler.wanted("GATE-CKPT-001"):
        derived.gate("GATE-CKPT-001", {"checkpoint": last.get("path")}, optional=True)
        derived.put(("gates", "GATE-CKPT-001", "step"), last.get("step"), optional=True)
    if settler.wanted("GATE-CKPT-002"):
        verified = {"checkpoint": last.get("path"), "files_verified": len(record.checkpoint.files)}
        derived.gate("GATE-CKPT-002", verified, optional=True)


def _stated(inputs: Inputs, log: Log, config: dict[str, Any], derived: Derivation) -> None:
    """What the record restates of its config (seeds, settings, the switches they set) and, for a
    run that ran all its steps, its stop reason."""
    seeds, flags = stated_determinism(config)
    derived.put(("determinism", "seeds"), seeds)
    for key, value in flags.items():
        derived.put(("determinism", "flags", key), value, optional=True)
    _switches(inputs, flags["deterministic"], derived)
    world = inputs.record.determinism.flags.get("world_size", 1)
    if isinstance(world, int) and not isinstance(world, bool):  # the group its processes joined
        backend = process_group_backend(world, inputs.record.env.device)
        derived.put(("determinism", "flags", "backend"), backend, optional=True)
    steps = config.get("train", {}).get("steps")
    stopped_early = any(e.get("early_stop") is True for e in log.evals)
    if inputs.record.run.status is RunStatus.COMPLETED and not stopped_early and isinstance(steps, int):
        derived.put(("run", "stop_reason"), reached_steps(steps))
        if log.last_step != steps:
            derived.problems.append(
                f"{METRICS_LOG} ends at step {log.last_step}, but a run that completed without "
                f"stopping early ran train.steps={steps}"
            )


def _judged(
    log: Log, early_stop: bool, min_improvement: float | None
) -> tuple[list[tuple[dict[str, Any], int | None]], list[bool]]:
    """GATE-EVAL-001's check noise at every evaluation whose line logs its losses, and whether
    early stopping judged each evaluation, by the stopper's rule (stack.train.early_stop.EarlyStopper
    .judges): on while the losses' standard error is within `min_improvement`, off for the rest of
    the run from the first evaluation that is not. `min_improvement` None: a record judged before
    the rule, whose early stopping judged every evaluation it was on for."""
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    flags, off = [], not early_stop
    for line in log.evals:
        losses = line.get("heldout_losses")
        if min_improvement is not None and isinstance(losses, list) and all(_real(x) for x in losses):
            n = len(losses)
            stderr = mean_and_stderr([float(x) for x in losses])[1] if n >= 2 else math.nan
            off = off or not heldout_precise(n, stderr, min_improvement)
            measured = {"scored_losses": n, "heldout_stderr": finite_or_text(stderr), "early_stop": not off}
            outcomes.append((measured, line.get("step")))
        flags.append(not off)
    return outcomes, flags


def _early_stopping(
    log: Log,
    evaluation: dict[str, Any],
    multiple: float,
    epoch_of: Any,
    derived: Derivation,
    judged: list[bool],
) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-EVAL-002's configuration and per-evaluation standard error, and the stops the log shows,
    replayed by the stopper's rule (an improvement beats the best by `multiple` standard errors)
    over the evaluations early stopping judged (`judged`, one flag a line, from `_judged`)."""
    if not evaluation.get("early_stop"):
        return []
    patience, min_epochs = evaluation.get("patience"), evaluation.get("min_epochs")
    outcomes: list[tuple[dict[str, Any], int | None]] = [
        ({"patience": patience, "min_epochs": min_epochs}, None)
    ]
    best, without = None, 0
    for line, judging in zip(log.evals, judged, strict=True):
        if not judging:
            continue
        loss, stderr, step = line.get("heldout_loss"), line.get("heldout_stderr"), line.get("step")
        outcomes.append(({"heldout_stderr": finite_or_text(stderr)}, step))
        if not isinstance(loss, int | float) or not isinstance(stderr, int | float):
            continue
        if improves(best, loss, stderr, multiple):
            best, without = loss, 0
        else:
            without += 1
        epoch = epoch_of(step)
        due = isinstance(patience, int | float) and without >= patience
        if epoch is not None and isinstance(min_epochs, int | float):
            due = due and epoch >= min_epochs
        stopped = line.get("early_stop")
        if stopped is True and not due:
            derived.problems.append(
                f"{METRICS_LOG}: the evaluation at step {step} says early stopping fired, but the held-out "
                f"losses before it show {without} evaluation(s) without improvement (patience {patience})"
            )
        elif stopped is False and due and epoch is not None:
            derived.problems.append(
                f"{METRICS_LOG}: the evaluation at step {step} should have stopped the run ({without} "
                f"evaluation(s) without improvement, epoch {epoch:.3g}) but says it did not"
            )
    return outcomes


def _aggregated(log: Log, asked: int | None) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-EVAL-002's aggregated check at every evaluation whose line logs each batch's loss (from
    1.18.0): the losses against the set's batches, and the reported mean and standard error
    against mean_and_stderr of those losses; and, given `asked` (a record of the check asked,
    rev 5), the set's batches against the config's (contracts.heldout)."""
    outcomes: list[tuple[dict[str, Any], int | None]] = []
    for line in log.evals:
        losses = line.get("heldout_losses")
        if not isinstance(losses, list) or len(losses) < 2 or not all(_real(x) for x in losses):
            continue
        mean, stderr = mean_and_stderr([float(x) for x in losses])
        measured = {
            "set_batches": line.get("batches"),
            "averaged_losses": len(losses),
            "losses_mean": finite_or_text(mean),
            "losses_stderr": finite_or_text(stderr),
            "reported_loss": finite_or_text(line.get("heldout_loss")),
            "reported_stderr": finite_or_text(line.get("heldout_stderr")),
        }
        if asked is not None:
            measured["asked_batches"] = asked
        outcomes.append((measured, line.get("step")))
    return outcomes


def _asked_problems(log: Log, asked: int) -> list[str]:
    """Every evaluation line's set (`batches`) and the losses it logs against the held-out set the
    config asks for (eval.batches, else the spec minimum: contracts.heldout), whatever the record's
    revision: a consuming call that dropped the setting scored another set than the record states."""
    return [
        f"{METRICS_LOG}: the evaluation at step {line.get('step')} scored {line.get('batches')} held-out "
        f"batches ({len(line.get('heldout_losses') or [])} losses), but its config asks for {asked}"
        for line in log.evals
        if line.get("batches") != asked
        or (isinstance(line.get("heldout_losses"), list) and len(line["heldout_losses"]) != asked)
    ]


def _revision_of(inputs: Inputs, gate_id: str) -> int:
    """The revision of `gate_id` the record states its result under (0 where it states none)."""
    result = next((g for g in inputs.record.gates if g.id == gate_id), None)
    return result.revision if result is not None else 0


def _compared_losses(log: Log, settler: Settler) -> None:
    """GATE-EVAL-002's `compared_losses`, where the record holds it (an objective whose held-out loss
    is the forward's cross-entropy): each evaluation compares every batch's loss with its forward's,
    as many as the batches its line logs losses of."""
    counts = {len(e["heldout_losses"]) for e in log.evals if isinstance(e.get("heldout_losses"), list)}
    if len(counts) == 1:
        restate(settler, "GATE-EVAL-002", "compared_losses", counts.pop())


def _summary(log: Log, spiked: list[Any], overfit_at: int | None, derived: Derivation) -> None:
    """The record's summary fields the log decides."""
    derived.put(("metrics", "step"), log.last_step)
    losses = [e["heldout_loss"] for e in log.evals if isinstance(e.get("heldout_loss"), int | float)]
    derived.put(("metrics", "last_heldout_loss"), losses[-1] if losses else None)
    derived.put(("metrics", "best_heldout_loss"), min(losses) if losses else None)
    derived.put(("metrics", "best_checkpoint"), best_checkpoint_of(log.lines), optional=True)
    scores = [s["score"] for s in log.samples if isinstance(s.get("score"), int | float)]
    derived.put(("metrics", "coherence_scores"), scores[-COHERENCE_SHOWN:])
    derived.put(("metrics", "loss_spikes"), len(spiked), optional=True)
    derived.put(("metrics", "overfit_at_step"), overfit_at, optional=True)
    switches = [
        {"phase": e.get("phase"), "step": e.get("step")} for e in log.events if e.get("event") == "phase"
    ]
    if switches:
        derived.put(("metrics", "phase_switches"), switches)
    logged = [e.get("step") for e in log.events if e.get("event") == "loss_spike"]
    if logged != spiked:
        derived.problems.append(
            f"{METRICS_LOG}: its loss_spike events are at steps {logged}, but the losses it logs "
            f"spike at {spiked}"
        )


def _tokens(inputs: Inputs, config: dict[str, Any], last_step: int, derived: Derivation) -> Any:
    """The token counts behind GATE-DATA-004 and the epoch of a step; returns step → epoch (or None)."""
    metrics, train = inputs.record.metrics, config.get("train", {})
    seen, params, unique = (
        metrics.get("tokens_seen"),
        metrics.get("parameters"),
        metrics.get("unique_train_tokens"),
    )
    counts = (seen, params, unique, train.get("steps"))
    if last_step < 1 or not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in counts):
        return lambda _step: None
    assert isinstance(seen, int) and isinstance(params, int) and isinstance(unique, int)
    if seen % last_step:
        derived.problems.append(f"metrics.tokens_seen {seen} is not a whole number of steps of {last_step}")
        return lambda _step: None
    per_step = seen // last_step
    planned = train["steps"] * per_step
    adequacy = {"repeats": planned / unique, "tokens_per_parameter": planned / params}
    derived.put(("metrics", "planned_tokens"), planned)
    for key, value in adequacy.items():
        derived.put(("metrics", key), value)
    if "GATE-DATA-004" not in inputs.stale:
        # the start it is judged by, a checkpoint's weights for a run started (or resumed
        # from a run started) with --init-from, as GATE-TRAIN-008's check start states it
        start = "checkpoint" if inputs.record.metrics.get("init_from") else "seed"
        derived.gate("GATE-DATA-004", {**adequacy, "start_from": start})
    return lambda step: step * per_step / max(unique, 1) if isinstance(step, int) else None


def _tokens_per_step(inputs: Inputs, log: Log, config: dict[str, Any], derived: Derivation) -> int | None:
    """`metrics.tokens_seen` is the sum of the tokens the step lines say their batches served (from
    1.18.0), or else every step's batch·accum·ctx·world tokens (for each task that reads windows of
    the model's context), and, where every position is a scored target, what the step lines say
    their losses scored; returns the tokens of one step (the record's own, for a task whose windows
    are the data's)."""
    seen, last = inputs.record.metrics.get("tokens_seen"), log.last_step
    per_step = tokens_per_step(config, inputs.record.determinism.flags.get("world_size", 1))
    served = [line.get("tokens") for line in log.steps]
    counted = bool(served) and all(isinstance(n, int) and not isinstance(n, bool) for n in served)
    if counted:
        derived.put(("metrics", "tokens_seen"), sum(served))  # type: ignore[arg-type]
    if per_step is not None and last >= 1:
        if not counted:
            derived.put(("metrics", "tokens_seen"), last * per_step)
    elif isinstance(seen, int) and not isinstance(seen, bool) and last >= 1 and seen % last == 0:
        per_step = seen // last
    targets = [line.get("targets") for line in log.steps]
    scored = config.get("train", {}).get("task") in EVERY_POSITION_SCORED
    if scored and targets and all(isinstance(t, int) for t in targets) and isinstance(seen, int):
        total = sum(targets)  # type: ignore[arg-type]
        if total != seen:
            derived.problems.append(
                f"metrics.tokens_seen is {seen}, but the step lines of {METRICS_LOG} scored {total} targets"
            )
    return per_step


def _first_loss(inputs: Inputs, log: Log, config: dict[str, Any]) -> list[tuple[dict[str, Any], int | None]]:
    """GATE-TRAIN-004 at the first step, for a record that judged it (a fresh model's cross-entropy)."""
    if not log.steps or not any(g.id == "GATE-TRAIN-004" for g in inputs.record.gates):
        return []
    first = log.steps[0]
    return [({"loss": first.get("loss"), "vocab": config.get("model", {}).get("vocab")}, first.get("step"))]


def _samples(log: Log, derived: Derivation) -> None:
    """Each sample line's texts scored again by the monitor's scorer, and its score their mean (the
    loop's rule: `sample_score(scores)`, each `coherence_score(text)`)."""
    for line in log.samples:
        texts, scores, score = line.get("texts"), line.get("scores"), line.get("score")
        if not isinstance(texts, list) or not isinstance(scores, list) or len(texts) != len(scores):
            continue  # a log from before the monitor kept each prompt's text and score
        step = line.get("step")
        for index, (text, logged) in enumerate(zip(texts, scores, strict=True)):
            if isinstance(text, str) and not same(logged, coherence_score(text)):
                derived.problems.append(
                    f"{METRICS_LOG}: the sample at step {step} scores its text {index} {logged}, but the "
                    f"text scores {coherence_score(text)}"
                )
        if scores and all(_real(x) for x in scores) and not same(score, sample_score(scores)):
            derived.problems.append(
                f"{METRICS_LOG}: the sample at step {step} logs score {score}, but its scores' mean is "
                f"{sample_score(scores)}"
            )


def _cadence(inputs: Inputs, log: Log, config: dict[str, Any], derived: Derivation) -> None:
    """The evaluation and sample lines a run that ran all its steps must hold: at every step a
    multiple of `eval.every` (of `monitor.sample_every`) and at the last one, and at no other (the
    loop's rule, stack/train/loop.py). A deleted final evaluation, where the held-out loss rose,
    is a line the config says was written. Runs whose cadence or length a resume changed are left
    out: their config holds the last invocation's settings only."""
    steps = config.get("train", {}).get("steps")
    stopped_early = any(e.get("early_stop") is True for e in log.evals)
    if inputs.record.run.status is not RunStatus.COMPLETED or stopped_early or not isinstance(steps, int):
        return
    changed = changed_by_resumes(inputs.record)
    cadences = {"eval": ("eval", "every", log.evals), "sample": ("monitor", "sample_every", log.samples)}
    ran = {line.get("step") for line in log.steps}
    for kind, (section, key, lines) in cadences.items():
        every = config.get(section, {}).get(key)
        if not isinstance(every, int) or isinstance(every, bool) or every < 1:
            continue
        if changed & {f"{section}.{key}", "train.steps"}:
            continue
        due = {s for s in ran if isinstance(s, int) and (s % every == 0 or s == steps)}
        logged = {line.get("step") for line in lines}
        if missing := sorted(due - logged):
            derived.problems.append(
                f"{METRICS_LOG} has no {kind} line at step(s) {missing[:5]}, where {section}.{key}={every} "
                f"and train.steps={steps} say one was written"
            )
        if extra := sorted((s for s in logged - due if isinstance(s, int)), key=int):
            derived.problems.append(
                f"{METRICS_LOG} has {kind} line(s) at step(s) {extra[:5]}, where {section}.{key}={every} "
                f"and train.steps={steps} say none was written"
            )


def _checkpoint_cadence(inputs: Inputs, log: Log, config: dict[str, Any], derived: Derivation) -> None:
    """The checkpoint events a run that stopped by itself must hold: at every step it ran that is a
    multiple of `ckpt.every`, and at its last (every way out of the loop but a gate or a crash ends
    with a checkpoint of the last step; stack/train/loop.py). A checkpoint a signal asked for comes
    at any step, so events beyond those are not refused. Not where a resume changed ckpt.every."""
    every = config.get("ckpt", {}).get("every")
    if inputs.record.run.status not in ENDED or not whole(every) or every < 1 or not log.steps:
        return
    if "ckpt.every" in changed_by_resumes(inputs.record):
        return
    ran = {line.get("step") for line in log.steps}
    due = {s for s in ran if whole(s) and s % every == 0} | {log.last_step}
    written = {e.get("step") for e in log.events if e.get("event") == "checkpoint"}
    if missing := sorted(due - written):
        derived.problems.append(
            f"{METRICS_LOG} has no checkpoint event at step(s) {missing[:5]}, where ckpt.every={every} and "
            f"its last step {log.last_step} say one was written"
        )


def _phase_switches(inputs: Inputs, log: Log, config: dict[str, Any]) -> list[str]:
    """The `phase` events are the curriculum's switches: one at each step whose phase is not the
    step before's (contracts.curriculum.phase_at: the step after a phase's `after_step`), naming
    the phase it switched to, and at no other. Not where a resume changed the phases."""
    phases = config.get("data", {}).get("phases")
    if not isinstance(phases, list) or "data.phases" in changed_by_resumes(inputs.record):
        return []
    after_steps = [0, *(int(p.get("after_step", 0)) for p in phases if isinstance(p, dict))]
    steps = [line["step"] for line in log.steps if whole(line.get("step")) and line["step"] >= 1]
    due = [
        (phase_at(after_steps, s), s)
        for s in steps
        if phase_at(after_steps, s) != (phase_at(after_steps, s - 1) if s > 1 else 0)
    ]
    logged = [(e.get("phase"), e.get("step")) for e in log.events if e.get("event") == "phase"]
    if logged == due:
        return []
    return [
        f"{METRICS_LOG}: its phase events are at (phase, step) {logged}, but data.phases after steps "
        f"{after_steps[1:]} switch at {due}"
    ]


# float32's unit roundoff: a float32 sum or product of exact inputs is within this of the true one,
# relative to the terms.
FLOAT32_U = 2.0**-24
# A DPO step line's margin is the float32 mean of its rows' reward differences, its rewards the
# means of the rows' own: they agree to float32 roundings of the rows' rewards, whose magnitudes
# the line does not keep; within MARGIN_RTOL of (1 + |chosen| + |rejected|), some hundred
# roundings of rewards of order one, far below a margin moved on purpose.
MARGIN_RTOL = 1e-5


def kd_loss(kl: float, nll: float, alpha: float, temperature: float) -> tuple[float, float]:
    """The distillation loss of a step's terms, α·T²·kl + (1 − α)·nll, and the sum of its two
    terms' magnitudes (what its float32 roundings are relative to)."""
    soft, hard = alpha * temperature**2 * kl, (1 - alpha) * nll
    return soft + hard, abs(soft) + abs(hard)


def kd_roundings(accum: int, world: int) -> int:
    """How many float32 roundings a distillation step line's loss may lie from `kd_loss` of the
    terms it logs: five per micro-batch (α·T² and 1 − α, the two products, their sum), then the
    loss and each term averaged over the micro-batches and the ranks (one rounding each)."""
    return 5 + 2 * (accum + world)


def margin_slack(chosen: float, rejected: float) -> float:
    """How far a DPO step line's margin may lie from chosen_reward − rejected_reward (MARGIN_RTOL)."""
    return MARGIN_RTOL * (1 + abs(chosen) + abs(rejected))


def _objective_terms(log: Log, config: dict[str, Any], world: Any) -> list[str]:
    """Each step line's loss against the terms it logs, by the objective's formula: a distillation's
    loss within `kd_roundings` float32 roundings of `kd_loss` ([distill] alpha and temperature), a
    DPO step's margin within `margin_slack` of chosen − rejected reward (the mean of the rows'
    differences is the difference of their means)."""
    train, distill = config.get("train", {}), config.get("distill") or {}
    alpha, temperature, accum = distill.get("alpha"), distill.get("temperature"), train.get("grad_accum", 1)
    roundings = kd_roundings(accum if whole(accum) else 1, world if whole(world) else 1)
    problems = []
    for line in log.steps:
        kl, nll, loss = line.get("kl"), line.get("nll"), line.get("loss")
        if train.get("task") == "distill" and all(_real(v) for v in (alpha, temperature, kl, nll, loss)):
            value, scale = kd_loss(kl, nll, alpha, temperature)
            if not abs(loss - value) <= roundings * FLOAT32_U * scale:
                problems.append(
                    f"{METRICS_LOG}: step {line.get('step')} logs loss {loss}, but its kl {kl} and nll {nll} "
                    f"make α·T²·kl + (1 − α)·nll = {value:.9g} (α {alpha}, T {temperature})"
                )
        margin, chosen, rejected = line.get("margin"), line.get("chosen_reward"), line.get("rejected_reward")
        rewards = all(_real(v) for v in (margin, chosen, rejected))
        if rewards and not abs(margin - (chosen - rejected)) <= margin_slack(chosen, rejected):
            problems.append(
                f"{METRICS_LOG}: step {line.get('step')} logs margin {margin}, but its rewards make "
                f"chosen − rejected = {chosen - rejected:.9g}"
            )
        accuracy = line.get("accuracy")
        # Accuracy 1 is every pair's margin above 0, accuracy 0 every one at or below: their mean follows.
        if _real(margin) and accuracy in (0, 1) and (margin > 0) != (accuracy == 1) and margin != 0:
            problems.append(
                f"{METRICS_LOG}: step {line.get('step')} logs accuracy {accuracy} with a mean margin of "
                f"{margin}: every pair ranked {'right' if accuracy == 1 else 'wrong'} cannot average that"
            )
    return problems


def _train_losses(log: Log, every: Any, derived: Derivation) -> None:
    """Each evaluation's `train_loss` is the mean loss of the `eval.every` steps up to it (the loop's
    `recent_train_losses`, summed in step order)."""
    if not isinstance(every, int) or isinstance(every, bool) or every < 1:
        return
    losses = {line.get("step"): line.get("loss") for line in log.steps}
    for line in log.evals:
        step, logged = line.get("step"), line.get("train_loss")
        if not isinstance(step, int) or not _real(logged):
            continue
        window = [losses.get(s) for s in range(max(1, step - every + 1), step + 1)]
        if not window or not all(_real(x) for x in window):
            continue  # a step of the window is not in the log (or not finite)
        mean = sum(window) / len(window)  # type: ignore[arg-type]
        if not same(logged, mean):
            derived.problems.append(
                f"{METRICS_LOG}: the evaluation at step {step} logs train_loss {logged}, but the mean loss "
                f"of steps {max(1, step - every + 1)}..{step} is {mean}"
            )


# The tasks whose every position is a scored target: a step scores batch·accum·ctx·world of them.
EVERY_POSITION_SCORED = (None, "distill")


def window_len(config: dict[str, Any]) -> int | None:
    """Tokens of input in one of the reader's windows, where the config decides it: `train.seq_len`
    (default the model's context) for pretraining, `distill.seq_len` (default the context) for a
    distillation. None for `stack sft` and `stack dpo`, whose windows are the data's pack_len (the
    prepared data decides it), and for an incomplete config."""
    train, model = config.get("train", {}), config.get("model", {})
    task = train.get("task")
    if task is None:
        window = train.get("seq_len") or model.get("ctx")
    elif task == "distill":
        window = config.get("distill", {}).get("seq_len") or model.get("ctx")
    else:
        return None
    return window if isinstance(window, int) and not isinstance(window, bool) and window > 0 else None


def tokens_per_step(config: dict[str, Any], world: Any) -> int | None:
    """Tokens of one optimizer step over all ranks, batch·accum·window·world, for the tasks whose
    config decides the window (`window_len`); None for the others or an incomplete config."""
    train = config.get("train", {})
    shape = (train.get("batch_size"), train.get("grad_accum", 1), window_len(config), world)
    if not all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in shape):
        return None
    return math.prod(shape)  # type: ignore[arg-type]


def step_tokens(inputs: Inputs, config: dict[str, Any]) -> int | None:
    """Tokens of every optimizer step of the run: batch·accum·window·world where the config decides
    the window (`tokens_per_step`), else (sft, dpo) the run's own count, which its GATE-TRAIN-001
    states and every step line's served tokens are held to (the loop counts one for the run)."""
    per_step = tokens_per_step(config, inputs.record.determinism.flags.get("world_size", 1))
    return per_step if per_step is not None else _measured_count(inputs, "GATE-TRAIN-001", "step_tokens")


def plain_mixture(config: dict[str, Any]) -> bool:
    """Whether the run read its data as it lies: every source at weight 1, none excluded or capped,
    no floors, phases or policy (then an epoch is every window of the split)."""
    data = config.get("data", {})
    weights = data.get("weights") or {}
    return (
        all(w == 1 for w in weights.values())
        and not data.get("exclude")
        and not any(data.get(key) for key in ("caps", "floors", "phases", "policy"))
    )


def policy_driven(config: dict[str, Any]) -> bool:
    """Whether a mixture policy drives the reader (anything beyond weights and exclusions: the
    stack's `DataSection.configured`): each share it hands the reader makes a new epoch plan."""
    data = config.get("data", {})
    return any(data.get(key) is not None for key in ("caps", "floors", "phases", "policy", "bandit"))


def steady_from(inputs: Inputs, log: Log, config: dict[str, Any]) -> int | None:
    """The first step from which the reader's epoch length is the one the record states (the last
    GATE-DATA-001 measured): 1 for a mixture of fixed weights and exclusions, else the step of the
    policy's last `shares` event (the log says each share the policy hands the reader, at the step
    it is first served, from SHARES_LOGGED on); None when a resume changed the mixture (its config
    holds the last one), or a policy's shares went unlogged."""
    if any(key.startswith("data.") and key != "data.wrap" for key in changed_by_resumes(inputs.record)):
        return None
    if not policy_driven(config):
        return 1
    if version_key(inputs.record.spec.version) < version_key(SHARES_LOGGED):
        return None
    shares = [e["step"] for e in log.events if e.get("event") == "shares" and isinstance(e.get("step"), int)]
    return max(shares, default=1)


def _window_targets(inputs: Inputs, config: dict[str, Any]) -> int | float | None:
    """The targets of one of the reader's windows: `window_len` where the config decides it, else
    (sft, dpo: the data's pack_len) a step's tokens (`step_tokens`) over the windows it reads,
    batch × accum × world."""
    window = window_len(config)
    per_step = step_tokens(inputs, config)
    train, world = config.get("train", {}), inputs.record.determinism.flags.get("world_size", 1)
    shape = (train.get("batch_size"), train.get("grad_accum", 1), world)
    if window is not None or per_step is None or not all(whole(v) and v > 0 for v in shape):
        return window
    windows = math.prod(shape)  # type: ignore[arg-type]
    quotient, rest = divmod(per_step, windows)
    return quotient if rest == 0 else per_step / windows


def _epochs(inputs: Inputs, log: Log, config: dict[str, Any], per_step: int, settler: Settler) -> None:
    """GATE-DATA-001's window and steps per epoch held to the config and the epoch plan, and the
    epochs the log shows held to them.

    A window holds `_window_targets` targets, the measure of the coverage check (a larger one would
    excuse more of a shard left unread). The reader takes batch × world windows of its epoch plan
    a step, so its steps per epoch are the plan's windows over that, under any mixture. Under a
    plain mixture an epoch is every window of the split once. A window never crosses a shard's
    end, so a split of many shards holds fewer windows than ⌊unique / tokens per window⌋: the
    unique tokens bound the steps per epoch from above (⌊unique / tokens per step⌋) but do not
    decide it. What the record's steps per epoch does decide is the log (`_epoch_steps`). Without
    gradient accumulation only (its micro-batches are the reader's steps).
    """
    derived = settler.derived
    if settler.wanted("GATE-DATA-001"):
        window = _window_targets(inputs, config)
        if window is not None:
            derived.put(("gates", "GATE-DATA-001", "measured", "window_targets"), window, optional=True)
    spe = _measured_count(inputs, "GATE-DATA-001", "steps_per_epoch")
    if spe is None:
        return
    if problems := epoch_length_problems(inputs, config.get("train", {}).get("batch_size")):
        derived.problems += problems
        return
    unique = inputs.record.metrics.get("unique_train_tokens")
    if config.get("train", {}).get("grad_accum", 1) != 1:
        return
    if plain_mixture(config) and whole(unique) and per_step >= 1:
        bound = unique // per_step
        if spe > bound or spe < 1:
            derived.problems.append(
                f"gates[GATE-DATA-001].measured.steps_per_epoch is {spe}, but {unique} unique tokens hold "
                f"at most {bound} steps of {per_step} tokens (and at least 1)"
            )
            return
    start = steady_from(inputs, log, config)
    if start is not None and spe >= 1:
        _epoch_steps(log, spe, start, settler, inputs.record.run.status in ENDED)


def epoch_length_problems(inputs: Inputs, batch: Any) -> list[str]:
    """GATE-DATA-001's steps per epoch are its epoch plan's windows (its quota) over the batch × world
    windows the reader takes a step, rounded down (stack.data.reader: the rest of an epoch is not
    read), for a training run and a fitted lens alike."""
    spe = _measured_count(inputs, "GATE-DATA-001", "steps_per_epoch")
    quota = _measured_count(inputs, "GATE-DATA-001", "quota_windows")
    world = inputs.record.determinism.flags.get("world_size", 1)
    windows = batch * world if whole(batch, world) else 0
    if spe is None or quota is None or windows <= 0 or spe == quota // windows:
        return []
    return [
        f"gates[GATE-DATA-001].measured.steps_per_epoch is {spe}, but its epoch plan's {quota} windows "
        f"make {quota // windows} steps of {windows} windows"
    ]


def _epoch_steps(log: Log, spe: int, start: int, settler: Settler, ended: bool) -> None:
    """What steps per epoch `spe`, in force from step `start` on, decide of the log: the reader
    serves step s of a run as the (s − 1)-th batch of its stream, so s is in epoch ⌊(s − 1) / spe⌋,
    a `wrap` event opens each new epoch at its first step, and in a run that `ended` the last step
    is the batch whose epoch and place in it GATE-DATA-001 states (a halted run's reader served
    the batch of the step that halted it, and of one queued behind it, which no line logs).
    Before `start` a policy's shares may have made epochs of other lengths: the rule holds only
    where none ended there (no wrap before `start`, and `start` not past the stated epoch's end)."""
    derived = settler.derived
    wraps = [(e.get("step"), e.get("epoch")) for e in log.events if e.get("event") == "wrap"]
    if start - 1 > spe or any(isinstance(step, int) and step < start for step, _ in wraps):
        return
    steps = [line.get("step") for line in log.steps if isinstance(line.get("step"), int)]
    wrong = next(
        (line for line in log.steps if line.get("epoch") != (int(line.get("step", 1)) - 1) // spe), None
    )
    if wrong is not None and all(isinstance(line.get("epoch"), int) for line in log.steps):
        derived.problems.append(
            f"{METRICS_LOG}: step {wrong.get('step')} is in epoch {wrong.get('epoch')}, but the record's "
            f"{spe} steps per epoch put it in epoch {(int(wrong.get('step', 1)) - 1) // spe}"
        )
    first = steps[0] if steps else 1
    expected = [(k * spe + 1, k) for k in range(1, (log.last_step - 1) // spe + 1) if k * spe + 1 >= first]
    if wraps != expected:
        derived.problems.append(
            f"{METRICS_LOG}: its wrap events are at (step, epoch) {wraps}, but the record's {spe} steps "
            f"per epoch wrap at {expected}"
        )
    if log.steps and ended:
        epoch, index = divmod(log.last_step - 1, spe)
        restate(settler, "GATE-DATA-001", "epoch", epoch)
        restate(settler, "GATE-DATA-001", "step_in_epoch", index)


def _split_targets(inputs: Inputs, log: Log, config: dict[str, Any], derived: Derivation) -> None:
    """GATE-TRAIN-007's check manifest (from SPLIT_TARGETS_SINCE): the targets its statement names
    over every window of the train split (`stated_split_targets.train`, which the check holds to the
    manifest's supervised tokens) are what the run's first epoch scored, where that epoch read each
    train window once: a plain mixture (an epoch is every window of the split), its steps taking
    batch × world windows each with none left over (steps_per_epoch of them make plan_windows), no
    gradient accumulation, and the log holding each step of the epoch, from the run's start. A step
    line's `targets` count what the loss scored over its micro-batches and ranks. The value means the
    same under every revision since, so a stale verdict's is held to it too."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-TRAIN-007"), None)
    stated = (
        result.measured.get("stated_split_targets") if result and isinstance(result.measured, dict) else None
    )
    if result is None or result.revision < SPLIT_TARGETS_SINCE or not isinstance(stated, dict):
        return
    train, world = config.get("train", {}), inputs.record.determinism.flags.get("world_size", 1)
    spe = _measured_count(inputs, "GATE-DATA-001", "steps_per_epoch")
    plan = _measured_count(inputs, "GATE-DATA-001", "plan_windows")
    batch = train.get("batch_size")
    if (
        not whole(stated.get("train"), spe, plan, batch, world)
        or inputs.record.metrics.get("resumes")
        or not plain_mixture(config)
        or train.get("grad_accum", 1) != 1
        or spe * batch * world != plan
    ):
        return
    first = [line for line in log.steps if line.get("epoch") == 0]
    if [line.get("step") for line in first] != list(range(1, spe + 1)):
        return
    if not all(whole(line.get("targets")) for line in first):
        return
    scored = sum(line["targets"] for line in first)
    if scored != stated["train"]:
        derived.problems.append(
            f"gates[GATE-TRAIN-007].measured.stated_split_targets.train is {stated['train']}, but the {spe} "
            f"steps of the first epoch, which read every train window once, scored {scored} targets "
            f"({METRICS_LOG})"
        )


def _replay(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """GATE-CKPT-003's replay as the config plans it (contracts.replay.replay_plan of
    train.replay_steps, the device the run used and its processes): a run that planned none states
    no replayed step, no price of a replay and no repeatability; one that planned some replayed that
    many, or the steps it had where fewer (with data.wrap; at most that many without). The price
    (metrics.repeatability) names the steps GATE-CKPT-003 replayed and the kernels it held bit for
    bit (train.deterministic), and its step_seconds are the mean of tokens over tokens per second of
    the replayed steps' lines (the first of the run), rounded to 4 places as the loop records them.
    Not derived for a resumed run, whose config is its last invocation's."""
    record, derived = inputs.record, settler.derived
    train, world = config.get("train", {}), record.determinism.flags.get("world_size", 1)
    asked = train.get("replay_steps")
    if record.metrics.get("resumes") or not whole(world) or not (asked is None or whole(asked)):
        return
    planned = replay_plan(asked, record.env.device, world > 1)
    measured = measured_of(record, REPLAY_GATE)
    cost = record.metrics.get("repeatability")
    stated = {
        f"{REPLAY_GATE}'s replayed_steps": "replayed_steps" in measured,
        "metrics.repeatability": cost is not None,
        "determinism.flags.repeatable true": record.determinism.flags.get("repeatable") is True,
    }
    if planned == 0:
        if claims := [what for what, held in stated.items() if held]:
            derived.problems.append(
                f"config.toml plans no replay (train.replay_steps {asked!r} on {record.env.device}, "
                f"{world} process(es): contracts.replay.replay_plan gives 0 steps), yet the record states "
                f"{', '.join(claims)}"
            )
        return
    steps, replayed = train.get("steps"), measured.get("replayed_steps")
    if whole(steps) and config.get("data", {}).get("wrap", True) and settler.wanted(REPLAY_GATE):
        derived.put(("gates", REPLAY_GATE, "measured", "replayed_steps"), min(planned, steps), optional=True)
    elif whole(replayed) and replayed > planned:
        derived.problems.append(f"{REPLAY_GATE} replayed {replayed} steps, but config.toml plans {planned}")
    if not isinstance(cost, dict) or not whole(replayed):
        return
    derived.put(("metrics", "repeatability", "replayed_steps"), replayed)
    if isinstance(train.get("deterministic"), bool):
        derived.put(("metrics", "repeatability", "bit_for_bit"), train["deterministic"])
    lines = log.steps[:replayed]
    if len(lines) == replayed > 0 and all(
        _real(x.get("tokens")) and _real(x.get("tokens_per_s")) for x in lines
    ):
        seconds = [line["tokens"] / line["tokens_per_s"] for line in lines]
        derived.put(("metrics", "repeatability", "step_seconds"), round(sum(seconds) / len(seconds), 4))


def _measured_count(inputs: Inputs, gate_id: str, key: str) -> int | None:
    """A count a gate measured, as the record states it, or None when it has none."""
    value = measured_of(inputs.record, gate_id).get(key)
    return value if whole(value) else None


def plan_windows(inputs: Inputs, settler: Settler) -> None:
    """GATE-DATA-002's shuffle checks judge the epoch plan GATE-DATA-001's quota check counts (both
    at the plan's making): while both pass, the last plan's windows are the same for both."""
    results = {g.id: g for g in inputs.record.gates}
    quota, order = results.get("GATE-DATA-001"), results.get("GATE-DATA-002")
    planned = _measured_count(inputs, "GATE-DATA-001", "plan_windows")
    if quota is not None and order is not None and quota.verdict is order.verdict is Verdict.PASS:
        restate(settler, "GATE-DATA-002", "plan_windows", planned)


def _parameters(inputs: Inputs, config: dict[str, Any], settler: Settler) -> None:
    """`metrics.parameters`: the model's shape counted (contracts.model_shape), plus what a LoRA run's
    adapters add; the matrices LoRA touched, and the checkpoint's files that must hold them."""
    model, metrics, derived = config.get("model", {}), inputs.record.metrics, settler.derived
    try:
        base = param_count(model)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return
    lora = config.get("lora")
    parameters: int | None = base
    touched = touched_matrices(config, metrics)
    if isinstance(lora, dict):
        selection = metrics.get("lora_matrices")
        decided = lora_touched(model, lora.get("targets"))
        if decided is not None and isinstance(selection, dict):
            derived.put(("metrics", "lora_matrices", "touched"), decided)
        share = matrix_share(model, touched) if touched is not None else None
        if share is not None and isinstance(selection, dict):
            derived.put(("metrics", "lora_matrices", "parameter_share"), share)
        for gate_id in ("GATE-LORA-001", "GATE-LORA-004"):
            if touched is not None and settler.wanted(gate_id):
                derived.put(("gates", gate_id, "measured", "adapters"), len(touched), optional=True)
        added = lora_parameters(model, touched, lora.get("r")) if touched and _real(lora.get("r")) else None
        parameters = None if added is None else base + added
    if parameters is None:
        return
    derived.put(("metrics", "parameters"), parameters)
    _checkpoint_files(inputs, config, touched, derived)


def _checkpoint_files(
    inputs: Inputs, config: dict[str, Any], touched: list[str] | None, derived: Derivation
) -> None:
    """The record's checkpoint files are, byte for byte in size, what the model's shape and a LoRA
    run's adapters decide (contracts.checkpoint_layout): model.safetensors its parameters, buffers
    and adapters, optimizer.safetensors AdamW's moments and step of each tensor the optimizer steps,
    in one process or replicated (a sharded run's optimizer state is each rank's own)."""
    checkpoint, model = inputs.record.checkpoint, config.get("model", {})
    rank = (config.get("lora") or {}).get("r") if touched is not None else 0
    if checkpoint is None or not whole(rank):
        return
    held = "its model" if touched is None else f"its model with {len(touched)} rank-{rank} LoRA adapters"
    files = [("model.safetensors", model_file_bytes(model, touched or (), rank), f"the tensors of {held}")]
    world = inputs.record.determinism.flags.get("world_size", 1)
    if world == 1 or config.get("train", {}).get("parallel") != "fsdp":
        state = f"AdamW's moments and step of each tensor it steps ({held})"
        files.append(("optimizer.safetensors", optimizer_file_bytes(model, touched, rank), state))
    for name, size, what in files:
        file = checkpoint.files.get(name)
        if file is not None and size is not None and file.bytes != size:
            derived.problems.append(
                f"checkpoint {checkpoint.name}'s {name} is {file.bytes} bytes, but the safetensors file of "
                f"{what}, as config.toml gives it, is {size} bytes"
            )


def _dpo(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """GATE-DPO-004's margins and accuracies are the step lines' (the objective keeps one of each per
    step), its beta the config's; GATE-DPO-001's loss and rewards are the first step's, when that step
    shows the starting policy was the reference (both rewards exactly 0: then every batch scores
    ln 2 in float32 and every reward 0)."""
    derived = settler.derived
    if settler.wanted("GATE-DPO-004") and log.steps and all("margin" in line for line in log.steps):
        progress = {
            "margins": [line.get("margin") for line in log.steps],
            "accuracies": [line.get("accuracy") for line in log.steps],
            "beta": config.get("dpo", {}).get("beta"),
        }
        for key, value in progress.items():
            derived.put(("gates", "GATE-DPO-004", "measured", key), value, optional=True)
        if not config.get("lora"):
            parameters = derived.fields.get(("metrics", "parameters"))
            if parameters is not None:
                derived.put(
                    ("gates", "GATE-DPO-004", "measured", "trainable_parameters"), parameters, optional=True
                )
    first = log.steps[0] if log.steps else {}
    identity = (
        first.get("step") == 1 and first.get("chosen_reward") == 0 and first.get("rejected_reward") == 0
    )
    if settler.wanted("GATE-DPO-001") and identity and _real(first.get("loss")):
        start = {"loss": first["loss"], "ln2": math.log(2.0), "max_abs_reward": 0.0}
        for key, value in start.items():
            derived.put(("gates", "GATE-DPO-001", "measured", key), value, optional=True)


# The spec version from which a step line of a model with experts logs each term as defined.
DEFINED_LOGGED = "1.12.0"
# The auxiliary terms of a mixture of experts as GATE-ARCH-001 names them, the config key of each
# coefficient with its default (stack.model.config.ModelConfig), and the step line's key of each.
AUX_TERMS = {"load_balance": ("moe_balance_coef", 0.01), "router_z": ("moe_z_coef", 0.001)}


def _experts(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """GATE-ARCH-001 at the step it names is that step's logged cross-entropy and auxiliary terms
    (with the config's coefficients); GATE-ARCH-002's routed counts, judged at the same evaluation as
    GATE-ARCH-012, are the last window ARCH-012 keeps."""
    results = {g.id: g for g in inputs.record.gates}
    model, derived = config.get("model", {}), settler.derived
    objective = results.get("GATE-ARCH-001")
    if objective is not None and settler.wanted("GATE-ARCH-001") and isinstance(objective.step, int):
        line = next((s for s in log.steps if s.get("step") == objective.step), None)
        terms = (
            {
                name: {
                    "coefficient": model.get(key, default),
                    "value": line.get(f"moe_{name}"),
                    "defined": line.get(f"moe_{name}_defined"),
                }
                for name, (key, default) in AUX_TERMS.items()
            }
            if line is not None
            else {}
        )
        if line is not None and all(_real(t["value"]) for t in terms.values()):
            derived.put(("gates", "GATE-ARCH-001", "measured", "ce"), line.get("loss"), optional=True)
            for name, term in terms.items():  # field by field: the gate measures more of each term
                for field, value in term.items():
                    path = ("gates", "GATE-ARCH-001", "measured", "terms", name, field)
                    since = DEFINED_LOGGED if field == "defined" else None
                    derived.put(path, value, optional=True, since=since)
    _routing_log(inputs, log, settler)
    settler.derived.problems += routed_width_problems(log, model)
    _routed_tokens(inputs, log, config, settler)
    collapse_judged = results.get("GATE-ARCH-012")
    if (
        collapse_judged is not None
        and isinstance(collapse_judged.measured, dict)
        and settler.wanted("GATE-ARCH-012")
    ):
        routing = {"top_k": model.get("moe_top_k", 2), "balance_coef": model.get("moe_balance_coef", 0.01)}
        for key, value in routing.items():  # ModelConfig's defaults, as the loop passes them
            derived.put(("gates", "GATE-ARCH-012", "measured", key), value, optional=True)
    shares, collapse = results.get("GATE-ARCH-002"), results.get("GATE-ARCH-012")
    if shares is None or collapse is None or shares.step is None or shares.step != collapse.step:
        return
    windows = collapse.measured.get("windows") if isinstance(collapse.measured, dict) else None
    if settler.wanted("GATE-ARCH-002") and isinstance(windows, list) and windows:
        derived.put(("gates", "GATE-ARCH-002", "measured", "routed"), windows[-1], optional=True)


# The spec version from which an evaluation line of a model with experts logs its window's routing.
ROUTED_LOGGED = "1.13.0"


def _routing_log(inputs: Inputs, log: Log, settler: Settler) -> None:
    """GATE-ARCH-002's routed counts are those the evaluation line it judged logs, and GATE-ARCH-012's
    windows the last collapse_evaluations of them up to it (for a run of one invocation: a resumed
    one began with windows kept in its checkpoint). Logged from ROUTED_LOGGED on; a record of that
    spec or later whose line lacks them is compared with nothing, and differs."""
    logged = version_key(inputs.record.spec.version) >= version_key(ROUTED_LOGGED)
    evals = {e.get("step"): e for e in log.evals}
    results = {g.id: g for g in inputs.record.gates}
    shares = results.get("GATE-ARCH-002")
    if shares is not None and shares.step in evals and settler.wanted("GATE-ARCH-002"):
        routed = evals[shares.step].get("routed")
        if routed is not None or logged:
            settler.derived.put(("gates", "GATE-ARCH-002", "measured", "routed"), routed)
    collapse = results.get("GATE-ARCH-012")
    if collapse is None or collapse.step not in evals or not settler.wanted("GATE-ARCH-012"):
        return
    if inputs.record.metrics.get("resumes"):
        return
    keep = int(inputs.spec.gates["GATE-ARCH-012"].threshold_values["collapse_evaluations"])
    windows = [
        e.get("routed") for e in log.evals if isinstance(e.get("step"), int) and e["step"] <= collapse.step
    ]
    if all(w is not None for w in windows) or logged:
        settler.derived.put(("gates", "GATE-ARCH-012", "measured", "windows"), windows[-keep:])


def routed_width_problems(log: Log, model: dict[str, Any]) -> list[str]:
    """Every evaluation line's routed counts list one count per expert of each mixture layer: their
    length is the config's model.moe_experts (a record restated as 8 experts whose log
    routes to 4)."""
    experts = model.get("moe_experts")
    if not whole(experts):
        return []
    return [
        f"metrics.jsonl: the eval line at step {e.get('step')} routes {name} to {len(counts)} experts, "
        f"but config model.moe_experts is {experts}"
        for e in log.evals
        if isinstance(e.get("routed"), dict)
        for name, counts in e["routed"].items()
        if not isinstance(counts, list) or len(counts) != experts
    ]


def _routed_tokens(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """GATE-ARCH-002's and -012's check total: the tokens each MoE layer received in the window
    they judged are the window's batches (its evaluation line's `batches`) × batch × window, and
    top_k is the config's (ModelConfig's default where left out), so a window's assignments must
    add up to batches × B × T × top_k. Derived where the config decides the window (pretraining,
    distillation: `window_len`), on one process (replicas split the batches) and with every block
    dense-routed (a mixture-of-depths block hands its mixture only the tokens it routes)."""
    model, train = config.get("model", {}), config.get("train", {})
    window, batch = window_len(config), train.get("batch_size")
    one_process = inputs.record.determinism.flags.get("world_size", 1) == 1
    if not (one_process and whole(window, batch, model.get("n_layers")) and not model.get("mod_every")):
        return
    evals = {e.get("step"): e for e in log.evals}
    layers = [f"layers.{i}.moe" for i in range(model["n_layers"])]
    top_k = model.get("moe_top_k", 2)  # ModelConfig's default, as the loop passes it
    for gate_id in ("GATE-ARCH-002", "GATE-ARCH-012"):
        result = next((g for g in inputs.record.gates if g.id == gate_id), None)
        line = evals.get(result.step) if result is not None else None
        if line is None or not settler.wanted(gate_id) or not whole(line.get("batches")):
            continue
        tokens = line["batches"] * batch * window
        at = ("gates", gate_id, "measured")
        settler.derived.put((*at, "routed_tokens"), dict.fromkeys(layers, tokens), optional=True)
        settler.derived.put((*at, "top_k"), top_k, optional=True)


def _counted_by_rule(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """Counts gates state that a code rule makes of the config or of numbers stated beside them
    (contracts.gate_counts): GATE-SFT-003's positions
    compared, the second half of a window of GATE-DATA-001's window_targets tokens; GATE-DPO-003's pad tokens
    appended, the spec's probe_pad_tokens as far as the stated room allows; GATE-DATA-008's bandit
    warm-up, the config's data.bandit.warmup_steps; and GATE-KD-002's teacher forwards, at least one
    per micro-step the log shows."""
    derived = settler.derived
    judged = {g.id: g.measured for g in inputs.record.gates if isinstance(g.measured, dict)}
    width = judged.get("GATE-DATA-001", {}).get("window_targets")  # the held-out window's tokens
    if (
        "positions_compared" in judged.get("GATE-SFT-003", {})
        and settler.wanted("GATE-SFT-003")
        and whole(width)
    ):
        derived.put(("gates", "GATE-SFT-003", "measured", "positions_compared"), isolation_positions(width))
    padding, wanted = judged.get("GATE-DPO-003", {}), thresholds_in_force(inputs, "GATE-DPO-003") or {}
    room, pad = padding.get("room"), wanted.get("probe_pad_tokens")
    if "appended" in padding and settler.wanted("GATE-DPO-003") and whole(room) and pad is not None:
        derived.put(("gates", "GATE-DPO-003", "measured", "appended"), pad_appended(int(pad), room))
    bandit = config.get("data", {}).get("bandit")
    warmup = bandit.get("warmup_steps") if isinstance(bandit, dict) else None
    if (
        "wanted_warmup" in judged.get("GATE-DATA-008", {})
        and settler.wanted("GATE-DATA-008")
        and whole(warmup)
    ):
        derived.put(("gates", "GATE-DATA-008", "measured", "wanted_warmup"), warmup)
    forwards, accum = (
        judged.get("GATE-KD-002", {}).get("forwards"),
        config.get("train", {}).get("grad_accum", 1),
    )
    fewest = teacher_forwards_at_least(log.last_step, accum) if whole(accum) and log.steps else 0
    if settler.wanted("GATE-KD-002") and whole(forwards) and forwards < fewest:
        derived.problems.append(
            f"gates[GATE-KD-002].measured.forwards is {forwards}, but the teacher ran at least {fewest} "
            f"forwards: one per micro-step, {log.last_step} steps of {accum} (DistillObjective.loss)"
        )


def _stated_by_gates(inputs: Inputs, log: Log, config: dict[str, Any], settler: Settler) -> None:
    """What gates restate of the config and the log: GATE-DATA-007's model vocabulary is the config's;
    GATE-DATA-001's count of batches taken, judged on the batch of the last step, is that step (one
    batch a step, without gradient accumulation; in a run that ended: a halted run's reader may
    also have served the step that halted it and one queued behind it, which no line logs, so its
    count is held between its last logged step and two steps after), and the batch_sha256 its
    fingerprint check held to the step's planned windows is the one that step's line logs;
    GATE-TRAIN-007's targets, counted and hashed at the step it was last judged, are the ones that
    step's line logs (the probe reads the step's last micro-batch, the whole batch without
    accumulation, on one process), its logged and forward loss at that step are the loss the line
    logs (its logged check holds them equal at run time), and the precision its logits' dtypes are
    held to, as GATE-EVAL-001's, is the config's train.precision."""
    derived = settler.derived
    judged = {g.id: g.measured for g in inputs.record.gates if isinstance(g.measured, dict)}
    vocab = config.get("model", {}).get("vocab")
    if "model_vocab" in judged.get("GATE-DATA-007", {}) and settler.wanted("GATE-DATA-007"):
        derived.put(("gates", "GATE-DATA-007", "measured", "model_vocab"), vocab)
    taken = judged.get("GATE-DATA-001", {})
    one_batch = config.get("train", {}).get("grad_accum", 1) == 1
    ended = inputs.record.run.status in ENDED  # a halted run's reader served steps no line logs
    if settler.wanted("GATE-DATA-001") and one_batch and log.steps:
        for key in ("served_batches", "taken_batches"):
            if key not in taken:
                continue
            if ended:
                derived.put(("gates", "GATE-DATA-001", "measured", key), log.last_step)
            elif not (whole(taken[key]) and log.last_step <= taken[key] <= log.last_step + 2):
                derived.problems.append(
                    f"gates[GATE-DATA-001].measured.{key} is {taken[key]}, but a run halted after its "
                    f"step {log.last_step} served batches of the two steps after it at most"
                )
    fingerprinted = next((s for s in log.steps if s.get("step") == taken.get("fingerprinted_step")), None)
    if settler.wanted("GATE-DATA-001") and fingerprinted is not None and "logged_batch_sha256" in taken:
        logged = fingerprinted.get("batch_sha256")
        derived.put(("gates", "GATE-DATA-001", "measured", "logged_batch_sha256"), logged)
    result = next((g for g in inputs.record.gates if g.id == "GATE-TRAIN-007"), None)
    line = next((s for s in log.steps if result is not None and s.get("step") == result.step), None)
    # The line counts every rank's targets; the gate, one rank's micro-batch.
    one_rank = inputs.record.determinism.flags.get("world_size", 1) == 1
    if settler.wanted("GATE-TRAIN-007") and one_batch and one_rank and line is not None:
        for key in ("targets", "targets_sha256"):
            if key in judged.get("GATE-TRAIN-007", {}) and key in line:
                derived.put(("gates", "GATE-TRAIN-007", "measured", key), line[key])
    if settler.wanted("GATE-TRAIN-007") and line is not None and "loss" in line:
        for key in ("logged_loss", "forward_loss"):  # the logged check holds both to the line's loss
            if key in judged.get("GATE-TRAIN-007", {}):
                derived.put(("gates", "GATE-TRAIN-007", "measured", key), finite_or_text(line["loss"]))
    precision = config.get("train", {}).get("precision", "fp32")
    for gate_id in ("GATE-TRAIN-007", "GATE-EVAL-001"):  # the loss's and the evaluation's logits
        if settler.wanted(gate_id) and "precision" in judged.get(gate_id, {}):
            derived.put(("gates", gate_id, "measured", "precision"), precision)


def _wall_time(inputs: Inputs, log: Log, per_step: int, derived: Derivation) -> None:
    """A run lasts at least as long as its steps took: each step line's tokens_per_s is the step's
    tokens over its own time, so Σ tokens per step / tokens_per_s (over the steps of the last
    invocation, for a resumed run) fits between `run.started` and `run.finished`."""
    run = inputs.record.run
    if run.finished is None or per_step < 1:
        return
    resumes = inputs.record.metrics.get("resumes")
    after = 0
    if isinstance(resumes, list) and resumes and isinstance(resumes[-1], dict):
        after = int(resumes[-1].get("from_step") or 0)
    rates = [line.get("tokens_per_s") for line in log.steps if int(line.get("step") or 0) > after]
    if not rates or not all(_real(r) and r > 0 for r in rates):
        return
    stepping = math.fsum(per_step / r for r in rates)
    lasted = (run.finished - run.started).total_seconds()
    if lasted < stepping:
        derived.problems.append(
            f"run.finished is {lasted:.3f} s after run.started, but the steps of {METRICS_LOG} took "
            f"{stepping:.3f} s by their own tokens_per_s"
        )


def _heldout_size(inputs: Inputs, batches: Any, config: dict[str, Any], settler: Settler) -> None:
    """GATE-EVAL-001: the held-out batches every evaluation used, each of `train.batch_size` windows
    or one (contracts.heldout.heldout_set_shape), so no more distinct windows than batches × batch
    size. Each evaluation's reads are of that set: `set_batches` are its batches; and where each
    batch states one scoring of its windows, every position a target (pretraining, distillation:
    EVERY_POSITION_SCORED), the scorings its batches state are one a batch, and the distinct
    windows they state the set's distinct windows."""
    derived = settler.derived
    derived.gate("GATE-EVAL-001", {"heldout_batches": batches})
    result = next((g for g in inputs.record.gates if g.id == "GATE-EVAL-001"), None)
    measured = result.measured if result is not None and isinstance(result.measured, dict) else {}
    distinct = measured.get("distinct_windows")
    stated = {"set_batches": batches}
    if config.get("train", {}).get("task") in EVERY_POSITION_SCORED:
        stated |= {"stated_scorings": batches, "stated_windows": distinct}
    for key, value in stated.items():
        restate(settler, "GATE-EVAL-001", key, value)
    size = config.get("train", {}).get("batch_size")
    if not isinstance(size, int) or isinstance(size, bool):
        return
    windows = _split_windows(inputs)
    if isinstance(batches, int) and windows is not None:
        # one window a batch for a split smaller than the set, or a set on the split's copies
        minimum = inputs.spec.gates["GATE-EVAL-001"].threshold_values["min_heldout_batches"]
        asked = config.get("eval", {}).get("batches")
        size = heldout_set_shape(asked, minimum, windows, size, _set_distinct(inputs))[1] or size
    derived.put(("gates", "GATE-EVAL-001", "measured", "batch_size"), size, optional=True)
    if isinstance(batches, int) and _real(distinct) and distinct > batches * size:
        derived.problems.append(
            f"gates[GATE-EVAL-001].measured.distinct_windows is {distinct}, more than the {batches} held-out "
            f"batches of {size} windows hold"
        )


def _set_distinct(inputs: Inputs) -> int | None:
    """The held-out set's distinct windows, as GATE-EVAL-001's check set measured them, for a record
    of a revision that reads a set on the split's copies one window a batch (None: an older one, or
    not measured)."""
    if _revision_of(inputs, "GATE-EVAL-001") < COPIES_SINCE:
        return None
    result = next(g for g in inputs.record.gates if g.id == "GATE-EVAL-001")
    distinct = result.measured.get("distinct_windows") if isinstance(result.measured, dict) else None
    return distinct if isinstance(distinct, int) and not isinstance(distinct, bool) else None


def _split_windows(inputs: Inputs) -> int | None:
    """The held-out split's windows, as GATE-DATA-005's spread check measured them where it read
    the split (None: not measured), which size a set the split cannot fill (contracts.heldout)."""
    result = next((g for g in inputs.record.gates if g.id == "GATE-DATA-005"), None)
    measured = result.measured if result is not None and isinstance(result.measured, dict) else {}
    windows = measured.get("split_windows")
    return windows if isinstance(windows, int) and not isinstance(windows, bool) else None


@derives(*LOOP_KINDS)
def training_record(inputs: Inputs) -> Derivation:
    """Everything a training record's metrics log and config decide."""
    derived = Derivation()
    config = read_config(inputs, derived)
    log = read_log(inputs, derived)
    if log is None:
        return derived
    settler = Settler(inputs, derived)
    derived.problems += invocation_problems(
        inputs.record, log.events, version_key(inputs.record.spec.version)
    )
    limits = {gate_id: gate.threshold_values for gate_id, gate in inputs.spec.gates.items()}
    spike_outcomes, spiked = _spikes(log, limits["GATE-TRAIN-006"])
    settler.derive("GATE-TRAIN-006", spike_outcomes)
    # With train.tensorboard on, the check tensorboard reads event files the record does not cite,
    # stamped at the last step: the log settles a floor there.
    mirrored = bool(config.get("train", {}).get("tensorboard"))
    settler.derive(
        "GATE-TRAIN-001",
        _step_lines(log, step_tokens(inputs, config), derived),
        exact=not mirrored,
        last=True,
    )
    finite = [
        (finite_measured(s.get("loss"), s.get("grad_norm"), s.get("loss_scale")), s.get("step"))
        for s in log.steps
    ]
    settler.derive("GATE-TRAIN-003", finite)
    settler.derive("GATE-TRAIN-004", _first_loss(inputs, log, config))
    ended = inputs.record.run.status in ENDED
    shown = int(limits["GATE-TRAIN-005"]["max_consecutive_low"])
    settler.derive(
        "GATE-TRAIN-005", _coherence(log, shown, ended, config.get("monitor", {}).get("sample_every"))
    )
    settler.derive("GATE-TRAIN-002", _stability(log, config.get("train", {})), exact=False)
    settler.derive("GATE-TRAIN-008", _schedule(log, config.get("train", {})), exact=False)
    _probed_gradient(log, config, settler)
    derived.problems += _clip_problems(log, config.get("train", {}))
    _stated(inputs, log, config, derived)
    _checkpoints(inputs, log, settler)
    _checkpoint_cadence(inputs, log, config, derived)
    world = inputs.record.determinism.flags.get("world_size", 1)
    derived.problems += _phase_switches(inputs, log, config) + _objective_terms(log, config, world)
    overfit = _overfit(log)
    settler.derive("GATE-EVAL-004", overfit)
    fired = (step for measured, step in overfit if judge("GATE-EVAL-004", measured, limits["GATE-EVAL-004"]))
    _summary(log, spiked, next(fired, None), derived)
    _samples(log, derived)
    _train_losses(log, config.get("eval", {}).get("every"), derived)
    _cadence(inputs, log, config, derived)
    _parameters(inputs, config, settler)
    per_step = _tokens_per_step(inputs, log, config, derived)
    if per_step is not None:
        _epochs(inputs, log, config, per_step, settler)
        _wall_time(inputs, log, per_step, derived)
    _dpo(inputs, log, config, settler)
    _experts(inputs, log, config, settler)
    _stated_by_gates(inputs, log, config, settler)
    _counted_by_rule(inputs, log, config, settler)
    _split_targets(inputs, log, config, derived)
    _replay(inputs, log, config, settler)
    restated_settings(config, log, settler)
    epoch_of = _tokens(inputs, config, log.last_step, derived)
    multiple = float(limits["GATE-EVAL-002"]["improvement_stderr_multiple"])
    evaluation = config.get("eval", {})
    noisy = _revision_of(inputs, "GATE-EVAL-001") >= NOISE_SINCE
    limit = float(limits["GATE-EVAL-001"]["min_improvement"]) if noisy else None
    noise, judged = _judged(log, bool(evaluation.get("early_stop")), limit)
    settler.derive("GATE-EVAL-001", noise, exact=False)
    stopping = _early_stopping(log, evaluation, multiple, epoch_of, derived, judged)
    asked = heldout_set_batches(
        config.get("eval", {}).get("batches"),
        limits["GATE-EVAL-001"]["min_heldout_batches"],
        _split_windows(inputs),
        config.get("train", {}).get("batch_size"),
        _set_distinct(inputs),
    )
    derived.problems += _asked_problems(log, asked)
    since = _revision_of(inputs, "GATE-EVAL-002") >= ASKED_SINCE
    settler.derive(
        "GATE-EVAL-002", stopping + _aggregated(log, asked if since else None), exact=False, last=True
    )
    _compared_losses(log, settler)
    batches = {e.get("batches") for e in log.evals}
    if len(batches) > 1:
        derived.problems.append(
            f"{METRICS_LOG}: its evaluations used {sorted(batches, key=str)} held-out batches"
        )
    elif batches and settler.wanted("GATE-EVAL-001"):
        _heldout_size(inputs, batches.pop(), config, settler)
    plan_windows(inputs, settler)
    if not ended:  # a gate that stopped the run judged a step whose line was never written
        derived.primary |= {
            g.id for g in inputs.record.gates if g.verdict is Verdict.FAIL or (g.step or 0) > log.last_step
        }
    return derived
