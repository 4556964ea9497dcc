"""What the derivations of a training loop's records read and settle with: the metrics log,
parsed, and the settler that settles a gate's outcomes as the run's ledger does.

Both the loop's derivations (contracts/derive/training.py) and the values a record restates from
its config (contracts/derive/restated.py) use them, so they stand below both.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from contracts.derive.base import Derivation, Inputs
from contracts.evidence import GateResult, Verdict
from contracts.judges import judge
from contracts.ledger import settle


@dataclass
class Log:
    """metrics.jsonl, parsed: its lines by type, in order."""

    steps: list[dict[str, Any]] = field(default_factory=list)
    evals: list[dict[str, Any]] = field(default_factory=list)
    samples: list[dict[str, Any]] = field(default_factory=list)
    events: list[dict[str, Any]] = field(default_factory=list)
    lines: list[dict[str, Any]] = field(default_factory=list)  # every line, of every type, in order

    @property
    def last_step(self) -> int:
        return int(self.steps[-1].get("step", 0)) if self.steps else 0


class Settler:
    """Settles one gate's outcomes as the run's ledger does, and hands the result to the derivation."""

    def __init__(self, inputs: Inputs, derived: Derivation) -> None:
        self.inputs, self.derived = inputs, derived
        self.waived = {w.gate for w in inputs.record.waivers}

    def wanted(self, gate_id: str) -> bool:
        """A gate is derived when the spec has it, the record's verdict is not stale, and the gate
        is not younger than the record's spec (a record cannot have judged a gate that came later)."""
        spec, version = self.inputs.spec, self.inputs.record.spec.version
        return (
            gate_id in spec.gates
            and gate_id not in self.inputs.stale
            and spec.introduced_after(gate_id, version) is None
        )

    def run(self, gate_id: str, outcomes: Iterable[tuple[dict[str, Any], int | None]]) -> GateResult | None:
        """The settled result over `outcomes` ((measured, step) in the order the loop judged them)."""
        spec, result = self.inputs.spec, None
        thresholds = spec.gates[gate_id].threshold_values
        waived = gate_id in self.waived
        for measured, step in outcomes:
            ok = not judge(gate_id, measured, thresholds)
            result = settle(spec, gate_id, result, measured, ok, waived, step) or result
        return result

    def derive(
        self,
        gate_id: str,
        outcomes: Iterable[tuple[dict[str, Any], int | None]],
        exact: bool = True,
        optional: bool = False,
        last: bool = False,
    ) -> None:
        """Derive `gate_id` from its outcomes: the settled verdict, step and each measured key.

        `exact` says the outcomes are every check the gate makes; otherwise the verdict derived is
        a floor (a check the log does not hold may have fired too). `last` says no check the log
        does not hold runs after the last step its outcomes reach, so a gate that passed every
        check was settled at that step (a record no worse than the floor passed them all).
        """
        if not self.wanted(gate_id):
            return
        result = self.run(gate_id, outcomes)
        if result is None:
            return
        self.derived.verdict(gate_id, result.verdict, exact)
        assert isinstance(result.measured, dict)
        self.derived.gate(gate_id, result.measured, optional)
        if exact or (last and result.verdict is Verdict.PASS):
            self.derived.put(("gates", gate_id, "step"), result.step, optional)
