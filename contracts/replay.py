"""How many steps a training run replays to show it repeats itself (GATE-CKPT-003).

At the start of each invocation the loop rehearses its next steps, puts every state back by the
resume's own path and takes them again (stack.train.loop.Trainer.rehearse, judge_replay). How many
is a setting, not a measurement: `train.replay_steps` where the config sets it, else REPLAY_STEPS
on CUDA in one process (where kernels may not repeat) and none elsewhere. The loop plans its replay
by `replay_plan`, and the checker holds what a record says its replay did to the same plan: a run
that planned none cannot have replayed a step, nor shown that it repeats.
"""

from __future__ import annotations

# The key of a step line that holds the sha256 of the weights and optimizer state the step left
# (stack.train.resume_check.state_digest). Printed values can stay put while the weights move:
# a weight perturbed by 5e-8 leaves a loss printed to float precision unchanged for steps, so a
# replay that compared only the printed values would call it bit for bit.
STATE_KEY = "state_sha256"
# A run's first steps log their state digest: the steps `check_integrity --replay` takes by
# default. The steps an invocation replays at run time (`replay_plan`) log it too.
DIGESTED_STEPS = 5
# The gate that judges the replay.
REPLAY_GATE = "GATE-CKPT-003"
# Steps replayed on CUDA in one process when train.replay_steps is unset: two, so that the second
# step runs on weights the first one updated.
REPLAY_STEPS = 2


def replay_plan(asked: int | None, device: str, distributed: bool) -> int:
    """The steps an invocation replays: `asked` (train.replay_steps) where set, else REPLAY_STEPS
    on a `device` of type cuda in one process, and 0 elsewhere."""
    if asked is not None:
        return asked
    return REPLAY_STEPS if device == "cuda" and not distributed else 0


def digests_state(step: int, replayed_until: int, distributed: bool) -> bool:
    """Whether step `step` logs STATE_KEY: one of the run's first DIGESTED_STEPS, or of the steps
    this invocation replays (up to `replayed_until`); never in a run of several processes, whose
    state no replay in one process reproduces."""
    return not distributed and step <= max(DIGESTED_STEPS, replayed_until)
