"""Evaluating a population: each member's weights written into a model, its fitness read, no graph.

The model's parameters are one flat vector θ (`flatten`, in `model.parameters()` order, a tied
tensor once). A member's weights θ + sign·σ·ε(seed) are copied into the model in place and its
fitness computed under `graph_free` (torch inference mode), so no evaluation records autograd
history; each evaluation reports whether gradient recording was on and whether its value carries
a graph, and GATE-ES-001 judges those reports with the .grad of every parameter after the step.

The fitness is a callable (model, batch) → scalar: by default `lm_fitness`, the negative mean
next-token cross-entropy, so ES maximises it; an API caller may pass a reward of their own (a
module-level function, so that worker processes can receive it). Every member of a step reads
the same batch (common random numbers: the differences between members are then differences of
weights, not of text).

What each evaluation did is measured where it happened, as the model's forwards ran:

- the scorings the fitness made through the model's loss are taped (stack.model.consumed), and
  GATE-ES-005 holds them to what the fitness states (`statement_of`: the batch's windows and each
  position's next token for the language-model fitness, nothing for a reward of the caller's own),
  by the comparison a training step's loss is held to (stack.train.consumption.Tally); for the
  language-model fitness, the population loss a step logs (−mean fitness) is also held to the
  mean of the losses its forwards computed, so a fitness of the wrong sign or from another
  computation than the scoring shows;
- every forward of the model records the weights it read (`Reads`, a forward pre-hook), which
  GATE-ES-002's check applied holds to θ + sign·σ·ε(seed), the noise regenerated from the
  member's seed: a member evaluated on the wrong side, at another scale, or before its weights
  were written is off in nearly every element.

Workers. With `workers` > 1 the members are split into that many contiguous chunks, each
evaluated in its own process (spawned, one torch thread each) holding its own copy of the model:
the model itself travels once, when the worker starts (its buffers, such as a mixture-of-depths
block's routing threshold, and any adapters are part of what it computes, and θ holds only its
parameters: a worker that built a fresh model from the config routed every token past a
threshold of 0 and scored other members than the run's own model would); after that only θ, the
batch and the members' seeds travel. The default is 1, in-process: on a 2-core
machine a second process costs more in start-up and copying than it saves on a tiny model.
Fitness values from different numbers of workers can differ in the last bits (another thread
count sums in another order), so a run is resumed with the workers it was started with.
"""

from __future__ import annotations

import math
import multiprocessing
import pickle
import signal
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager, contextmanager
from dataclasses import dataclass
from typing import Any

import torch

from contracts.derive.training import finite_or_text
from contracts.errors import STOP_SIGNALS
from contracts.gates import Outcome, gate_require, measure
from stack.es import noise as sampler
from stack.es.noise import Member, noise
from stack.model.consumed import Consumed, next_tokens, recording
from stack.model.gpt import GPT
from stack.train.consumption import Tally
from stack.train.stepping import CHUNK, spacing

Fitness = Callable[[GPT, torch.Tensor], torch.Tensor | float]


