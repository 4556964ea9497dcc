"""What a training record's gates restate of its configuration, derived from config.toml and the log.

A gate judges measured values against spec thresholds, and some of those values are settings the
run was given: the weight decay the optimizer's matrices got, the temperature and top-k the
monitor samples with, the curriculum's phases, the caps and floors of a mixture. Edited in the
record, such a setting makes a verdict agree with numbers it should contradict (a cap raised to
cover what a window over-served), and re-judging the record cannot tell: the edit is consistent.
So each is derived again from the config the record cites, by the rule the stack applies:

* GATE-TRAIN-002: `matrix_weight_decay` is `train.weight_decay` (every matrix decays at it; a
  LoRA run, whose base matrices do not train, has none), and a LoRA run's `lora_weight_decay` is
  `lora.weight_decay` and its `adapter_matrices` two (A and B) for each matrix its targets touch;
* GATE-TRAIN-005: `temperature` and `top_k` are the monitor's;
* GATE-DATA-009: `after_steps` are 0 and each phase's `after_step`, and `phase` the one serving
  the judged step;
* GATE-DATA-008: `caps` and `floors` are the loosest of the phases that served the evaluation
  window it judged (contracts.curriculum, the rule the stack serves by: 1 and 0 where unset, 0
  and 0 for an excluded source), for each source the window served; and in a one-process run the
  window's `windows` are its steps × batch_size × grad_accum, each source's `served` count its
  share of them, as the evaluation line closing the window logs it (`source_shares`), and (from
  SHARES_LOGGED on) its `expected_share` the policy's shares in force at each of its steps (the
  log's `shares` events), booked window by window as the policy books them;
* GATE-DATA-008's paid values (a bandit's rewards) are the last evaluation's, and every
  evaluation's `bandit_rewards` the configured reward of the `bandit_losses` it logs; from 1.30.0
  every evaluation's `bandit_pulls` (the bandit's own) are the windows of each arm its windows
  served so far (each window's `source_shares` of its steps × batch_size × grad_accum, in a
  one-process run) and its `bandit_log_weights` EXP3's steps from 0 by η and the rewards due so far
  (contracts.rewards), and checks tallied and stepped restate the last evaluation's;
* GATE-DATA-008's check static (a run without a bandit): every `shares` event the log holds is
  contracts.curriculum.static_shares of the phase serving its step (the config's weights, caps,
  floors and exclusions) and the windows the check recorded (`static_windows`, which the ledger's
  check holds to the data's manifest, tools/lineage.py), within static_rtol; the exclusions (and,
  without phases, the weights, caps and floors) are restated from the config;
* a bandit's `shares` events during its warmup are every arm the phase leaves eligible alike,
  projected onto the phase's caps and floors (contracts.curriculum.project_shares), within
  static_rtol;
* GATE-TRAIN-008's check start: `start_seed` is `train.seed`, and `start_from` "checkpoint" for a
  run started with --init-from (`metrics.init_from`), "seed" otherwise (not for a resumed run,
  whose last invocation measured its own construction), and `start_tensors` the entries of the
  start it states: a seeded model's state dict (a tied head under both keys), or the tensors of
  the model file of a checkpoint started from as it is (not a LoRA run's adapter merged or
  continued);
* GATE-TRAIN-007's check dropout: `dropout_p` is `lora.dropout`;
* GATE-DATA-011's `shares`, judged when the same window closed, are GATE-DATA-008's
  `expected_share` (the loop hands both gates the one policy share): derived, where that is;
* GATE-ARCH-008, 010 and 014: `capacity` is `model.mod_capacity`;
* `env.device` is `train.device` where the config names one (not "auto": then the stack chose);
* what the model's shape decides (contracts.model_shape, the stack's own rules): GATE-CKPT-001's
  `weights_compared` are the tensors of a checkpoint's model file and its `optimizer_compared`
  AdamW's three of each tensor the optimizer steps (contracts.checkpoint_layout), GATE-TRAIN-008's
  `updated_parameters` the tensors the optimizer steps (every parameter, or each adapter's A and B)
  and its `stepped_parameters` (those whose gradient was not all zeros) and `moved_parameters`
  (those of them the step changed) no more than those; GATE-LORA-001's `elements` are the probe's
  logits; GATE-MODEL-003's `checked` and `skipped_options` are whether the model has none of the
  options the reference did not write out before rev 5, and which (from rev 5 on: true, none);
  its `init` names every parameter of the model with the std or value GPT names for it
  (contracts.model_init) and a drawn tensor's elements, and its `parameters_named` every
  parameter of the model and its adapters with its shape and whether it trains
  (contracts.model_parameters); and a LoRA run's `lora_matrices.skipped` lists every matrix
  without an adapter, with the selection's reason;
* GATE-TRAIN-005's `draws` are the monitor's prompts times the tokens it samples after each
  (contracts.coherence.sample_length), and its `seed` the monitor's seed (contracts.seeds
  .monitor_seed) of train.seed and the step of the last sampling round the log shows, or of the
  step the gate's result names (a round a gate stopped logs no sample line); its
  `seeded_state_sha256` is the state a generator freshly seeded with that seed holds.

A value is compared only where the record holds it (an older record may not measure it), and a
setting a resume changed is not derived where the record's config holds the last invocation's only.
"""

