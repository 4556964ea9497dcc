"""The settings of an ES run, and their defaults: one home for both, read by the command line.

Kept free of torch so that `stack --help` stays fast. `stack es` always starts from a checkpoint,
so σ and the learning rate suit a trained model: OpenAI-ES's 0.01 for both, the recipe for a model
from scratch, carried three trained models away from lower loss in 100 steps (held-out loss up by
0.13 to 2.3 nats, GATE-ES-007's warning each time), where σ 0.001 and Adam's 0.0005 kept each where
it was or lowered it (docs/surgery.md, Defaults). One worker by default: see stack.es.population on
when processes pay.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from contracts.errors import BadInput


@dataclass(frozen=True)
class EsSettings:
    """A run's settings, saved with every checkpoint (a resume may change only `steps`)."""

    steps: int = 100
    population: int = 16
    sigma: float = 0.001
    lr: float = 0.0005
    seed: int = 0
    batch_size: int = 8
    seq_len: int | None = None  # the model's context length (`resolved`)
    workers: int = 1
    save_every: int = 25

    def resolved(self, ctx: int) -> EsSettings:
        """These settings for a model of context `ctx`: the sequence length filled in, every value checked."""
        settings = replace(self, seq_len=ctx) if self.seq_len is None else self
        settings.check(ctx)
        return settings

    def check(self, ctx: int) -> None:
        """Refuse settings the loop cannot honour, before any work."""
        if self.population < 2 or self.population % 2:
            raise BadInput(
                f"--population {self.population} cannot be split into ± pairs; "
                "give an even number, at least 2"
            )
        if self.seq_len is None or self.seq_len > ctx:
            raise BadInput(
                f"--seq-len {self.seq_len} is longer than the model's context of {ctx}; give at most {ctx}"
            )
        cores = os.cpu_count() or 1
        if self.workers > cores:
            raise BadInput(
                f"--workers {self.workers} is more than this machine's {cores} core(s); give at most {cores}"
            )


DEFAULTS = EsSettings()