def lm_fitness(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """The negative mean cross-entropy of next-token prediction on `batch` (B, T + 1)."""
    _, loss = model(batch[:, :-1], batch[:, 1:])
    assert loss is not None  # targets were given
    return -loss


@dataclass(frozen=True)
class Statement:
    """What a fitness states of each evaluation (GATE-ES-005): the scorings it makes through the
    model's loss, read from the batch alone, and whether its value is the negative of their loss
    (then the population loss a step logs, −mean fitness, is the mean loss its forwards made)."""

    scorings: Callable[[torch.Tensor], list[Consumed]]
    negated_loss: bool


def states_nothing(batch: torch.Tensor) -> list[Consumed]:
    """A reward of the caller's own: it states no scoring through the model's loss."""
    return []


# The language-model fitness: −(the cross-entropy of each window's next tokens), one scoring.
NEXT_TOKENS = Statement(next_tokens, negated_loss=True)
# A reward of the caller's own, by default: no scoring through the model's loss, any value.
REWARD = Statement(states_nothing, negated_loss=False)


def statement_of(fitness: Fitness) -> Statement:
    """What `fitness` states of each evaluation: NEXT_TOKENS for the language-model fitness (as a
    pretraining step's loss states), REWARD for a reward of the caller's own."""
    return NEXT_TOKENS if fitness is lm_fitness else REWARD


def graph_free() -> AbstractContextManager[Any]:
    """The context every fitness evaluation runs in: inference mode, where nothing records a graph."""
    return torch.inference_mode()


def flatten(model: GPT) -> torch.Tensor:
    """A copy of the model's parameters as one flat vector (each tied tensor once)."""
    return torch.cat([p.detach().reshape(-1) for p in model.parameters()])


@torch.no_grad()
def write_flat(model: GPT, vector: torch.Tensor) -> None:
    """Copy `vector` into the model's parameters, in place (a tied head stays its embedding)."""
    offset = 0
    for param in model.parameters():
        param.copy_(vector[offset : offset + param.numel()].view_as(param))
        offset += param.numel()


@dataclass(frozen=True)
class Evaluation:
    """One member's fitness, and what GATE-ES-001, -002 and -005 ask of how it was computed: the
    member whose weights its forwards were checked against, whether it recorded a graph, the
    weights its forwards read (`Reads`: how many forwards, the elements off θ + sign·σ·ε beyond
    rounding, the worst relative error, the σ each forward's weights were perturbed by) and the
    scorings its loss made."""

    member: Member
    fitness: float
    grad_enabled: bool
    graph: bool
    forwards: int
    outliers: int
    perturbation_error: float
    sigma_read: tuple[float, ...]
    consumed: tuple[Consumed, ...]


class Reads:
    """A forward pre-hook on the model: the weights each forward of one member's fitness read,
    against θ + sign·σ·ε(seed) with ε regenerated from the member's seed by the sampler's own
    definition (`stack.es.noise.noise`, in θ's dtype), not by the code that wrote the weights.

    An element is an outlier when it is off by more than one float spacing of the weight read and
    two of the perturbation: the roundings of σ to θ's dtype, of σ·(±ε) and of the sum, whichever
    way it is summed (where θ nearly cancels σ·ε, the sum's spacing is far finer than the
    perturbation's, and σ's own rounding, up to half a spacing, shows). `error`
    is the worst forward's ‖read − θ − sign·σ·ε‖ / ‖σ·ε‖ (float64). Apart from the σ it is handed,
    each forward's `sigmas` entry is the scale its weights were perturbed by along the member's
    noise, ⟨read − θ, sign·ε⟩ / ‖ε‖² in float64 (GATE-ES-002's check sigma holds it to the σ the
    run's record states: a σ handed to both the writer and this hook would agree with itself)."""

    def __init__(self, theta: torch.Tensor, member: Member, sigma: float) -> None:
        self.theta, self.member, self.sigma = theta, member, sigma
        self.forwards = self.outliers = 0
        self.error = 0.0
        self.sigmas: list[float] = []

    def __call__(self, module: torch.nn.Module, _args: Any) -> None:
        read = flatten(module)  # type: ignore[arg-type]  # hooked on the GPT being evaluated
        epsilon = sampler.noise(self.member, self.theta.numel(), self.theta.dtype)
        squares = wanted = along = noise_squares = 0.0
        for start in range(0, read.numel(), CHUNK):  # float64 work a piece at a time
            piece = slice(start, start + CHUNK)
            direction = epsilon[piece].double()
            moved = read[piece].double() - self.theta[piece].double()
            want = self.sigma * direction
            off = moved - want
            allowed = spacing(read[piece]).double() + 2 * spacing(want.to(self.theta.dtype)).double()
            self.outliers += int((off.abs() > allowed).sum())
            squares, wanted = squares + float(off.square().sum()), wanted + float(want.square().sum())
            along += float((moved * direction).sum())
            noise_squares += float(direction.square().sum())
        self.forwards += 1
        self.error = max(self.error, math.sqrt(squares / wanted))
        self.sigmas.append(along / noise_squares)

    @contextmanager
    def watching(self, model: GPT) -> Iterator[Reads]:
        """Record every forward of `model` inside the block."""
        handle = model.register_forward_pre_hook(self)
        try:
            yield self
        finally:
            handle.remove()


def evaluate_members(
    model: GPT,
    fitness: Fitness,
    theta: torch.Tensor,
    batch: torch.Tensor,
    members: list[Member],
    sigma: float,
) -> list[Evaluation]:
    """Each member's fitness on `batch`, its weights written into `model` (left holding the last)."""
    results = []
    for member in members:
        write_flat(model, theta + sigma * noise(member, theta.numel(), theta.dtype))
        with Reads(theta, member, sigma).watching(model) as reads, graph_free(), recording() as tape:
            value = fitness(model, batch)
            grad_enabled = torch.is_grad_enabled()
        if torch.is_tensor(value):
            graph, value = value.requires_grad or value.grad_fn is not None, value.detach()
        else:
            graph = False
        read = (reads.forwards, reads.outliers, reads.error, tuple(reads.sigmas))
        results.append(Evaluation(member, float(value), grad_enabled, graph, *read, tuple(tape)))
    return results


def grads_set(model: GPT, *tensors: torch.Tensor) -> int:
    """How many of the model's parameters and `tensors` hold a .grad."""
    return sum(t.grad is not None for t in (*model.parameters(), *tensors))


def graph_outcome(evaluations: list[Evaluation], grads: int) -> Outcome:
    """GATE-ES-001: of a step's evaluations, those with gradient recording on or a graph; .grads set."""
    measured = {
        "evaluations": len(evaluations),
        "grad_enabled": sum(e.grad_enabled for e in evaluations),
        "graph_outputs": sum(e.graph for e in evaluations),
        "grads_set": grads,
    }
    return measure("GATE-ES-001", measured, holds="no evaluation built an autograd graph")


@gate_require("GATE-ES-001", lambda evaluations, grads: graph_outcome(evaluations, grads))
def check_graph_free(evaluations: list[Evaluation], grads: int) -> None:
    """Judge a step's evaluations and the .grad of every parameter before θ is updated."""


def applied_outcome(evaluations: list[Evaluation], members: list[Member], sigma: float) -> Outcome:
    """GATE-ES-002's check applied: the weights every forward of every member read, and the
    evaluations in the population's order (the fitness at i is the member at i's, whose noise
    the estimate weights by it); and its check sigma: the σ every forward's weights were perturbed
    by, as read, against `sigma`, the one the run's settings (its record) state."""
    measured = {
        "evaluated_members": len(evaluations),
        "misplaced_members": sum(e.member != m for e, m in zip(evaluations, members, strict=False))
        + abs(len(evaluations) - len(members)),
        "unread_members": sum(e.forwards == 0 for e in evaluations),
        "perturbation_outliers": sum(e.outliers for e in evaluations),
        "perturbation_error": max((e.perturbation_error for e in evaluations), default=0.0),
        "sigma_read": [s for e in evaluations for s in e.sigma_read],
        "sigma_stated": sigma,
    }
    return measure("GATE-ES-002", measured, holds="each member was evaluated at θ + sign·σ·ε(seed)")


@gate_require("GATE-ES-002", lambda evaluations, members, sigma: applied_outcome(evaluations, members, sigma))
def check_applied(evaluations: list[Evaluation], members: list[Member], sigma: float) -> None:
    """Judge the weights a step's members were evaluated at, and the σ they were perturbed by
    against the stated `sigma`, before their fitness is used."""


def consumed_outcome(evaluations: list[Evaluation], batch: torch.Tensor, stated: Statement) -> Outcome:
    """GATE-ES-005: every evaluation's taped scorings against what the fitness states of `batch`
    (check consumed); for a fitness stated as the negated loss, the population loss the step logs
    against the mean of the losses its forwards computed (check logged)."""
    tally = Tally(batch.device)
    for evaluation in evaluations:
        tally.add(list(evaluation.consumed), stated.scorings(batch))
    measured = tally.measured(tally.counts.tolist())
    if stated.negated_loss:
        fitness = torch.tensor([e.fitness for e in evaluations], dtype=torch.float64)
        taped = [float(c.loss) for e in evaluations for c in e.consumed if c.loss is not None]
        forward = float(torch.tensor(taped, dtype=torch.float64).mean())
        measured |= {"logged_loss": -float(fitness.mean()), "forward_loss": finite_or_text(forward)}
    return measure("GATE-ES-005", measured, holds="every evaluation scored what the fitness states")


@gate_require("GATE-ES-005", lambda evaluations, batch, stated: consumed_outcome(evaluations, batch, stated))
def check_consumed(evaluations: list[Evaluation], batch: torch.Tensor, stated: Statement) -> None:
    """Judge what a step's evaluations read through the model's loss before their fitness is used."""


# -- where the members are evaluated ------------------------------------------------------------


class InProcess:
    """Every member evaluated in this process, on the run's own model."""

    def __init__(self, model: GPT, fitness: Fitness) -> None:
        self.model, self.fitness = model, fitness

    def evaluate(
        self, theta: torch.Tensor, batch: torch.Tensor, members: list[Member], sigma: float
    ) -> tuple[list[Evaluation], int]:
        """The members' evaluations and the count of .grad set on the model."""
        evaluations = evaluate_members(self.model, self.fitness, theta, batch, members, sigma)
        return evaluations, grads_set(self.model)

    def close(self) -> None:
        """Nothing to release."""


_worker: tuple[GPT, Fitness] | None = None


def _start_worker(model: bytes, fitness: Fitness) -> None:
    """A worker's own copy of the run's model, buffers included (its parameters are overwritten by
    every task), and the fitness. It ignores SIGINT and SIGTERM: a Ctrl-C reaches the whole process
    group, and the run's own process is the one that finishes the step, saves it and stops the pool.
    The worker was started with them blocked (`_stops_held`), so one that came while it started
    (unpickling this function's arguments imports torch: seconds) is discarded here, once they are
    ignored, instead of raising KeyboardInterrupt in it and leaving the pool without it."""
    global _worker
    for stop in STOP_SIGNALS:
        signal.signal(stop, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_UNBLOCK, STOP_SIGNALS)
    torch.set_num_threads(1)
    _worker = (pickle.loads(model).eval(), fitness)


def _evaluate_chunk(
    theta: torch.Tensor, batch: torch.Tensor, members: list[Member], sigma: float
) -> tuple[list[Evaluation], int]:
    assert _worker is not None, "the pool's initializer builds the worker's model"
    model, fitness = _worker
    return evaluate_members(model, fitness, theta, batch, members, sigma), grads_set(model)


@contextmanager
def _stops_held() -> Iterator[None]:
    """SIGINT and SIGTERM blocked in this thread for the block, then as they were: a worker process
    started in it inherits them blocked, until its initializer has set them ignored. One sent to
    this process meanwhile is delivered when the block ends."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        yield
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def _chunks(members: list[Member], count: int) -> Iterator[list[Member]]:
    """`members` in `count` contiguous runs of near-equal length (none empty)."""
    size, extra = divmod(len(members), count)
    start = 0
    for index in range(count):
        end = start + size + (index < extra)
        if end > start:
            yield members[start:end]
        start = end


class Pool:
    """The members split among worker processes, each with its own copy of the model."""

    def __init__(self, model: GPT, fitness: Fitness, workers: int) -> None:
        self.workers = workers
        self.executor = ProcessPoolExecutor(
            workers,
            mp_context=multiprocessing.get_context("spawn"),
            initializer=_start_worker,
            # The model whole (parameters, buffers, modules) as bytes: a copy of its own in each
            # worker. Handed over as a module, once torch.multiprocessing is imported anywhere in
            # this process its tensors travel as shared memory, and the workers wrote their members'
            # weights into the one model they all shared (and this process's): ± members scored alike.
            initargs=(pickle.dumps(model), fitness),
        )

    def evaluate(
        self, theta: torch.Tensor, batch: torch.Tensor, members: list[Member], sigma: float
    ) -> tuple[list[Evaluation], int]:
        """The members' evaluations, in population order, and the count of .grad set in the workers."""
        with _stops_held():  # the executor starts its workers as tasks are submitted
            futures = [
                self.executor.submit(_evaluate_chunk, theta, batch, chunk, sigma)
                for chunk in _chunks(members, self.workers)
            ]
        evaluations: list[Evaluation] = []
        grads = 0
        for future in futures:
            chunk_evaluations, chunk_grads = future.result()
            evaluations += chunk_evaluations
            grads += chunk_grads
        return evaluations, grads

    def close(self) -> None:
        """Stop the workers."""
        self.executor.shutdown()


def evaluator(model: GPT, fitness: Fitness, workers: int) -> InProcess | Pool:
    """In-process for one worker, else a pool of `workers` processes."""
    return InProcess(model, fitness) if workers == 1 else Pool(model, fitness, workers)
