"""How a run's held-out set is shaped: the rule the loop's evaluation and its gates share.

`eval.batches` asks for a number; unset, the set holds GATE-EVAL-001's `min_heldout_batches`. A
held-out split of fewer windows than those batches hold is evaluated whole, one window a batch:
a few hundred fine-tuning examples hold out a few dozen windows, and every one of them narrows the
held-out loss's standard error, which GATE-EVAL-001 judges. A set drawn from a larger split that
lands on the split's own copies (a document or example written twice is held out with its first)
is read one window a batch as well, the same windows: GATE-EVAL-001 holds a set to as many
distinct windows as `min_heldout_batches` of its batches read, so a set of batches of several
windows would be refused for the data's copies, and one of single windows is held to
`min_heldout_batches` distinct ones. The stack's reader (stack.data.heldout) shapes the set by this
rule, and GATE-EVAL-002's check asked holds the batches every evaluation scored to it from the
run's recorded config, at run time and in the checker, so a consuming call that drops the setting
(and falls back to the minimum) is seen.
"""

from __future__ import annotations


def distinct_windows_needed(batches: int, batch_size: int, min_heldout_batches: float) -> int:
    """The distinct windows GATE-EVAL-001 holds a set of `batches` batches of `batch_size` to: as
    many as its batches read, up to `min_heldout_batches` batches' worth (text that repeats itself
    may repeat windows beyond that)."""
    return min(batches, int(min_heldout_batches)) * batch_size


def heldout_set_shape(
    asked: int | None,
    min_heldout_batches: float,
    split_windows: int | None = None,
    batch_size: int | None = None,
    distinct_windows: int | None = None,
) -> tuple[int, int | None]:
    """(batches, windows a batch) of the held-out set for `eval.batches` = `asked` (None: unset), of
    a split of `split_windows` windows read `batch_size` at a time (None: the split holds the set),
    whose windows, drawn at that batch size, hold `distinct_windows` distinct ones (None: no
    copies among them)."""
    n = int(min_heldout_batches) if asked is None else int(asked)
    if split_windows is None or batch_size is None:
        return n, batch_size
    if split_windows < n * batch_size:
        return split_windows, 1
    copies = distinct_windows is not None and batch_size > 1
    if copies and distinct_windows < distinct_windows_needed(n, batch_size, min_heldout_batches):
        return n * batch_size, 1
    return n, batch_size


def heldout_set_batches(
    asked: int | None,
    min_heldout_batches: float,
    split_windows: int | None = None,
    batch_size: int | None = None,
    distinct_windows: int | None = None,
) -> int:
    """The held-out set's batches (`heldout_set_shape`)."""
    return heldout_set_shape(asked, min_heldout_batches, split_windows, batch_size, distinct_windows)[0]
