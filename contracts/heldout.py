"""How many batches a run's held-out set holds: the rule the loop's evaluation and its gates share.

`eval.batches` asks for a number; unset, the set holds GATE-EVAL-001's `min_heldout_batches`. The
stack's reader (stack.data.heldout) sizes the set by this rule, and GATE-EVAL-002's check asked holds
the batches every evaluation scored to it from the run's recorded config, at run time and in the
checker, so a consuming call that drops the setting (and falls back to the minimum) is seen.
"""

from __future__ import annotations


def heldout_set_batches(asked: int | None, min_heldout_batches: float) -> int:
    """The held-out set's batches for `eval.batches` = `asked` (None: unset)."""
    return int(min_heldout_batches) if asked is None else int(asked)
