"""How many batches a run's held-out set holds: the rule the loop's evaluation and its gates share.

`eval.batches` asks for a number; unset, the set holds GATE-EVAL-001's `min_heldout_batches`. A
held-out split of fewer windows than those batches hold is evaluated whole, one window a batch:
a few hundred fine-tuning examples hold out a few dozen windows, and every one of them narrows the
held-out loss's standard error, which GATE-EVAL-001 judges. The
stack's reader (stack.data.heldout) sizes the set by this rule, and GATE-EVAL-002's check asked holds
the batches every evaluation scored to it from the run's recorded config, at run time and in the
checker, so a consuming call that drops the setting (and falls back to the minimum) is seen.
"""

from __future__ import annotations


def heldout_set_batches(
    asked: int | None,
    min_heldout_batches: float,
    split_windows: int | None = None,
    batch_size: int | None = None,
) -> int:
    """The held-out set's batches for `eval.batches` = `asked` (None: unset), of a split of
    `split_windows` windows read `batch_size` at a time (None: the split holds the set)."""
    n = int(min_heldout_batches) if asked is None else int(asked)
    if split_windows is not None and batch_size is not None and split_windows < n * batch_size:
        return split_windows
    return n
