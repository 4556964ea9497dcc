"""Counts a gate states that follow from a code rule over other numbers the record states.

The stack measures each of these where the bug acts (a tensor's shape, a forward counted by a hook);
the checker derives them again from the numbers beside them with these functions, so a record that
restates one is named (contracts.derive.training).
"""

from __future__ import annotations


def isolation_positions(width: int) -> int:
    """GATE-SFT-003's `positions_compared`: the second half of a window of `width` tokens split at its
    middle (stack.train.sft_objective.isolation_outcome compares the logits from width // 2 on)."""
    return width - width // 2


def pad_appended(wanted: int, room: int) -> int:
    """GATE-DPO-003's `appended`: the spec's probe_pad_tokens, as far as the context's room allows
    (stack.tune.dpo.padding_probe)."""
    return min(wanted, room)


def heldout_windows(batches: int, batch_size: int) -> int:
    """The held-out windows a lens fit reads: `heldout_batches` batches of `batch_size` windows."""
    return batches * batch_size


def teacher_forwards_at_least(steps: int, grad_accum: int) -> int:
    """The fewest teacher forwards GATE-KD-002's watch can count: DistillObjective.loss runs the
    teacher once per micro-step, `grad_accum` of them a step (held-out evaluations and probes add
    more)."""
    return steps * grad_accum


def least_max_gap(first_id: int, last_id: int, windows: int) -> int:
    """The smallest largest gap `windows` increasing window ids from `first_id` to `last_id` can leave:
    their windows − 1 gaps add up to last_id − first_id, so the largest is at least the mean, rounded
    up (GATE-DATA-005's max_gap; stack.data.heldout spreads the ids evenly)."""
    return -(-(last_id - first_id) // (windows - 1))