from __future__ import annotations

import math
from typing import Any

from contracts.checkpoint_layout import OPTIMIZER_SLOTS
from contracts.coherence import sample_length
from contracts.curriculum import eligible_arms, phase_at, project_shares, source_bounds, static_shares
from contracts.derive.reports import seeded, version_key, whole
from contracts.derive.settling import Log, Settler
from contracts.evidence import EvidenceRecord
from contracts.model_init import named_initialisation
from contracts.model_parameters import implied_parameters, lora_skipped, lora_touched
from contracts.model_shape import (
    DEFAULTS,
    dense,
    lora_probe_elements,
    model_file_tensors,
    options_on,
    parameter_shapes,
    state_dict_tensors,
    trained_tensors,
)
from contracts.rewards import EXP3_START, REWARDS, exp3_log_weights
from contracts.seeds import monitor_seed

# The spec version from which the loop logs the policy's shares (`"event": "shares"` lines) and
# the checker derives GATE-DATA-008's expected shares from them.
SHARES_LOGGED = "1.14.0"
# GATE-MODEL-003's revision from which stack/model/reference.py writes out every option's blocks
# (experts, differential attention, depth routing): every model is compared with it.
OPTIONS_WRITTEN_OUT_SINCE = 5


def measured_of(record: EvidenceRecord, gate_id: str) -> dict[str, Any]:
    """A gate's measured values as the record states them ({} where it has none)."""
    result = next((g for g in record.gates if g.id == gate_id), None)
    return result.measured if result is not None and isinstance(result.measured, dict) else {}


def restate(settler: Settler, gate_id: str, key: str, value: Any) -> None:
    """`value` as `gate_id`'s measured `key`, compared where the record holds that key (and derived
    only there: a check the record does not show is given no values, which would leave it part
    measured)."""
    held = key in measured_of(settler.inputs.record, gate_id)
    if value is not None and held and settler.wanted(gate_id):
        settler.derived.put(("gates", gate_id, "measured", key), value, optional=True)


def _phases(data: dict[str, Any]) -> list[dict[str, Any]]:
    """The curriculum's phases as the run serves them: the base mixture after step 0, then each
    configured phase (a phase replaces the mixture's weights, caps and floors, it does not add to them)."""
    base = {
        "after_step": 0,
        "weights": data.get("weights") or {},
        "caps": data.get("caps") or {},
        "floors": data.get("floors") or {},
    }
    return [base, *(p for p in data.get("phases") or [] if isinstance(p, dict))]


def _bounds(phase: dict[str, Any], name: str, excluded: bool) -> tuple[float, float]:
    """(cap, floor) a configured phase gives source `name` (contracts.curriculum's rule)."""
    return source_bounds(name, phase.get("caps") or {}, phase.get("floors") or {}, excluded)


def _decay(config: dict[str, Any], settler: Settler) -> None:
    lora = config.get("lora")
    if not isinstance(lora, dict):
        restate(settler, "GATE-TRAIN-002", "matrix_weight_decay", config.get("train", {}).get("weight_decay"))
        return
    restate(settler, "GATE-TRAIN-002", "lora_weight_decay", lora.get("weight_decay"))
    touched = lora_touched(config.get("model", {}), lora.get("targets"))
    if touched is not None:  # an A and a B beside each matrix touched
        restate(settler, "GATE-TRAIN-002", "adapter_matrices", 2 * len(touched))


