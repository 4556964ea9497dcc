"""GATE-CKPT-003 at run time: a resume restores every state, and the steps a run takes repeat.

A resume that forgets one piece (the RNG, a monitor's streak, the loss scale, the optimizer's
moments) still trains, and drifts from the uninterrupted run without a word. The falsifier tests
prove the whole resume bit-exact on CPU; `check_restored` runs on every real resume and compares,
by digest, what the trainer now holds with what the checkpoint says it should hold.

A restore that is exact does not make the steps after it repeat: on a GPU a kernel that sums with
atomics gives other gradients each time it runs, so "resume is exact" would be a claim about a
run that does not repeat itself. `check_replay` judges what the steps did: the loop rehearses the
first train.replay_steps steps of an invocation from a checkpoint of its start, puts every state
back, takes the same steps for real, and this compares the two: every logged number and hash of
each step and the weights and optimizer state at the end, bit for bit under
train.deterministic; with it off, the batches and schedule exactly and each loss within the
spec's nondeterministic_loss_rtol (a run that is not deterministic is not claimed repeatable, but
its noise is measured and bounded, never silent).
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from safetensors.torch import load_file

from contracts.evidence import canonical_sha256
from contracts.gates import Outcome, gate_require, measure
from stack.train import checkpoint as ckpt


def tensors_digest(tensors: dict[str, torch.Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of a set of tensors, in name order. The bytes are
    hashed where they lie on the host (a tensor's buffer, not a copy of it as `bytes`): the state a
    step leaves at `gpt2` is 1.3 GB, which a copy would double in memory."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        tensor = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{tensor.dtype}|{tuple(tensor.shape)}|".encode())
        if tensor.numel():
            digest.update(tensor.reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def state_comparisons(
    checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]
) -> tuple[list[str], list[str]]:
    """(compared, mismatched): each live state's digest against the checkpoint's.

    `live` maps a state name to a function returning the trainer's current value. "model" and
    "optimizer" return tensor dicts, compared with the checkpoint's safetensors files (tensor by
    tensor under the file's names: tied weights are stored once); the others return JSON values
    compared with the same key of state.json.
    """
    compared, mismatched = [], []
    for name, current in live.items():
        if name in ("model", "optimizer"):
            saved = load_file(str(checkpoint.path / f"{name}.safetensors"))
            now = current()
            same = saved.keys() <= now.keys() and tensors_digest(saved) == tensors_digest(
                {key: now[key] for key in saved}
            )
        else:
            same = canonical_sha256(checkpoint.state[name]) == canonical_sha256(current())
        compared.append(name)
        if not same:
            mismatched.append(name)
    return compared, mismatched


def _outcome(checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]) -> Outcome:
    compared, mismatched = state_comparisons(checkpoint, live)
    measured = {"checkpoint": checkpoint.path.name, "compared": compared, "mismatched": mismatched}
    return measure(
        "GATE-CKPT-003", measured, step=checkpoint.step, holds="every restored state is the saved one"
    )


@gate_require("GATE-CKPT-003", _outcome)
def check_restored(checkpoint: ckpt.Checkpoint, live: dict[str, Callable[[], Any]]) -> None:
    """Refuse to go on from a resume whose restored states differ from the checkpoint's."""


# Keys of a step's metrics line a replay must reproduce whatever kernels ran: its place in the run,
# the schedule and the batch; every other key is a number the kernels computed, except its speed.
BOOKKEEPING = ("step", "epoch", "lr", "batch_sha256")
UNTIMED = ("tokens_per_s",)


def end_state(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> dict[str, str]:
    """Digests of the weights and the optimizer state: what two runs of the same steps must share."""
    return {
        "model": tensors_digest(model.state_dict()),
        "optimizer": tensors_digest(ckpt.optimizer_tensors(optimizer)[0]),
    }


def state_digest(model: torch.nn.Module, optimizer: torch.optim.Optimizer) -> str:
    """One sha256 of the weights and the optimizer state a step left (contracts.replay.STATE_KEY):
    logged on the step's line, so a replay compares what the step changed, not only what it printed."""
    digests = end_state(model, optimizer)
    return hashlib.sha256(f"{digests['model']}|{digests['optimizer']}".encode()).hexdigest()


@dataclass(frozen=True)
class Rehearsal:
    """The first steps of an invocation as the rehearsal took them, before every state was put back:
    their metrics lines, the end state's digests, and the seconds the rehearsal cost in all."""

    lines: list[dict[str, Any]]
    end: dict[str, str]
    seconds: float


def relative_difference(a: float, b: float) -> float:
    """|a - b| / max(|a|, |b|); 0 for two zeros, NaN when either is not finite."""
    if not (math.isfinite(a) and math.isfinite(b)):
        return math.nan
    scale = max(abs(a), abs(b))
    return abs(a - b) / scale if scale else 0.0


def replay_measured(
    rehearsal: Rehearsal, taken: list[dict[str, Any]], end: dict[str, str], bit_for_bit: bool
) -> dict[str, Any]:
    """GATE-CKPT-003's measurement of a replay: what was compared, what differed, the largest loss gap.

    Bit for bit, every key of every line (but the step's speed) and both end digests must match;
    otherwise only the bookkeeping must, and the losses are judged by their relative difference.
    """
    mismatched: list[str] = []
    keys: set[str] = set()
    for replayed, took in zip(rehearsal.lines, taken, strict=True):
        compared = sorted((set(replayed) | set(took)) - set(UNTIMED))
        keys.update(compared)
        exact = compared if bit_for_bit else [k for k in compared if k in BOOKKEEPING]
        mismatched += [f"step {took['step']} {k}" for k in exact if replayed.get(k) != took.get(k)]
    if bit_for_bit:
        mismatched += [name for name in sorted(end) if rehearsal.end.get(name) != end[name]]
    gaps = [relative_difference(a["loss"], b["loss"]) for a, b in zip(rehearsal.lines, taken, strict=True)]
    first, last = taken[0]["step"], taken[-1]["step"]
    return {
        "replayed_steps": len(taken),
        "bit_for_bit": bit_for_bit,
        "replay_compared": [
            f"steps {first}-{last}: {', '.join(sorted(keys))}",
            *(sorted(end) if bit_for_bit else []),
        ],
        "replay_mismatched": mismatched,
        "max_loss_rel_diff": max(gaps) if gaps else 0.0,
    }


def _replay_outcome(
    rehearsal: Rehearsal, taken: list[dict[str, Any]], end: dict[str, str], bit_for_bit: bool
) -> Outcome:
    measured = replay_measured(rehearsal, taken, end, bit_for_bit)
    return measure(
        "GATE-CKPT-003",
        measured,
        step=taken[-1]["step"],
        holds=f"{len(taken)} step(s) replayed from the start state "
        + ("bit for bit" if bit_for_bit else "within tolerance (train.deterministic=false)"),
    )


@gate_require("GATE-CKPT-003", _replay_outcome)
def check_replay(
    rehearsal: Rehearsal, taken: list[dict[str, Any]], end: dict[str, str], bit_for_bit: bool
) -> None:
    """Refuse to go on from steps that the same state and batches did not reproduce."""
