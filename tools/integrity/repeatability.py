"""Does a record that says its run repeats itself carry the replay that shows it?

`stack train` sets `determinism.flags.repeatable` true only when the run's deterministic kernels
were in force at its first step and its replay (GATE-CKPT-003, stack/train/resume_check.py) held
bit for bit. A record can claim it any other way only by being written by hand or by a stack that
stamps the flag without checking (a record stamped before the run turns its deterministic
kernels on says they were off, whatever ran). The integrity check asks this of every record
(tools/integrity/record_checks.py).
"""

from __future__ import annotations

from typing import Any

from contracts.evidence import EvidenceRecord, Verdict
from contracts.replay import REPLAY_GATE


def repeatability_problems(record: EvidenceRecord) -> list[str]:
    """What is wrong with the record's repeatability claim, as sentences; [] when nothing is."""
    flags = record.determinism.flags
    replay = next((g for g in record.gates if g.id == REPLAY_GATE), None)
    measured: dict[str, Any] = (
        replay.measured if replay is not None and isinstance(replay.measured, dict) else {}
    )
    problems = []
    train = record.config.get("train") if isinstance(record.config, dict) else None
    setting = train.get("deterministic") if isinstance(train, dict) else None  # other kinds hold no setting
    if "bit_for_bit" in measured and setting is not None and measured["bit_for_bit"] is not setting:
        problems.append(
            f"{REPLAY_GATE} judged its replay with bit_for_bit={measured['bit_for_bit']}, but the run's "
            f"train.deterministic is {setting}"
        )
    if flags.get("repeatable") is not True:
        return problems
    claim = "claims its run repeatable"
    if setting is not True or flags.get("deterministic_algorithms") is not True:
        problems.append(f"{claim}, but deterministic kernels were not in force at its first step")
    if replay is None or replay.verdict is not Verdict.PASS:
        problems.append(f"{claim} without a passing {REPLAY_GATE} replay")
    elif not (measured.get("bit_for_bit") is True and isinstance(measured.get("replayed_steps"), int)):
        problems.append(f"{claim}, but {REPLAY_GATE} records no bit-for-bit replay of its steps")
    cost = record.metrics.get("repeatability")
    if not (isinstance(cost, dict) and isinstance(cost.get("seconds"), int | float)):
        problems.append(f"{claim}, but metrics.repeatability does not say what its replay cost")
    return problems
