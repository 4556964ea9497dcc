"""GATE-TRAIN-008: every optimizer step updates the weights from its own gradients at the scheduled rate.

Six facts about a step that no other gate looks at, each measured where its bug would act:

* `fresh`: before the step's first backward, no trained parameter holds a gradient. A loop that
  forgets `zero_grad` applies the sum of every gradient so far, and trains; only the gradients
  left on the parameters show it. A check of `p.grad is None` per parameter: no device work.
* `schedule`: the rate the optimizer will use, read back from its parameter groups, is the
  schedule's for the step (`contracts.schedule.lr_at`), and that read-back rate is what the
  metrics line logs, so the integrity check re-derives this check from the log and config.
* `held`: at set-up, after every load of weights (`--init-from`, `--resume`) and at the probes,
  the optimizer and the loop's list of trained parameters hold exactly the model's trained
  parameters, read from the live model, and a head the config ties to the embedding is the
  embedding's tensor. A loader that puts new tensors in the model (`load_state_dict(assign=True)`)
  leaves the optimizer stepping the tensors it replaced and the head untied: the model's weights
  then never change, and every other gate holds.
* `gradient`: at the probes, the gradient the optimizer is handed is the clip of the gradient of
  the step's mean objective. The reference is taken from each micro-batch's forward run again after
  the loop's backward, from the same batch under the random state its first forward drew from
  (the loop's `_objective_again`), by a backward of its own (`torch.autograd.grad`) of objective /
  grad_accum at the step's loss scale: the same kernels in the same precision, so it equals the
  loop's gradient to rounding in fp32, bf16 and fp16 alike while only deterministic kernels run.
  Its graph is its own, freed by its backward: a backward through the loop's graph, kept for the
  loop's, would hold every saved activation and its whole working set at once, above the plain
  loop's peak (docs/gpu.md). With train.deterministic off the two backward passes may
  sum in different orders (cuDNN's attention backward does), so the probe records whether the
  switches in force let such kernels run (`deterministic_kernels`) and the gate then holds the
  gradient to a wider, stated tolerance. The
  loop's logged norm before the clip is held to the reference's (a loss scaled wrongly shows even
  where the clip hides it from the update), and each tensor's gradient at the optimizer to the
  reference's clipped by `train.clip_norm` (a clip before the loss scale is taken off, or over a
  subset of the parameters). Replicas average the reference as data parallelism averages the
  gradient; a sharded model is not compared (its backward writes the gradient shards itself).
* `update`: at the probes, the step's change of every weight with a gradient, and of AdamW's two
  moments, is recomputed in float64 from the weights, gradient and moments the optimizer was
  handed, with the configured betas and eps, the schedule's rate and decoupled weight decay on
  the parameters the configuration decays (matrices at train.weight_decay, LoRA adapters at
  lora.weight_decay, norm gains and biases not at all). Swapped betas, Adam's L2 decay for
  AdamW's, a wrong eps or a decayed norm show there, whatever the optimizer's implementation
  (fused on CUDA, foreach elsewhere), within a relative tolerance.
* `start`: at set-up, the weights the first step will start from are the ones the run states it
  starts from, by the sha256 of every tensor (stack.model.lora.state_sha256), read from the live
  model and derived apart from it: a fresh run's, once the model is built and its adapters
  attached, GPT's initialisation drawn again from train.seed in a fresh generator (a model drawn
  from another seed trains as well, and only a replay of the run showed it); an `--init-from`
  run's, once its start is loaded, the tensors its checkpoint holds (its LoRA run merged in
  memory, or its adapter continued, as the start says), read from the checkpoint's file (a load
  that never happened trained from the random initialisation with every gate green). A resume's
  weights are GATE-CKPT-003's.
* `moved`: at the probes, the optimizer holds every trained parameter that received a gradient,
  and its step changed at least one of those whose gradient is not all zeros. A loop whose
  optimizer never steps, steps a copy of the model, or leaves a parameter group out trains with
  every other gate green. Not every such parameter need change: a LoRA A matrix has a zero
  gradient while B is 0, and a rate below a weight's float resolution (a test's lr of 1e-9 on a
  norm gain of 1) leaves it bit for bit as it was.

The probes are the first step of every invocation, then every evaluation step. They cost one
more forward and backward per micro-batch, and four copies of the trained parameters (weights,
gradient and both moments before the step) with float64 work taken `CHUNK` elements at a time. A step the fp16
loss scaler skipped (it found an overflow) changes nothing by design: nothing is judged there, and
the next step is watched instead; one at a rate of exactly 0 is judged for everything but
`moved`. Under data or fully sharded parallelism each rank judges its own parameters (replicas,
or its shards).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from contracts.derive.training import deterministic_kernels
from contracts.gates import Outcome, gate_require, measure
from contracts.schedule import scheduled
from stack.model.config import ModelConfig
from stack.model.gpt import GPT
from stack.model.lora import state_sha256
from stack.train.determinism import Switches
from stack.train.distributed import World, local_shard, mean_across

# Elements of one tensor compared in float64 at a time (32 MiB per float64 temporary).
CHUNK = 1 << 22
# The constant clip_grad_norm_ adds to the norm it divides by: the clip is max_norm / (norm + 1e-6).
CLIP_EPS = 1e-6
# Float spacings of error a stored weight may carry after AdamW rounds it twice (decay, then step).
ROUNDINGS = 2
# AdamW's per-parameter state, as torch's Adam and AdamW keep it.
MOMENTS = ("exp_avg", "exp_avg_sq")

Named = list[tuple[str, torch.Tensor]]


def trained(model: torch.nn.Module) -> Named:
    """The model's trained parameters as they are now, by name, in the model's order."""
    return [(name, p) for name, p in model.named_parameters() if p.requires_grad]


# -- fresh and schedule: every step --------------------------------------------------------


def stale_gradients(parameters: Sequence[torch.Tensor]) -> int:
    """How many of `parameters` hold a gradient (none should, before a step's first backward)."""
    return sum(p.grad is not None for p in parameters)


def applied_lr(optimizer: torch.optim.Optimizer, scheduled: float) -> float:
    """The rate the optimizer will apply: of its parameter groups' rates, the farthest from `scheduled`."""
    return float(applied_settings(optimizer, {"lr": scheduled})["lr"])


def applied_settings(optimizer: torch.optim.Optimizer, stated: Mapping[str, Any]) -> dict[str, Any]:
    """Each hyper-parameter of `stated` as the optimizer will apply it: of its parameter groups'
    values, one unlike the stated value where there is one (the farthest from it, for a number),
    so a group left at another value shows."""

    def distance(value: Any, want: Any) -> float:
        if isinstance(want, bool) or isinstance(value, bool):
            return float(value is not want)
        return abs(float(value) - float(want))

    return {
        key: max((group[key] for group in optimizer.param_groups), key=lambda v, w=want: distance(v, w))
        for key, want in stated.items()
    }


def _schedule(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], stale: int, step: int
) -> Outcome:
    expected = scheduled(step, settings)
    measured = {
        "applied_lr": applied_lr(optimizer, expected),
        "scheduled_lr": expected,
        "stale_gradients": stale,
    }
    return measure("GATE-TRAIN-008", measured, step=step, holds="the step starts clean at the scheduled rate")


