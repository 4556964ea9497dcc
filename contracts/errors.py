"""The two ways a gatestack command ends badly, each with its own exit code.

`BadInput` (exit 2) is the user's to fix: a missing file, a bad key, an unknown gate id.
`GateViolation` (exit 3) is a gate that fired: the run or artefact broke a rule of the spec.
Both print as one line; the CLI never shows a traceback for either.
"""

from __future__ import annotations

from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_GATE = 3


class BadInput(Exception):
    """Input the user can fix; the message names the problem and the fix in one line."""

    exit_code = EXIT_BAD_INPUT


class GateViolation(Exception):
    """A gate of the spec fired.

    Carries what a reader of the evidence needs: which gate, under which revision of its rule,
    what was measured and against which threshold.
    """

    exit_code = EXIT_GATE

    def __init__(
        self,
        gate_id: str,
        revision: int,
        message: str,
        measured: Any = None,
        threshold: Any = None,
    ) -> None:
        self.gate_id = gate_id
        self.revision = revision
        self.message = message
        self.measured = measured
        self.threshold = threshold
        super().__init__(str(self))

    def __str__(self) -> str:
        detail = ""
        if self.measured is not None or self.threshold is not None:
            detail = f" (measured {self.measured!r}, threshold {self.threshold!r})"
        return f"{self.gate_id} rev {self.revision}: {self.message}{detail}"
