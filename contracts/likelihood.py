"""The summed negative log-likelihood of scored targets, from the logits a forward handed its loss,
and bits per byte: that sum over the UTF-8 bytes of the text scored.

An evaluation matrix's row states its bits per byte from each completion's summed NLL
(stack.eval.completion), and `stack eval` its score from the NLL summed over every window of the
text (stack.eval.bpb); a mean where the sum belongs divides the score by a length, and a number
computed from the code under test shares its bugs. GATE-FT-002's check nll and GATE-EVAL-003's
check nll hold the stated NLL to the sum computed here, apart from the stack's loss: float64
log-softmax of the taped logits, read at each taped target, over every position scored.

The denominator is the text's UTF-8 bytes, counted here (`utf8_bytes`) of the text the scored
tokens decode to: a count of characters for bytes makes accented completions 17 % worse per byte
and passes every other gate (GATE-FT-002's check bytes, GATE-EVAL-003's check nll catch it).
`bits_per_byte_of` is the one formula of bits per byte, for the stack, the judges and the checker alike.

Which positions a text's score must sum is stated here too: of a text of N tokens, every position
1..N−1 once (the first has no context). GATE-EVAL-003 compares the sha256 of the positions the sum
took (`positions_sha256`, in ascending order) with `predicted_positions_sha256(N)`, and the checker
derives the latter again from the token count the record states (a record that restates both
digests alike agrees with itself and with nothing else).

torch is loaded only to recompute a sum: the judges read `bits_per_byte_of`, and a prepare loads
them without torch.
"""

from __future__ import annotations

import hashlib
import math
from collections.abc import Iterable
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import torch


def summed_nll(logits: torch.Tensor, targets: torch.Tensor) -> float:
    """−Σ log p(target) in nats over every position whose target is not −1 (logits (…, T, vocab),
    targets (…, T)), in float64."""
    import torch

    log_p = torch.log_softmax(logits.double(), dim=-1)
    scored = targets >= 0
    picked = log_p[scored].gather(-1, targets[scored].long()[:, None])
    return float(-picked.sum())


def utf8_bytes(text: str) -> int:
    """The bytes a score of `text` divides by: its UTF-8 encoding's length, not its characters."""
    return len(text.encode("utf-8"))


def bits_per_byte_of(total_nll_nats: float, n_bytes: int) -> float:
    """Bits per byte of a text whose UTF-8 bytes number `n_bytes` (GATE-EVAL-003's denominator)."""
    if n_bytes <= 0:
        raise ValueError("bits per byte of an empty text is undefined")
    return total_nll_nats / math.log(2) / n_bytes


def positions_sha256(positions: Iterable[int] | np.ndarray) -> str:
    """sha256 of token positions as 8-byte little-endian integers, in the order given."""
    return hashlib.sha256(np.asarray(positions, dtype="<i8").tobytes()).hexdigest()


def predicted_positions_sha256(tokens: int) -> str:
    """`positions_sha256` of the positions a score of a text of `tokens` tokens predicts: 1..tokens−1."""
    return positions_sha256(np.arange(1, max(tokens, 1), dtype="<i8"))