@gate_require("GATE-TRAIN-008", _schedule)
def check_step_start(
    optimizer: torch.optim.Optimizer, settings: Mapping[str, Any], stale: int, step: int
) -> None:
    """Every step, before its first backward: no gradient left over, and the optimizer at the rate
    the schedule gives this step under the invocation's train settings (`contracts.schedule`, the
    function the checker derives the log's rates with), never the rate the loop worked out itself."""


# -- start: what the first step starts from ------------------------------------------------------


def drawn_start(model: ModelConfig, seed: int) -> dict[str, torch.Tensor]:
    """The weights GPT's initialisation draws for `model` from `seed` in a fresh generator: what a
    fresh run states it starts from, built here apart from the run's own model."""
    return GPT(model, seed=seed).state_dict()


def start_measured(
    live: Mapping[str, torch.Tensor], stated: Mapping[str, torch.Tensor], origin: str, seed: int
) -> dict[str, Any]:
    """GATE-TRAIN-008's check start: the sha256 of the live model's tensors under every key of the
    `stated` start (a LoRA wrapper keeps its base's keys; its adapters are not part of a base's
    start), and of the stated start's; `origin` is "seed" (a fresh run, drawn from train.seed
    `seed`) or "checkpoint" (--init-from)."""
    held = {key: live[key] for key in stated if key in live}
    return {
        "start_from": origin,
        "start_seed": seed,
        "start_tensors": len(stated),
        "start_sha256": state_sha256(held) if len(held) == len(stated) else None,
        "stated_start_sha256": state_sha256(stated),
    }


