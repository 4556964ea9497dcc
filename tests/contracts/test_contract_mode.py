"""The default contract mode, as a user gets it: without the FULL mode tests/conftest.py sets.

Every other test runs with GATESTACK_CONTRACTS=full, so nothing there shows what a plain
`stack train` runs under. These tests start a fresh interpreter with the variable removed.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from contracts.gates import MODE_ENV, Mode

ROOT = Path(__file__).resolve().parents[2]

# A boundary-level gate fed a NaN loss: GATE-TRAIN-003's finite check before the optimizer step.
PROBE = """
from contracts.errors import GateViolation
from contracts.gates import contract_mode
from stack.train.guards import check_finite

print(contract_mode().value)
try:
    check_finite(float("nan"), 1.0, 1)
except GateViolation as exc:
    print(exc.gate_id)
"""


def run_without_mode(code: str) -> list[str]:
    """Run `code` in a fresh interpreter whose environment has no GATESTACK_CONTRACTS; its stdout lines."""
    env = {name: value for name, value in os.environ.items() if name != MODE_ENV}
    proc = subprocess.run(
        [sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, check=False
    )
    assert proc.returncode == 0, proc.stderr
    return proc.stdout.split()


def test_the_default_mode_is_boundary_and_its_gates_fire() -> None:
    """The probe runs in a fresh interpreter, beyond the reach of a gate forced off in this one, so
    this shows the mode, not GATE-TRAIN-003 (whose falsifiers are in tests/train/test_train_gates.py)."""
    assert run_without_mode(PROBE) == [Mode.BOUNDARY.value, "GATE-TRAIN-003"]
