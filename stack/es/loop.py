"""The evolution-strategies loop: sample ± pairs, evaluate, shape, estimate, take an Adam step.

One step, as in OpenAI-ES (Salimans et al., 2017) with mirrored sampling and fitness shaping:

1. draw P/2 seeds from the run's generator; each gives a + and a − member (GATE-ES-002), and the
   seeds evaluated are the ones the run's rule gives the step (contracts.es_seeds, check seeds);
2. evaluate every member's fitness on the step's batch, building no graph (GATE-ES-001), at the
   member's own weights (GATE-ES-002), scoring what the fitness states (GATE-ES-005);
3. replace the fitness values by centered ranks, which sum to zero (GATE-ES-003);
4. ĝ = 1/(P·σ) Σ w_i ε_i (held to contracts.es_noise's, GATE-ES-006's check estimate), and Adam
   climbs it: θ ← θ + lr · m̂ / (√v̂ + eps), written into the model (GATE-ES-006).

Everything a step changes is in `EsState` (the step, the generator, the optimizer holding θ and
its moments) plus the reader's position, and all of it is saved with each checkpoint, so a run
resumed from one continues exactly as the uninterrupted run would have.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from stack.data.reader import TokenReader, check_served
from stack.es import estimate, noise, shaping, update
from stack.es.optimizer import EsAdam
from stack.es.population import (
    Fitness,
    InProcess,
    Pool,
    Statement,
    check_applied,
    check_consumed,
    check_graph_free,
    evaluator,
    flatten,
    write_flat,
)
from stack.es.settings import EsSettings
from stack.model.gpt import GPT
from stack.train.loop import Signals


@dataclass
class EsState:
    """What a step changes: how many steps were taken, the noise generator, and Adam over θ."""

    step: int
    generator: torch.Generator
    optimizer: EsAdam


@dataclass(frozen=True)
class StepReport:
    """What one step saw: its population's fitness and the size of the gradient estimate."""

    step: int
    fitness_mean: float
    fitness_best: float
    grad_norm: float
    seeds: list[int]  # each pair's noise seed, as its members were evaluated (GATE-ES-002's check seeds)


def es_step(
    model: GPT,
    state: EsState,
    population: InProcess | Pool,
    batch: torch.Tensor,
    settings: EsSettings,
    stated: Statement,
) -> StepReport:
    """One ES step on `batch`: θ (and the model's weights) updated, under GATE-ES-001..003, 005, 006;
    `stated` is what the fitness states each evaluation scores."""
    theta = state.optimizer.theta
    members = noise.mirrored(state.generator, settings.population // 2)
    noise.check_pairs(members, theta.numel())
    evaluations, grads = population.evaluate(theta, batch, members, settings.sigma)
    check_graph_free(evaluations, grads + int(theta.grad is not None))
    check_applied(evaluations, members, settings.sigma)  # σ as the record states it, not as handed on
    evaluated = [e.member.seed for e in evaluations]
    noise.check_seeds(evaluated, settings.seed, settings.population, state.step + 1)
    check_consumed(evaluations, batch, stated)
    fitness = torch.tensor([e.fitness for e in evaluations], dtype=torch.float64)
    weights = shaping.centered_ranks(fitness)
    shaping.check_weights(weights)
    gradient = estimate.gradient_estimate(members, weights, settings.sigma, theta.numel(), theta.dtype)
    before = update.before_step(state.optimizer)
    state.optimizer.ascend(gradient)
    write_flat(model, theta)
    state.step += 1
    measured = update.update_measured(before, gradient, flatten(model), state.optimizer, settings.lr)
    measured |= update.estimate_measured(members, weights, settings.sigma, gradient)
    update.check_update(measured, state.step)
    report = (float(fitness.mean()), float(fitness.max()), float(gradient.norm()), evaluated[::2])
    return StepReport(state.step, *report)


def evolve(
    model: GPT,
    state: EsState,
    reader: TokenReader,
    settings: EsSettings,
    fitness: Fitness,
    stated: Statement,
    on_step: Callable[[StepReport], None],
    save: Callable[[EsState], None],
    signals: Signals | None = None,
) -> None:
    """Step until `settings.steps`, saving every `save_every` steps and after the last; `stated` is
    what `fitness` states each evaluation scores (stack.es.population.statement_of). `signals` (as
    installed for the loop) are read after each step, as `stack train`'s loop reads them: SIGUSR1
    saves that step; SIGINT or SIGTERM saves it and ends the loop, for --resume to go on from.
    Each step's batch, the one its population's fitness is computed on, is held first to the windows
    the plan of `settings.seed` gives that step (GATE-DATA-001, `check_served`)."""
    signals = signals if signals is not None else Signals()
    population = evaluator(model, fitness, settings.workers)
    try:
        while state.step < settings.steps:
            batch = reader.next_batch()
            # The run has taken one batch a step: a reader whose stream restarted at a resume serves
            # its own first windows, not the plan's for this step (GATE-DATA-001, checks windows, stream).
            check_served(reader, batch, state.step + 1, settings.seed)
            on_step(es_step(model, state, population, batch, settings, stated))
            stop = signals.stop is not None
            due = state.step % settings.save_every == 0 or state.step == settings.steps
            if stop or signals.save_now or due:
                signals.save_now = False
                save(state)
            if stop:
                return
    finally:
        population.close()