def _start(measured: dict[str, Any]) -> Outcome:
    return measure("GATE-TRAIN-008", measured, holds="the run starts from the weights it states")


@gate_require("GATE-TRAIN-008", _start)
def check_start(measured: dict[str, Any]) -> None:
    """At set-up, once the weights the first step starts from are in place: they are the stated ones."""


# -- held: set-up, every load of weights, the probes ------------------------------------------


def held_measured(
    model: GPT, optimizer: torch.optim.Optimizer, listed: Sequence[torch.Tensor]
) -> dict[str, Any]:
    """How far the optimizer's parameters and the loop's `listed` ones (what it clips and clears)
    are from the model's trained parameters now, and whether a tied head is the embedding."""
    live = {id(p) for _, p in trained(model)}
    held = {id(p) for group in optimizer.param_groups for p in group["params"]}
    tied = model.config.tie_embeddings
    return {
        "unheld_parameters": len(live - held),
        "stale_held_parameters": len(held - live),
        "unlisted_parameters": len(live ^ {id(p) for p in listed}),
        "untied_heads": int(tied and model.lm_head.weight is not model.embed.weight),
    }


def _held(measured: dict[str, Any], step: int | None) -> Outcome:
    return measure(
        "GATE-TRAIN-008", measured, step=step, holds="the optimizer holds the model's trained parameters"
    )


@gate_require("GATE-TRAIN-008", _held)
def check_held(measured: dict[str, Any], step: int | None = None) -> None:
    """At set-up, after a load of weights and at the probes: the optimizer steps the model's tensors."""


# -- gradient: the probes --------------------------------------------------------------------


def _flat_chunks(*tensors: torch.Tensor) -> Iterator[tuple[torch.Tensor, ...]]:
    """Aligned pieces of same-shaped tensors (this rank's shards), CHUNK elements at a time."""
    flat = [local_shard(t).detach().reshape(-1) for t in tensors]
    for start in range(0, flat[0].numel(), CHUNK):
        yield tuple(f[start : start + CHUNK] for f in flat)


def _squares(tensor: torch.Tensor) -> float:
    """Σ x² in float64, taken in pieces."""
    return sum(float(part.double().square().sum()) for (part,) in _flat_chunks(tensor))


def _relative(error: float, scale: float) -> float:
    """`error` in units of `scale`; an error where nothing was expected is infinite, none is 0."""
    if error == 0:
        return 0.0
    return error / scale if scale > 0 else math.inf


def _reported(value: float) -> float | str:
    """JSON has no infinity: a non-finite value is kept as text, which the judge reads back."""
    return value if math.isfinite(value) else str(value)


@dataclass(frozen=True)
class Draws:
    """The generators a forward draws from (the CPU's, and its CUDA device's), as they stood before it
    (`now`): GATE-TRAIN-008's reference runs a micro-batch's forward again `again`, drawing what the
    first drew (LoRA's dropout), and leaves the run's generators where they were."""

    device: torch.device
    cpu: torch.Tensor
    cuda: torch.Tensor | None

    @classmethod
    def now(cls, device: torch.device) -> Draws:
        """The generators' states now, before a forward on `device` draws from them."""
        on_cuda = device.type == "cuda"
        return cls(device, torch.get_rng_state(), torch.cuda.get_rng_state(device) if on_cuda else None)

    @contextmanager
    def again(self) -> Iterator[None]:
        """The block draws what the forward after `now` drew; the generators are put back after it."""
        with torch.random.fork_rng(devices=[self.device] if self.cuda is not None else []):
            torch.set_rng_state(self.cpu)
            if self.cuda is not None:
                torch.cuda.set_rng_state(self.cuda, self.device)
            yield


