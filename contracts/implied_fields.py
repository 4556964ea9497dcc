"""Measured values of one gate that imply each other, held together wherever a record states both.

A gate's judge reads some values as a conclusion and others as the measurements behind it:
GATE-CKPT-003's `bit_for_bit` says its replay was held to exact equality, so a replayed loss that
moved is a mismatch it lists (and fails on), and a loss it lists moved: its largest loss
difference is 0 exactly when it lists none; a logit identity's differing elements are among the
elements compared. A judge reads the list and passes; a record edited to state one side alone
(bit for bit, nothing listed, beside a loss that moved) is a claim its own measurements deny. The
integrity check asks these of every gate result of every record (tools/record_checks.py), and the
run-time writers make them so by construction (stack/train/resume_check.py).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from contracts.evidence import EvidenceRecord

Measured = dict[str, Any]


@dataclass(frozen=True)
class Implication:
    """Of gate `gate`'s measured values: a result stating every one of `keys` `holds`; `says` why not."""

    gate: str
    keys: tuple[str, ...]  # the values it reads: it is asked only of a result that states them all
    holds: Callable[[Measured], bool]
    says: Callable[[Measured], str]


def _is_zero(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool) and value == 0


def _names_a_loss(m: Measured) -> bool:
    """Whether a replay's mismatches name a step's loss (`step N loss`, stack/train/resume_check.py)."""
    listed = m.get("replay_mismatched")
    return isinstance(listed, list) and any(str(item).endswith(" loss") for item in listed)


def _counted_within(part: str, whole: str) -> Callable[[Measured], bool]:
    def holds(m: Measured) -> bool:
        inner, outer = m.get(part), m.get(whole)
        return isinstance(inner, int) and isinstance(outer, int) and 0 <= inner <= outer

    return holds


# The gates whose judge holds an identity of logits exact: their differing elements are a count of
# the elements they compared.
LOGIT_IDENTITIES = ("GATE-LENS-001", "GATE-LENS-005", "GATE-PATCH-001", "GATE-PATCH-002")

IMPLICATIONS: tuple[Implication, ...] = (
    Implication(
        "GATE-CKPT-003",
        ("bit_for_bit", "max_loss_rel_diff", "replay_mismatched"),
        lambda m: m["bit_for_bit"] is not True or _is_zero(m["max_loss_rel_diff"]) != _names_a_loss(m),
        lambda m: (
            f"held its replay bit for bit with a largest replayed loss difference of "
            f"{m['max_loss_rel_diff']!r}, but lists {m['replay_mismatched']!r} as differing: a loss "
            "that moved is a mismatch it names, and one it names moved"
        ),
    ),
    *(
        Implication(
            gate,
            ("differing_elements", "elements"),
            _counted_within("differing_elements", "elements"),
            lambda m: f"counts {m['differing_elements']!r} differing of {m['elements']!r} elements compared",
        )
        for gate in LOGIT_IDENTITIES
    ),
)


def implied_problems(record: EvidenceRecord) -> list[str]:
    """Sentences for every gate result of `record` whose measured values deny each other."""
    problems = []
    for result in record.gates:
        measured = result.measured if isinstance(result.measured, dict) else {}
        for rule in IMPLICATIONS:
            if rule.gate == result.id and all(k in measured for k in rule.keys) and not rule.holds(measured):
                problems.append(f"{result.id} {rule.says(measured)}")
    return problems
