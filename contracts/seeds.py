"""The seed a sampling is stated to draw from, and the generator state that seed starts.

GATE-TRAIN-005 replays every draw from the state the generator held before the first one, so a
sampler that draws from the distribution its settings name passes whatever that state was: a
`stack sample` whose generator is seeded with 0, whatever --seed says, prints the same text for
every seed, each draw replays right, and every other gate passes. What proves the seed is the state
itself: a generator freshly seeded with the stated seed holds exactly one state, and the draws
must have started from it (GATE-TRAIN-005's and GATE-SYNTH-002's check seeded). The runs compare
digests of the two states (`state_sha256`), and the checker seeds a generator again from the
seed the record's config names.

`monitor_seed` is the seed the training monitor's sampling round at a step is stated to draw
from, written out apart from the loop (stack.train.loop), so the checker derives it from the
config's train.seed and the step.

torch is loaded only to seed a generator: the judges compare digests, and load without torch.
"""

from __future__ import annotations

import hashlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import torch

# The factor the monitor's seed takes train.seed by, before adding the step: distinct rounds of one
# run, and the same round of runs seeded apart, draw from distinct generators.
MONITOR_SEED_FACTOR = 1_000_003


def monitor_seed(train_seed: int, step: int) -> int:
    """The seed the training monitor's sampling round after `step` draws from."""
    return train_seed * MONITOR_SEED_FACTOR + step


def state_sha256(state: torch.Tensor) -> str:
    """Hex sha256 of a generator state (`torch.Generator.get_state()`, bytes as held)."""
    return hashlib.sha256(state.cpu().numpy().tobytes()).hexdigest()


def seeded_state_sha256(seed: int, device_type: str) -> str | None:
    """`state_sha256` of a generator on `device_type` ("cpu", "cuda") freshly seeded with `seed`;
    None where this machine has no generator of that type (a CUDA record checked without CUDA)."""
    import torch

    try:
        return state_sha256(torch.Generator(device=device_type).manual_seed(seed).get_state())
    except (RuntimeError, ValueError):  # no such device here, or no 64-bit seed
        return None