class GradientReference:
    """The gradient of the step's mean objective over its micro-batches, Σ ∂(objective / grad_accum)/∂θ,
    taken at `loss_scale` as the loop scales its backward, and the scale taken off when measured.

    `add` is handed each micro-batch's objective from a forward of its own (not the graph the loop
    back-propagates), whose graph its backward frees.
    """

    def __init__(self, named: Named, grad_accum: int, loss_scale: float) -> None:
        self.named = named
        self.grad_accum = grad_accum
        self.loss_scale = loss_scale
        self.sums: list[torch.Tensor | None] = [None] * len(named)

    def add(self, objective: torch.Tensor) -> None:
        """One micro-batch's objective, from a forward of its own (`add` frees its graph)."""
        parameters = [p for _, p in self.named]
        scaled = objective / self.grad_accum * self.loss_scale
        grads = torch.autograd.grad(scaled, parameters, allow_unused=True)
        for i, grad in enumerate(grads):
            if grad is not None:
                previous = self.sums[i]
                self.sums[i] = grad if previous is None else previous + grad

    def measured(self, world: World, logged_norm: float, clip_norm: float) -> dict[str, Any]:
        """The loop's logged norm before the clip, and each tensor's gradient now on the parameters
        (the one the optimizer is handed), against the reference and the reference clipped at
        `clip_norm` as clip_grad_norm_ clips. `applied_gradient_error` is the worst tensor's distance
        from its clipped reference, in units of that clipped reference; `deterministic_kernels`,
        whether the switches torch has now let only deterministic kernels run (the tolerance
        follows it).

        The reference is unscaled and averaged over replicas (as data parallelism averages the
        gradient) in place, and each tensor's is let go once compared: measuring consumes it."""
        for i, ((_, p), grad) in enumerate(zip(self.named, self.sums, strict=True)):
            self.sums[i] = mean_across(world, torch.zeros_like(p) if grad is None else grad / self.loss_scale)
        norm = math.sqrt(sum(_squares(grad) for grad in self.sums if grad is not None))
        clip = min(1.0, clip_norm / (norm + CLIP_EPS))
        worst, where = 0.0, ""
        for i, (name, p) in enumerate(self.named):
            want, self.sums[i] = self.sums[i], None
            assert want is not None
            applied = torch.zeros_like(p) if p.grad is None else p.grad
            error = scale = 0.0
            for got, ref in _flat_chunks(applied, want):
                clipped = clip * ref.double()
                error += float((got.double() - clipped).square().sum())
                scale += float(clipped.square().sum())
            relative = _relative(math.sqrt(error), math.sqrt(scale))
            if relative > worst or not where:
                worst, where = relative, name
        return {
            "gradient_compared": True,
            "reference_grad_norm": norm,
            "logged_grad_norm": _reported(logged_norm),
            "applied_gradient_error": _reported(worst),
            "applied_gradient_worst": where,
            "deterministic_kernels": deterministic_kernels(Switches.now().as_flags()),
        }


# What a sharded model's record says instead: its backward writes the gradient shards itself.
NOT_COMPARED = {"gradient_compared": False}


def _gradient(measured: dict[str, Any], step: int) -> Outcome:
    return measure(
        "GATE-TRAIN-008", measured, step=step, holds="the optimizer was handed the step's clipped gradient"
    )


@gate_require("GATE-TRAIN-008", _gradient)
def check_gradient(measured: dict[str, Any], step: int) -> None:
    """At a probe the scaler did not skip: the gradient at the optimizer is the step's own, clipped."""


# -- update and moved: the probes --------------------------------------------------------------


@dataclass(frozen=True)
class AdamWSettings:
    """The AdamW step the configuration asks for: the schedule's rate, the betas and eps, and the
    decoupled weight decay of matrices (train.weight_decay) and of LoRA adapters (lora.weight_decay,
    `adapters` their parameters' ids); norm gains and biases are not decayed."""

    lr: float
    beta1: float
    beta2: float
    eps: float
    weight_decay: float
    adapter_weight_decay: float
    adapters: frozenset[int]

    def decay_of(self, parameter: torch.Tensor) -> float:
        if id(parameter) in self.adapters:
            return self.adapter_weight_decay
        return self.weight_decay if parameter.dim() >= 2 else 0.0


@dataclass
class _Before:
    """One parameter with a gradient as the optimizer's step found it: a copy of its weights (taken
    as the probe is armed), and once the step begins copies of the gradient and moments it was
    handed (moments None when the optimizer does not hold it; zeros before its first step) and the
    count of steps the optimizer had taken on it."""

    name: str
    parameter: torch.Tensor
    weights: torch.Tensor
    nonzero: bool
    grad: torch.Tensor | None = None
    moments: tuple[torch.Tensor, torch.Tensor] | None = None
    steps: float = 0.0