def _curriculum(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """GATE-DATA-009's phases and GATE-DATA-008's bounds, at the steps the record judged them."""
    data = config.get("data", {})
    phases = _phases(data)
    after_steps = [int(p.get("after_step", 0)) for p in phases]
    judged = {g.id: g for g in settler.inputs.record.gates}
    switch = judged.get("GATE-DATA-009")
    if switch is not None and isinstance(switch.step, int) and switch.step > 0:
        restate(settler, "GATE-DATA-009", "step", switch.step)
        restate(settler, "GATE-DATA-009", "after_steps", after_steps)
        restate(settler, "GATE-DATA-009", "phase", phase_at(after_steps, switch.step))
    window = judged.get("GATE-DATA-008")
    evals = [int(e["step"]) for e in log.evals if isinstance(e.get("step"), int)]
    if window is None or window.step not in evals or settler.inputs.record.metrics.get("resumes"):
        return  # a resumed run's window may have opened before this invocation: not derived
    start = max((step for step in evals if step < window.step), default=0) + 1
    expected = _expected(config, log, settler, window.step, start)
    if expected is None:  # not derived: the record's own, which GATE-DATA-011 must repeat
        expected = window.measured.get("expected_share") if isinstance(window.measured, dict) else None
    concentration = judged.get("GATE-DATA-011")
    if concentration is not None and concentration.step == window.step and isinstance(expected, dict):
        restate(settler, "GATE-DATA-011", "shares", expected)  # the one policy share both judged
    served = _served(config, log, settler, window.step, start)
    if served is None:
        served = window.measured.get("served") if isinstance(window.measured, dict) else None
    if not isinstance(served, dict):
        return
    serving = range(phase_at(after_steps, start), phase_at(after_steps, window.step) + 1)
    excluded = set(data.get("exclude") or [])
    caps, floors = {}, {}
    for name, count in served.items():
        if not isinstance(count, int) or count <= 0:
            continue  # a source never served may be empty, which the stack bounds as excluded
        bounds = [_bounds(phases[i], name, name in excluded) for i in serving]
        caps[name] = max(cap for cap, _ in bounds)
        floors[name] = min(floor for _, floor in bounds)
    for key, bounds in (("caps", caps), ("floors", floors)):
        for name, value in bounds.items():
            if settler.wanted("GATE-DATA-008"):
                path = ("gates", "GATE-DATA-008", "measured", key, name)
                settler.derived.put(path, value, optional=True)


def _per_step(config: dict[str, Any], settler: Settler) -> int | None:
    """The windows each optimizer step of a one-process run reads (batch_size × grad_accum); None
    for a run of several processes, whose books are each process's own."""
    train = config.get("train", {})
    world = settler.inputs.record.determinism.flags.get("world_size", 1)
    batch, accum = train.get("batch_size"), train.get("grad_accum", 1)
    if world != 1 or not isinstance(batch, int) or not isinstance(accum, int):
        return None
    return batch * accum


def _expected(
    config: dict[str, Any], log: Log, settler: Settler, step: int, start: int
) -> dict[str, float] | None:
    """GATE-DATA-008's `expected_share` of the window `start`…`step` of a one-process run, put for
    comparison: each step books the policy's share of every source (the last `shares` event at or
    before it; 0 for a source it does not name) times the windows it read, and the window's share
    is that sum over its windows, as stack.data.policy books it. From SHARES_LOGGED on a window
    without shares in force is derived as None, which differs; before it, not derived (None)."""
    line = next((e for e in log.evals if e.get("step") == step), {})
    names, per_step = line.get("source_shares"), _per_step(config, settler)
    logged = version_key(settler.inputs.record.spec.version) >= version_key(SHARES_LOGGED)
    if not isinstance(names, dict) or per_step is None or not settler.wanted("GATE-DATA-008"):
        return None
    said = [e for e in log.events if e.get("event") == "shares" and isinstance(e.get("step"), int)]
    booked = dict.fromkeys(names, 0.0)
    for at in range(start, step + 1):
        shares = next((e.get("shares") for e in reversed(said) if e["step"] <= at), None)
        if not isinstance(shares, dict):
            booked = None
            break
        for name in booked:
            booked[name] += float(shares.get(name, 0.0)) * per_step
    if booked is None and not logged:
        return None
    windows = (step - start + 1) * per_step
    expected = None if booked is None else {name: e / windows for name, e in booked.items()}
    settler.derived.put(("gates", "GATE-DATA-008", "measured", "expected_share"), expected, optional=True)
    return expected


def _window_served(line: dict[str, Any], per_step: int | None, start: int) -> dict[str, int] | None:
    """The windows of each source the evaluation window closed by `line` served, in a one-process
    run whose steps read `per_step` windows each: steps `start`…its step, each source's logged
    share (`source_shares`) of them. None where that is not derived."""
    shares, step = line.get("source_shares"), line.get("step")
    if per_step is None or not isinstance(shares, dict) or not whole(step):
        return None
    windows = (step - start + 1) * per_step
    return {str(name): round(float(share) * windows) for name, share in shares.items()}


def _served(
    config: dict[str, Any], log: Log, settler: Settler, step: int, start: int
) -> dict[str, int] | None:
    """GATE-DATA-008's window at `step` of a one-process run: steps `start`…`step` read batch_size ×
    grad_accum windows each, and the evaluation line closing it logs each source's share of them;
    the served counts are those shares of that many windows. None where it is not derived."""
    line = next((e for e in log.evals if e.get("step") == step), {})
    per_step = _per_step(config, settler)
    served = _window_served(line, per_step, start)
    if served is None or per_step is None:
        return None
    restate(settler, "GATE-DATA-008", "windows", (step - start + 1) * per_step)
    for name, count in served.items():
        if settler.wanted("GATE-DATA-008"):
            settler.derived.put(("gates", "GATE-DATA-008", "measured", "served", name), count, optional=True)
    return served


def changed_by_resumes(record: EvidenceRecord) -> set[str]:
    """The dotted config keys (`section.key`) a resume of the run changed: the record's config.toml
    holds the last invocation's value of each, not what the earlier parts ran under."""
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    return {key for r in resumes or [] if isinstance(r, dict) for key in r.get("changed") or []}


def touched_matrices(config: dict[str, Any], metrics: dict[str, Any]) -> list[str] | None:
    """The matrices a LoRA run's adapters are on: the record's own list (`metrics.lora_matrices.
    touched`, held to `lora.targets` where that decides it), else what `lora.targets` decides;
    None for a run without LoRA, or targets only the stack resolves and no list."""
    lora = config.get("lora")
    if not isinstance(lora, dict):
        return None
    selection = metrics.get("lora_matrices")
    if isinstance(selection, dict) and isinstance(selection.get("touched"), list):
        return [str(name) for name in selection["touched"]]
    return lora_touched(config.get("model", {}), lora.get("targets"))


def _device(config: dict[str, Any], settler: Settler) -> None:
    """`env.device` is the device the config names (set up once: a resume keeps the record's env)."""
    device = config.get("train", {}).get("device")
    if device in ("cpu", "cuda") and "train.device" not in changed_by_resumes(settler.inputs.record):
        settler.derived.put(("env", "device"), device)


def _tensor_counts(model: dict[str, Any], adapters: int | None, settler: Settler) -> None:
    """GATE-CKPT-001's and GATE-TRAIN-008's counts of tensors, by the model's shape (and a LoRA run's
    `adapters`): a problem where a probe says more parameters had a gradient, or moved, than the
    optimizer steps."""
    restate(settler, "GATE-CKPT-001", "weights_compared", model_file_tensors(model, adapters or 0))
    updated = trained_tensors(model, adapters)
    # AdamW keeps each stepped tensor's moments and step: what the optimizer file it compared holds.
    restate(settler, "GATE-CKPT-001", "optimizer_compared", len(OPTIMIZER_SLOTS) * updated)
    restate(settler, "GATE-TRAIN-008", "updated_parameters", updated)
    measured = measured_of(settler.inputs.record, "GATE-TRAIN-008")
    stepped, moved = measured.get("stepped_parameters"), measured.get("moved_parameters")
    for key, count, bound, of in (
        ("stepped_parameters", stepped, updated, "tensors the optimizer steps"),
        ("moved_parameters", moved, stepped, "stepped_parameters"),
    ):
        if settler.wanted("GATE-TRAIN-008") and whole(count, bound) and count > bound:
            settler.derived.problems.append(
                f"gates[GATE-TRAIN-008].measured.{key} is {count}, more than the {bound} {of}"
            )


def _architecture(model: dict[str, Any], settler: Settler) -> None:
    """GATE-MODEL-003: before rev OPTIONS_WRITTEN_OUT_SINCE, whether the reference wrote the model
    out (one without an option it did not write out; those named in `skipped_options`: from that
    revision every model is, for a record of any kind, contracts.derive), and the initialisation
    named for each of the model's parameters (checked on the model as built, before any adapter or
    checkpoint): std or value, and a drawn tensor's elements; a parameter the model does not have
    is a problem."""
    gate = next((g for g in settler.inputs.record.gates if g.id == "GATE-MODEL-003"), None)
    if gate is not None and gate.revision < OPTIONS_WRITTEN_OUT_SINCE:
        restate(settler, "GATE-MODEL-003", "checked", dense(model))
        restate(settler, "GATE-MODEL-003", "skipped_options", options_on(model))
    init = measured_of(settler.inputs.record, "GATE-MODEL-003").get("init")
    if not isinstance(init, dict) or not settler.wanted("GATE-MODEL-003"):
        return
    shapes = parameter_shapes(model)
    for name, shape in shapes.items():
        named = named_initialisation(name, model)
        stated = {"named_value": named.value} if named.std is None else {"named_std": named.std}
        if named.std is not None:
            stated["elements"] = math.prod(shape)
        for key, value in stated.items():
            settler.derived.put(("gates", "GATE-MODEL-003", "measured", "init", name, key), value)
    if extra := sorted(set(init) - set(shapes)):
        settler.derived.problems.append(
            f"gates[GATE-MODEL-003].measured.init names {', '.join(extra[:3])}, which the model of its "
            "config.toml does not have"
        )


def _shaped(config: dict[str, Any], settler: Settler) -> None:
    """What the model's shape and a LoRA run's targets decide of the record (module docstring)."""
    model, metrics = config.get("model", {}), settler.inputs.record.metrics
    try:
        parameter_shapes(model)
    except (KeyError, TypeError, ValueError, ZeroDivisionError):
        return  # an incomplete [model] table: its shape is not decided
    lora, touched = config.get("lora"), touched_matrices(config, metrics)
    if not isinstance(lora, dict) or touched is not None:  # else the stack resolved the adapters
        _tensor_counts(model, None if touched is None else len(touched), settler)
    _architecture(model, settler)
    restate(settler, "GATE-TRAIN-008", "start_tensors", _start_tensors(model, settler.inputs.record))
    # GATE-MODEL-003's check structure: the parameters the config implies, by the stack's own statute
    try:
        implied = implied_parameters(model, lora if isinstance(lora, dict) else None)
    except (KeyError, TypeError, ValueError):
        settler.derived.problems.append("config.toml's [lora] states no r or targets for check structure")
    else:
        restate(settler, "GATE-MODEL-003", "parameters_named", implied)
    if not isinstance(lora, dict):
        return
    restate(settler, "GATE-LORA-001", "elements", lora_probe_elements(model))
    skipped = lora_skipped(model, lora.get("targets"))
    if skipped is not None and isinstance(metrics.get("lora_matrices"), dict):
        settler.derived.put(("metrics", "lora_matrices", "skipped"), skipped)


def _draws(config: dict[str, Any], settler: Settler) -> None:
    """GATE-TRAIN-005's `draws`: each prompt's sample, every sampling round alike."""
    monitor, ctx = config.get("monitor", {}), config.get("model", {}).get("ctx")
    prompts, tokens = monitor.get("prompts"), monitor.get("tokens")
    if changed_by_resumes(settler.inputs.record) & {"monitor.prompts", "monitor.tokens"}:
        return  # the record's last sampling round may be an earlier invocation's
    if isinstance(prompts, list) and whole(tokens, ctx):
        restate(settler, "GATE-TRAIN-005", "draws", len(prompts) * sample_length(tokens, ctx))


def _monitor_seeded(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """GATE-TRAIN-005's check seeded: the seed stated is the monitor's of the last sampling round
    (the last sample line's step, or the step a gate stopped the round at), and the state it starts."""
    record = settler.inputs.record
    result = next((g for g in record.gates if g.id == "GATE-TRAIN-005"), None)
    train_seed = config.get("train", {}).get("seed")
    if result is None or not whole(train_seed) or "train.seed" in changed_by_resumes(record):
        return
    steps = [line.get("step") for line in log.samples[-1:]] + [result.step]
    stated = [monitor_seed(train_seed, step) for step in steps if whole(step)]
    held = measured_of(record, "GATE-TRAIN-005").get("seed")
    if settler.wanted("GATE-TRAIN-005") and stated:
        seeded(settler.inputs, settler.derived, "GATE-TRAIN-005", held if held in stated else stated[0])


def _bandit(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """Every evaluation's `bandit_rewards` are its arms' rewards under the configured rule
    (contracts.rewards) of the `bandit_losses` it logs, each against the arm's loss at the
    evaluation before (none at the first); its `bandit_pulls` the windows each arm served so far,
    and its `bandit_log_weights` EXP3's steps of the rewards due (`_bandit_books`); GATE-DATA-008's
    paid, tallied and stepped values are the last evaluation's. Not derived for a resumed run (a
    polish pivot may have started a new bandit) or a log without the losses (before spec 1.23.0)."""
    data = config.get("data", {})
    if data.get("policy") != "bandit" or settler.inputs.record.metrics.get("resumes"):
        return
    bandit = data.get("bandit") if isinstance(data.get("bandit"), dict) else {}
    name, reference = bandit.get("reward", "improvement"), bandit.get("reference") or {}
    rule = REWARDS.get(name)
    paid = [e for e in log.evals if isinstance(e.get("bandit_losses"), dict)]
    if rule is None or not paid:
        return
    before: dict[str, Any] = {}
    due_rewards = []
    for line in paid:
        losses = line["bandit_losses"]
        due = {arm: rule(float(now), before.get(arm), reference.get(arm)) for arm, now in losses.items()}
        if line.get("bandit_rewards") != due:
            settler.derived.problems.append(
                f"metrics.jsonl: the evaluation at step {line.get('step')} logs bandit rewards "
                f"{line.get('bandit_rewards')}, but the {name} reward of the arms' held-out losses it logs "
                f"is {due}"
            )
        due_rewards.append(due)
        last_before, before = before, {arm: float(now) for arm, now in losses.items()}
    judged = next((g for g in settler.inputs.record.gates if g.id == "GATE-DATA-008"), None)
    books = _bandit_books(config, log, settler, paid, due_rewards)
    if judged is not None and judged.step == paid[-1].get("step"):
        restate(settler, "GATE-DATA-008", "losses", paid[-1]["bandit_losses"])
        restate(settler, "GATE-DATA-008", "rewards", paid[-1].get("bandit_rewards"))
        restate(
            settler,
            "GATE-DATA-008",
            "before",
            {arm: last_before.get(arm) for arm in paid[-1]["bandit_losses"]},
        )
        restate(settler, "GATE-DATA-008", "reward", name)
        restate(settler, "GATE-DATA-008", "reference", dict(reference))
        for key, value in books.items():
            restate(settler, "GATE-DATA-008", key, value)


def _bandit_books(
    config: dict[str, Any],
    log: Log,
    settler: Settler,
    paid: list[dict[str, Any]],
    rewards: list[dict[str, float]],
) -> dict[str, Any]:
    """From 1.30.0 (where evaluations log them), each paid evaluation's `bandit_pulls` against the
    windows each arm served up to it (every evaluation window so far, `_window_served`; one-process
    runs only), and its `bandit_log_weights` against EXP3's steps from EXP3_START by η and the
    `rewards` due at every payment up to it, within bandit_rtol. Returns the last payment's values
    of checks tallied (`tallied_served`) and stepped (`log_weights_before`, `log_weights_after`)."""
    bandit = config.get("data", {}).get("bandit") or {}
    eta = bandit.get("eta", measured_of(settler.inputs.record, "GATE-DATA-008").get("eta"))
    if not any("bandit_pulls" in line for line in paid) or not isinstance(eta, int | float):
        return {}
    per_step, rtol = _per_step(config, settler), settler.inputs.spec.threshold("GATE-DATA-008", "bandit_rtol")
    due_at = {id(line): due for line, due in zip(paid, rewards, strict=True)}
    served: dict[str, int] | None = {}
    weights: dict[str, float] = {}
    derived: dict[str, Any] = {}
    start = 1
    for line in (e for e in log.evals if whole(e.get("step"))):
        counts = _window_served(line, per_step, start)
        served = (
            None if counts is None or served is None else {a: served.get(a, 0) + n for a, n in counts.items()}
        )
        start = line["step"] + 1
        if id(line) not in due_at:
            continue
        due = due_at[id(line)]
        before = weights or dict.fromkeys(due, EXP3_START)
        weights = exp3_log_weights(before, due, float(eta))
        pulls, logged = line.get("bandit_pulls"), line.get("bandit_log_weights")
        if served is not None and isinstance(pulls, dict) and pulls != {a: served.get(a, 0) for a in pulls}:
            settler.derived.problems.append(
                f"metrics.jsonl: the evaluation at step {line['step']} logs the bandit's pulls {pulls}, but "
                f"the windows its arms served up to it are {served}"
            )
        if isinstance(logged, dict) and any(
            not isinstance(logged.get(a), int | float) or abs(logged[a] - w) > rtol * max(abs(w), 1.0)
            for a, w in weights.items()
        ):
            settler.derived.problems.append(
                f"metrics.jsonl: the evaluation at step {line['step']} logs the bandit's log-weights "
                f"{logged}, but EXP3's steps by η {eta} of the rewards due up to it give {weights}"
            )
        derived = {"log_weights_before": before, "log_weights_after": weights}
        if served is not None:
            derived["tallied_served"] = {a: served.get(a, 0) for a in due}
    return derived


def _static(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """GATE-DATA-008's check static of a run without a bandit: every `shares` event is
    contracts.curriculum.static_shares of the phase serving its step and the windows the check
    recorded, within static_rtol; the exclusions, and without phases the weights, caps and floors,
    are the config's. Not derived where a resume changed the mixture (the polish pivot)."""
    data = config.get("data", {})
    windows = measured_of(settler.inputs.record, "GATE-DATA-008").get("static_windows")
    changed = any(
        key.startswith("data.") and key != "data.wrap" for key in changed_by_resumes(settler.inputs.record)
    )
    if data.get("policy") == "bandit" or changed or not isinstance(windows, dict):
        return
    if not settler.wanted("GATE-DATA-008") or not all(whole(n) for n in windows.values()):
        return
    phases, excluded = _phases(data), sorted(data.get("exclude") or [])
    after_steps = [int(p.get("after_step", 0)) for p in phases]
    rtol = settler.inputs.spec.threshold("GATE-DATA-008", "static_rtol")
    for event in (e for e in log.events if e.get("event") == "shares" and whole(e.get("step"))):
        phase = phases[phase_at(after_steps, max(event["step"], 1))]
        parts = [phase.get(key) or {} for key in ("weights", "caps", "floors")]
        due = static_shares(parts[0], windows, set(excluded), parts[1], parts[2])
        logged = event.get("shares") if isinstance(event.get("shares"), dict) else {}
        if _shares_differ(logged, due, rtol):
            settler.derived.problems.append(
                f"metrics.jsonl: the shares logged at step {event['step']}, {logged}, are not each source's "
                f"weight times its natural share of the windows {windows}, projected onto the phase's caps "
                f"and floors: {due} (contracts.curriculum.static_shares)"
            )
    restate(settler, "GATE-DATA-008", "static_excluded", excluded)
    if len(phases) == 1:
        for key in ("weights", "caps", "floors"):
            restate(settler, "GATE-DATA-008", f"static_{key}", phases[0][key])


def _shares_differ(logged: dict[str, Any], due: dict[str, float], rtol: float) -> bool:
    """Whether logged shares are not `due` within `rtol` (relative to a share, or to 1 below it)."""
    return any(
        not isinstance(logged.get(n, 0.0), int | float)
        or abs(logged.get(n, 0.0) - due.get(n, 0.0)) > rtol * max(due.get(n, 0.0), 1.0)
        for n in set(due) | set(logged)
    )


def _bandit_warmup(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """A bandit's `shares` events during its warmup (step <= data.bandit.warmup_steps): EXP3 wants
    every arm the phase leaves eligible alike (stack.data.bandit.wanted before it exploits;
    contracts.curriculum.eligible_arms), and the policy serves that projected onto the phase's caps
    and floors (contracts.curriculum.project_shares), within GATE-DATA-008's static_rtol. The arms are
    the sources the event names, so a cap restated 0.3 -> 0.6 while the log served docs 0.3 is found.
    Not derived where a resume changed the mixture."""
    data = config.get("data", {})
    bandit = data.get("bandit") if isinstance(data.get("bandit"), dict) else {}
    warmup = bandit.get("warmup_steps")
    changed = any(
        key.startswith("data.") and key != "data.wrap" for key in changed_by_resumes(settler.inputs.record)
    )
    if data.get("policy") != "bandit" or changed or not whole(warmup):
        return
    phases, excluded = _phases(data), set(data.get("exclude") or [])
    after_steps = [int(p.get("after_step", 0)) for p in phases]
    rtol = settler.inputs.spec.threshold("GATE-DATA-008", "static_rtol")
    for event in log.events:
        logged = event.get("shares")
        if event.get("event") != "shares" or not whole(event.get("step")) or not isinstance(logged, dict):
            continue
        if event["step"] > warmup:
            continue
        phase = phases[phase_at(after_steps, max(event["step"], 1))]
        bounds = {name: _bounds(phase, name, name in excluded) for name in logged}
        caps = {name: cap for name, (cap, _) in bounds.items()}
        eligible = eligible_arms(logged, phase.get("weights") or {}, caps)
        if not eligible:
            continue
        wanted = dict.fromkeys(eligible, 1.0 / len(eligible))
        due = project_shares(wanted, caps, {name: floor for name, (_, floor) in bounds.items()})
        if _shares_differ(logged, due, rtol):
            settler.derived.problems.append(
                f"metrics.jsonl: the shares logged at step {event['step']}, {logged}, are not the bandit's "
                f"warmup (every eligible arm alike, {eligible}) projected onto the phase's caps {caps}: "
                f"{due} (contracts.curriculum.project_shares)"
            )


def _origin(record: EvidenceRecord) -> str | None:
    """What a run's first step starts from: a checkpoint's weights for a run started with
    --init-from (`metrics.init_from`), weights drawn from train.seed otherwise; None for a resumed
    run, whose last invocation measured its own construction."""
    if record.metrics.get("resumes"):
        return None
    return "checkpoint" if record.metrics.get("init_from") else "seed"


def _start_tensors(model: dict[str, Any], record: EvidenceRecord) -> int | None:
    """How many tensors GATE-TRAIN-008's check start hashes: the state dict of the model drawn
    from the seed, or the model file of an --init-from checkpoint started from as it is (None
    where the start is not decided here: a resume, or a LoRA run's adapter merged in memory or
    continued, whose start `metrics.init_from.adapter` names)."""
    origin = _origin(record)
    if origin == "seed":
        return state_dict_tensors(model)
    source = record.metrics.get("init_from")
    if origin == "checkpoint" and isinstance(source, dict) and "adapter" not in source:
        return model_file_tensors(model)
    return None


def _started(config: dict[str, Any], settler: Settler) -> None:
    """GATE-TRAIN-008's check start: the seed a fresh start is drawn from is train.seed, and the
    origin the run states is its `_origin`; GATE-TRAIN-007's check dropout: the rate it held the
    adapters to is lora.dropout."""
    restate(settler, "GATE-TRAIN-008", "start_seed", config.get("train", {}).get("seed"))
    restate(settler, "GATE-TRAIN-008", "start_from", _origin(settler.inputs.record))
    lora = config.get("lora")
    if isinstance(lora, dict):
        restate(settler, "GATE-TRAIN-007", "dropout_p", lora.get("dropout"))


def restated_settings(config: dict[str, Any], log: Log, settler: Settler) -> None:
    """Every setting a training record's gates restate, derived from its config (module docstring)."""
    _decay(config, settler)
    # The reader draws every epoch plan from the run's seed (stack.train.loop opens it with train.seed).
    restate(settler, "GATE-DATA-002", "plan_seed", config.get("train", {}).get("seed"))
    monitor = config.get("monitor", {})
    for key in ("temperature", "top_k"):
        restate(settler, "GATE-TRAIN-005", key, monitor.get(key))
    _draws(config, settler)
    _monitor_seeded(config, log, settler)
    _device(config, settler)
    _shaped(config, settler)
    _curriculum(config, log, settler)
    _bandit(config, log, settler)
    _static(config, log, settler)
    _bandit_warmup(config, log, settler)
    _started(config, settler)
    model = config.get("model", {})
    if model.get("mod_every"):
        capacity = model.get("mod_capacity", DEFAULTS["mod_capacity"])
        for gate_id in ("GATE-ARCH-008", "GATE-ARCH-010", "GATE-ARCH-014"):
            restate(settler, gate_id, "capacity", capacity)
