"""Argument types shared by the sub-commands: each refuses a bad value while the command line is parsed.

A value that would only fail deep inside a run (a NaN temperature turning every probability into
NaN, a seed torch cannot hold, a device torch cannot parse) is refused here instead, before any
file is read, as argparse's one-line usage error (exit 2) naming the option, the value and the
range that would work. The commands share them, so the same option means the same thing and
fails the same way in each.
"""

from __future__ import annotations

import argparse
import math
from pathlib import Path
from typing import Any

from stack.outputs.destination import utf8_problem

SEED_MAX = 2**64 - 1  # torch.Generator.manual_seed takes an unsigned 64-bit seed
COUNT_MAX = 2**63 - 1  # torch's sizes are signed 64-bit; a larger count overflows inside it
# Logits are float32 (largest 3.4e38): divided by a temperature below this, or scaled by a
# repetition penalty outside FACTOR_RANGE, they overflow to inf and the sampling fails with NaN.
# Below it a temperature is greedy in all but name anyway.
MIN_TEMPERATURE = 1e-3
FACTOR_RANGE = (1e-3, 1e3)
# A learning rate or noise scale: float32 has 24 bits of mantissa, so a step below about 1e-8 of
# a weight near 1 rounds away; the bound leaves a decade of room below that.
STEP_RANGE = (1e-9, 1e3)
# A top-p below this keeps only the likeliest token whatever the vocabulary (up to a million ids),
# and one below float32's smallest number compares as 0, which keeps no token at all.
MIN_PROBABILITY = 1e-6


def _integer(text: str) -> int:
    """`text` as a whole number, or a usage error that says so."""
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None


def _number(text: str) -> float:
    """`text` as a finite number: NaN and infinity would poison the arithmetic downstream silently."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not math.isfinite(value):
        raise argparse.ArgumentTypeError(f"{text!r} is not a finite number")
    return value


def seed(text: str) -> int:
    """A random seed: a whole number torch's generators accept, 0 to 2**64 - 1."""
    value = _integer(text)
    if not 0 <= value <= SEED_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a seed from 0 to {SEED_MAX}")
    return value


def positive_int(text: str) -> int:
    """A count (tokens, batch size, bytes, top-k): at least 1, at most COUNT_MAX."""
    value = _integer(text)
    if value < 1:
        raise argparse.ArgumentTypeError(f"{value} must be at least 1")
    if value > COUNT_MAX:
        raise argparse.ArgumentTypeError(f"{value} is more than {COUNT_MAX}, the most torch can count")
    return value


def natural(text: str) -> int:
    """A count where 0 means none (tokens to sample after an ablation): 0 to COUNT_MAX."""
    value = _integer(text)
    if not 0 <= value <= COUNT_MAX:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a count from 0 to {COUNT_MAX}")
    return value


def temperature(text: str) -> float:
    """A sampling temperature: 0 means greedy decoding, else finite and at least MIN_TEMPERATURE."""
    value = _number(text)
    if value != 0 and value < MIN_TEMPERATURE:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; give 0 for greedy or a temperature of at least {MIN_TEMPERATURE}"
        )
    return value


def factor(text: str) -> float:
    """A factor the logits are scaled by (a repetition penalty): 0 or below would flip or zero them,
    and one outside FACTOR_RANGE would overflow them."""
    value = _number(text)
    low, high = FACTOR_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a factor from {low} to {high}")
    return value


def step_size(text: str) -> float:
    """A learning rate or noise scale: finite, from STEP_RANGE's low end to its high end.

    Fine-tuning a trained model by evolution strategies wants a σ and a rate well below 1e-3;
    below STEP_RANGE's low end an fp32 weight of order one no longer moves at all.
    """
    value = _number(text)
    low, high = STEP_RANGE
    if not low <= value <= high:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a step size from {low} to {high}")
    return value


def probability(text: str) -> float:
    """A probability mass to keep (top-p), from MIN_PROBABILITY to 1."""
    value = _number(text)
    if not MIN_PROBABILITY <= value <= 1:
        raise argparse.ArgumentTypeError(
            f"{value} is out of range; give a probability from {MIN_PROBABILITY} to 1"
        )
    return value


def fraction(text: str) -> float:
    """A mixing weight (distillation's α, DPO's label noise): from 0 to 1, both included."""
    value = _number(text)
    if not 0 <= value <= 1:
        raise argparse.ArgumentTypeError(f"{value} is out of range; give a weight from 0 to 1")
    return value


def device(text: str) -> str:
    """`cpu`, `cuda` or `cuda:N`, as written. Whether this machine has it is `absent_device`'s
    question, asked when the command runs: parsing a command line must not depend on the machine,
    or the integrity checker could not read a GPU machine's records on one without a GPU."""
    name, colon, index = text.partition(":")
    if name == "cpu" and not colon:
        return text
    if name != "cuda" or (colon and not (index.isascii() and index.isdigit())):
        raise argparse.ArgumentTypeError(f"{text!r} is not a device; use cpu, cuda or cuda:N")
    return text


def absent_device(name: object) -> str | None:
    """Why this machine cannot run on the CUDA device `name`, or None: None for cpu, auto or no
    --device at all. `stack.cli` asks before the command starts, so before a checkpoint is loaded."""
    if not isinstance(name, str) or not name.startswith("cuda"):
        return None
    import torch

    count = torch.cuda.device_count() if torch.cuda.is_available() else 0
    if count == 0:
        return f"{name!r}: this machine has no CUDA device; use cpu"
    index = name.partition(":")[2]
    if index and int(index) >= count:
        return f"{name!r}: this machine has cuda:0 to cuda:{count - 1}"
    return None


def _not_utf8_at(text: str) -> int | None:
    """Where `text` holds bytes that are not UTF-8, or None.

    Python hands argv bytes that do not decode as lone surrogates; text holding them cannot be
    encoded for the model or written into a JSON record, so it fails later, after the work.
    """
    try:
        text.encode("utf-8")
    except UnicodeEncodeError as exc:
        return exc.start
    return None


def utf8_text(text: str) -> str:
    """Text from the command line (a prompt) that is valid UTF-8."""
    at = _not_utf8_at(text)
    if at is not None:
        raise argparse.ArgumentTypeError(
            f"holds bytes that are not UTF-8 (at character {at}); pass UTF-8 text"
        )
    return text


def utf8_path(text: str) -> Path:
    """A path with a UTF-8 name, for a command that names it in its JSON evidence record.

    Such a name is a valid path on Linux, but the record could not hold it as it is.
    """
    problem = utf8_problem(text)  # the rule of every output's name (stack.outputs.destination)
    if problem is not None:
        raise argparse.ArgumentTypeError(f"{text!r} {problem}")
    return Path(text)


class NoteGiven(argparse.Action):
    """Store the option's value and note in `namespace.given` that it was typed: an option with a
    default is then told apart from one left out, whatever value was typed (`stack dpo --steps`
    beside a `--set train.steps`; a corpus-only `stack prepare` option typed with a fine-tuning
    --format, even at its default)."""

    def __call__(self, parser: Any, namespace: argparse.Namespace, value: Any, option: Any = None) -> None:
        setattr(namespace, self.dest, value)
        namespace.given = {*getattr(namespace, "given", ()), self.dest}


def given(args: argparse.Namespace) -> set[str]:
    """The destinations of the NoteGiven options the command line typed."""
    return set(getattr(args, "given", ()))