def _moments_before(
    optimizer: torch.optim.Optimizer, p: torch.Tensor
) -> tuple[tuple[torch.Tensor, torch.Tensor], float]:
    state = optimizer.state.get(p, {})
    if not state:
        zeros = torch.zeros_like(local_shard(p.detach()))
        return (zeros, zeros), 0.0
    first, second = (local_shard(state[k]).detach().clone() for k in MOMENTS)
    return (first, second), float(state["step"])


def spacing(stored: torch.Tensor) -> torch.Tensor:
    """The distance from each stored value to the next float of its dtype away from zero."""
    magnitude = stored.abs()
    return torch.nextafter(magnitude, torch.full_like(magnitude, math.inf)) - magnitude


class StepProbe:
    """One step's optimizer inputs and what its step did to them.

    Armed just before the loop hands the step to the scaler: the weights are copied then; the
    gradient and moments are copied by a hook on the optimizer's own `step` as it begins, so what
    runs between the loop and the optimizer (the scaler's unscaling, say) has run, and `handed`
    (the gradient check, if any) measures the gradient there. The hook counts the optimizer's steps.
    """

    def __init__(
        self, named: Named, optimizer: torch.optim.Optimizer, handed: Callable[[], dict[str, Any]] | None
    ) -> None:
        self.optimizer = optimizer
        self.held = {id(p) for group in optimizer.param_groups for p in group["params"]}
        graded = [(n, p) for n, p in named if p.grad is not None]
        nonzero = torch.stack([local_shard(p.grad).ne(0).any() for _, p in graded]).tolist() if graded else []
        self.unoptimized = sum(id(p) not in self.held for _, p in graded)
        self.before = [
            _Before(name, p, local_shard(p.detach()).clone(), flag)
            for (name, p), flag in zip(graded, nonzero, strict=True)
        ]
        self.steps_taken = 0
        self._measure_handed = handed
        self.handed: dict[str, Any] = NOT_COMPARED
        self._hook = optimizer.register_step_pre_hook(self._at_step)

    def _at_step(self, _optimizer: torch.optim.Optimizer, _args: Any, _kwargs: Any) -> None:
        """As the optimizer's step begins: measure the gradient it is handed, then copy its inputs."""
        self.steps_taken += 1
        if self.steps_taken > 1:
            return
        if self._measure_handed is not None:
            self.handed = self._measure_handed()
            self._measure_handed = None  # the reference's copy is freed before the inputs are copied
        for b in self.before:
            assert b.parameter.grad is not None
            b.grad = local_shard(b.parameter.grad).detach().clone()
            if id(b.parameter) in self.held:
                b.moments, b.steps = _moments_before(self.optimizer, b.parameter)

    def close(self) -> None:
        """Take the hook off the optimizer once its step is done."""
        self._hook.remove()

    def moved(self) -> tuple[int, int]:
        """(parameters whose gradient is not all zeros, those of them the step changed): one device read."""
        stepped = [b for b in self.before if b.nonzero]
        if not stepped:
            return 0, 0
        changed = torch.stack([(local_shard(b.parameter) != b.weights).any() for b in stepped])
        return len(stepped), int(changed.sum().item())

    def update_measured(self, settings: AdamWSettings) -> dict[str, Any]:
        """Each parameter's step against AdamW's, recomputed in float64: the worst relative error, over
        the tensors, of the weights' change (beyond ROUNDINGS float spacings of the stored weights)
        and of either moment, where it is, and how many times the optimizer stepped (once)."""
        errors = (
            (f"{b.name} {quantity}", relative)
            for b in (self.before if self.steps_taken else ())
            for quantity, relative in self._errors(b, settings)
        )
        return update_values(errors, len(self.before), self.steps_taken)

    def _errors(self, b: _Before, settings: AdamWSettings) -> list[tuple[str, float]]:
        """(quantity, relative error) of one parameter's weights and moments after the step."""
        state = self.optimizer.state.get(b.parameter, {})
        if b.grad is None or b.moments is None or not all(k in state for k in MOMENTS):
            return [("(no AdamW moments)", math.inf)]
        after = (b.parameter, *(state[k] for k in MOMENTS))
        return adam_errors((b.weights, b.grad, *b.moments), after, settings, b.steps + 1, b.parameter)


