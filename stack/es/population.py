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

import multiprocessing
import pickle
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from contextlib import AbstractContextManager
from dataclasses import dataclass
from typing import Any

import torch

from contracts.gates import Outcome, gate_require, measure
from stack.es.noise import Member, noise
from stack.model.gpt import GPT

Fitness = Callable[[GPT, torch.Tensor], torch.Tensor | float]


def lm_fitness(model: GPT, batch: torch.Tensor) -> torch.Tensor:
    """The negative mean cross-entropy of next-token prediction on `batch` (B, T + 1)."""
    _, loss = model(batch[:, :-1], batch[:, 1:])
    assert loss is not None  # targets were given
    return -loss


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
    """One member's fitness, and what GATE-ES-001 asks of how it was computed."""

    fitness: float
    grad_enabled: bool
    graph: bool


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
        with graph_free():
            value = fitness(model, batch)
            grad_enabled = torch.is_grad_enabled()
        if torch.is_tensor(value):
            graph, value = value.requires_grad or value.grad_fn is not None, value.detach()
        else:
            graph = False
        results.append(Evaluation(float(value), grad_enabled, graph))
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
    every task), and the fitness."""
    global _worker
    torch.set_num_threads(1)
    _worker = (pickle.loads(model).eval(), fitness)


def _evaluate_chunk(
    theta: torch.Tensor, batch: torch.Tensor, members: list[Member], sigma: float
) -> tuple[list[Evaluation], int]:
    assert _worker is not None, "the pool's initializer builds the worker's model"
    model, fitness = _worker
    return evaluate_members(model, fitness, theta, batch, members, sigma), grads_set(model)


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
