"""The curriculum's rules that the run and the integrity check both apply, so they cannot drift apart.

Which phase serves an optimizer step, and the cap and floor a phase gives a source: the stack's
reader and mixture policy (stack.data.curriculum, stack.data.mixture) serve by them, and
contracts/derive/restated.py re-derives GATE-DATA-008 and GATE-DATA-009 from a record's config by
them. Phase 0 is the `[data]` mixture after step 0; each configured phase serves every step after
its `after_step`. A source a phase leaves unbounded has cap 1 and floor 0; an excluded one, 0 and 0.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

UNCAPPED, UNFLOORED = 1.0, 0.0


def phase_at(after_steps: Sequence[int], step: int) -> int:
    """The index of the phase serving optimizer step `step` (the first step is 1), given each
    phase's `after_step` in order (the first is 0)."""
    return max(i for i, after in enumerate(after_steps) if after < step)


def source_bounds(
    name: str, caps: Mapping[str, float], floors: Mapping[str, float], excluded: bool
) -> tuple[float, float]:
    """(cap, floor) of source `name` under a phase's caps and floors."""
    if excluded:
        return 0.0, 0.0
    return float(caps.get(name, UNCAPPED)), float(floors.get(name, UNFLOORED))
