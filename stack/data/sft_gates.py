"""The supervision gates of fine-tuning data, measured on the arrays a run actually reads.

Labels: one uint32 per token, `example * 2 + supervised`, where `example` numbers the examples
of a shard from 1 and 0 marks the padding that fills a packed window. GATE-SFT-001 is judged on
(tokens, labels) at prepare, before anything is written, and again by the reader of every
training run on the files it maps; GATE-SFT-002 on the marker counts of the rendering.
"""

from __future__ import annotations

import numpy as np

from contracts.gates import Outcome, gate_require, measure


def examples_of(labels: np.ndarray) -> np.ndarray:
    """The example number of each token (0: padding)."""
    return np.asarray(labels) >> 1


def supervised_of(labels: np.ndarray) -> np.ndarray:
    """Whether each token is a supervised target."""
    return (np.asarray(labels) & 1).astype(bool)


def supervision_outcome(tokens: np.ndarray, labels: np.ndarray, eos_id: int) -> Outcome:
    """GATE-SFT-001's measurement: per example, supervised tokens, and EOS ids left unsupervised."""
    example = examples_of(labels).astype(np.int64)
    supervised = supervised_of(labels)
    eos = np.asarray(tokens) == eos_id
    real = example > 0
    n = int(example.max(initial=0)) + 1
    per_example = np.bincount(example[real], weights=supervised[real], minlength=n)[1:]
    eos_count = np.bincount(example[real], weights=eos[real], minlength=n)[1:]
    present = np.bincount(example[real], minlength=n)[1:] > 0
    per_example, eos_count = per_example[present], eos_count[present]
    fewest = int(per_example.min()) if per_example.size else 0
    measured = {
        "examples": int(present.sum()),
        "fewest_supervised_tokens": fewest,
        "first_example_fewest": int(np.flatnonzero(present)[per_example.argmin()] + 1)
        if present.any()
        else 0,
        "examples_without_eos": int((eos_count == 0).sum()),
        "unsupervised_eos": int((eos[real] & ~supervised[real]).sum()),
    }
    return measure("GATE-SFT-001", measured, holds="every example is supervised, its EOS included")


@gate_require("GATE-SFT-001", lambda tokens, labels, eos_id: supervision_outcome(tokens, labels, eos_id))
def check_supervision(tokens: np.ndarray, labels: np.ndarray, eos_id: int) -> None:
    """Refuse data in which an example teaches nothing, or never teaches the model to stop."""


def markers_outcome(assistant_turns: int, markers_missing: int) -> Outcome:
    """GATE-SFT-002's measurement: assistant turns whose marker ids the tokenized text did not hold."""
    measured = {"assistant_turns": assistant_turns, "markers_missing": markers_missing}
    return measure("GATE-SFT-002", measured, holds=f"the marker was found in all {assistant_turns} turns")


@gate_require(
    "GATE-SFT-002", lambda assistant_turns, markers_missing: markers_outcome(assistant_turns, markers_missing)
)
def check_markers(assistant_turns: int, markers_missing: int) -> None:
    """Refuse a template whose assistant marker is lost in tokenization: an error, never a dropped example."""
