"""The ways a gatestack command ends other than done, each with its own exit code.

`BadInput` (exit 2) is the user's to fix: a missing file, a bad key, an unknown gate id.
`GateViolation` (exit 3) is a gate that fired: the run or artefact broke a rule of the spec.
`Interrupted` (exit 128 + the signal's number: 130 for Ctrl-C's SIGINT, 143 for SIGTERM) is a
signal that stopped the command: an interrupted run is not a completed one, whatever it saved.
Each prints as one line; the CLI never shows a traceback for any.
"""

from __future__ import annotations

import signal
from typing import Any

EXIT_OK = 0
EXIT_BAD_INPUT = 2
EXIT_GATE = 3
EXIT_SIGNALLED = 128  # plus the signal's number, as a shell reports a process a signal ended
# The signals that ask a command to stop, each ending it with its own status.
STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)


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


class Interrupted(KeyboardInterrupt):
    """A signal stopped the command: Ctrl-C (SIGINT) or a scheduler's SIGTERM.

    A KeyboardInterrupt, so every `except Exception` lets it through to the CLI, which ends the
    command with one line and status 128 + the signal's number (130, 143), never 0: `stack train
    ... && stack export ...` must not go on from a half-trained model. `detail` says what was kept
    and how to continue ("stopped at step 40, saved in step-0000040; continue with --resume RUN").
    """

    def __init__(self, signal_name: str, detail: str | None = None) -> None:
        self.signal_name = signal_name
        self.detail = detail
        super().__init__(signal_name if detail is None else f"{signal_name}: {detail}")

    @property
    def exit_code(self) -> int:
        return EXIT_SIGNALLED + int(signal.Signals[self.signal_name])


def interrupted_by(code: int) -> str | None:
    """The stop signal (STOP_SIGNALS) an exit status says ended a command: 130 or 143 as the CLI
    returns it, -2 or -15 as Python reports a child a signal ended; None for any other status."""
    number = -code if code < 0 else code - EXIT_SIGNALLED
    return next((s.name for s in STOP_SIGNALS if int(s) == number), None)
