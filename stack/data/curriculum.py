"""Curriculum phases: which mixture serves which optimizer step, and the gate on when they switch.

Phase 0 is the `[data]` mixture and serves from the first step; each `[[data.phases]]` entry
serves every step after its `after_step` (after_step = 20000: steps 20001 on), until the next
phase begins. The post-mortem's fix was of this shape: chat and prose only for the first 20K
steps, everything after. A switch one step early or late is a different curriculum from the
one configured, so every step at which the phase changes, or should change, is judged
(GATE-DATA-009).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from contracts import curriculum as curriculum_rules
from contracts.gates import Outcome, gate_require, measure


@dataclass(frozen=True)
class Phase:
    """One mixture of the curriculum: weights, caps (max share), floors (min share) per source."""

    after_step: int
    weights: Mapping[str, float]
    caps: Mapping[str, float]
    floors: Mapping[str, float]


def phase_at(phases: Sequence[Phase], step: int) -> int:
    """The index of the phase serving optimizer step `step` (the first step is 1): the rule the
    integrity check re-derives GATE-DATA-009 by (contracts.curriculum)."""
    return curriculum_rules.phase_at([phase.after_step for phase in phases], step)


def _switch_outcome(step: int, phase: int, after_steps: list[int]) -> Outcome:
    measured = {"step": step, "phase": phase, "after_steps": after_steps}
    return measure("GATE-DATA-009", measured, step=step, holds=f"step {step} is served by phase {phase}")


@gate_require("GATE-DATA-009", _switch_outcome)
def check_phase(step: int, phase: int, after_steps: list[int]) -> None:
    """Refuse to serve `step` from another phase than the configured one."""