def adam_errors(
    before: tuple[torch.Tensor, ...],
    after: tuple[torch.Tensor, ...],
    settings: AdamWSettings,
    steps: float,
    parameter: torch.Tensor | None = None,
    *,
    ascent: bool = False,
) -> list[tuple[str, float]]:
    """(quantity, relative error) of a step's weights and two moments against Adam's recomputed in
    float64: `before` the weights, gradient and moments the step was handed, `after` the weights and
    moments it left, `steps` the optimizer's count of steps with this one. AdamW descends the
    gradient with decoupled decay of `parameter` (`settings.decay_of`); with `ascent` the step climbs
    it undecayed (evolution strategies' Adam). The weights' error counts beyond ROUNDINGS float
    spacings of the stored weights, each in units of the recomputed change (moment)."""
    decay = 0.0 if parameter is None else settings.decay_of(parameter)
    bias1, bias2 = 1 - settings.beta1**steps, 1 - settings.beta2**steps
    sums = dict.fromkeys(("change", "weights", "spacing", "m", "exp_avg", "v", "exp_avg_sq"), 0.0)
    for w, g, m, v, w_after, m_after, v_after in _flat_chunks(*before, *after):
        w, g, m, v = (t.double() for t in (w, g, m, v))
        m_want = settings.beta1 * m + (1 - settings.beta1) * g
        v_want = settings.beta2 * v + (1 - settings.beta2) * g * g
        step = settings.lr / bias1 * m_want / (v_want.sqrt() / math.sqrt(bias2) + settings.eps)
        change = step if ascent else -settings.lr * decay * w - step
        sums["change"] += float(change.square().sum())
        sums["weights"] += float((w_after.double() - w - change).square().sum())
        sums["spacing"] += float(spacing(w_after).double().square().sum())
        sums["m"] += float(m_want.square().sum())
        sums["exp_avg"] += float((m_after.double() - m_want).square().sum())
        sums["v"] += float(v_want.square().sum())
        sums["exp_avg_sq"] += float((v_after.double() - v_want).square().sum())
    weights = max(0.0, math.sqrt(sums["weights"]) - ROUNDINGS * math.sqrt(sums["spacing"]))
    return [
        ("weights", _relative(weights, math.sqrt(sums["change"]))),
        ("exp_avg", _relative(math.sqrt(sums["exp_avg"]), math.sqrt(sums["m"]))),
        ("exp_avg_sq", _relative(math.sqrt(sums["exp_avg_sq"]), math.sqrt(sums["v"]))),
    ]


def update_values(errors: Iterable[tuple[str, float]], updated: int, steps: int) -> dict[str, Any]:
    """The update check's values from (where, relative error) pairs: the worst and where it is, the
    parameters compared and how many times the optimizer stepped (once)."""
    worst, where = 0.0, "" if steps else "(the optimizer did not step)"
    for place, relative in errors:
        if relative > worst or not where:
            worst, where = relative, place
    return {
        "update_error": _reported(worst),
        "update_worst": where,
        "updated_parameters": updated,
        "optimizer_steps": steps,
    }


def _update(measured: dict[str, Any], step: int) -> Outcome:
    return measure(
        "GATE-TRAIN-008", measured, step=step, holds="the optimizer's step is AdamW's as configured"
    )


@gate_require("GATE-TRAIN-008", _update)
def check_update(measured: dict[str, Any], step: int) -> None:
    """At a probe the scaler did not skip: each weight and moment moved as AdamW's step moves them."""


def _moved(stepped: int, moved: int, unoptimized: int, step: int) -> Outcome:
    measured = {
        "stepped_parameters": stepped,
        "moved_parameters": moved,
        "unoptimized_parameters": unoptimized,
    }
    return measure(
        "GATE-TRAIN-008", measured, step=step, holds="the step moved the weights the loss differentiated"
    )


@gate_require("GATE-TRAIN-008", _moved)
def check_moved(stepped: int, moved: int, unoptimized: int, step: int) -> None:
    """At a probe: the optimizer holds every parameter with a gradient, and its step changed the weights."""
