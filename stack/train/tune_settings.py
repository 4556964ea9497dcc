"""The settings of `stack dpo` and `stack distill` and their defaults, next to the config that owns them.

A tuning run is a training run (`train.task = "dpo"` or `"distill"`), so its settings live with
the run's configuration: the `[dpo]` and `[distill]` sections (stack.train.config) take their
defaults from here, and the commands' options from the same classes. Kept free of torch so that
`stack --help` stays fast. β = 0.1 is DPO's usual default (TRL's too); T = 4 and α = 0.7 are the
distillation defaults docs/preferences.md#distillation documents. A resume may change only `steps`
and `--device`: every other setting is in the run's config.toml.
"""

from __future__ import annotations

from dataclasses import dataclass

from contracts.errors import BadInput


@dataclass(frozen=True)
class TuneSettings:
    """What both commands share: the optimizer, the batches, the cadence."""

    steps: int = 50
    lr: float = 1e-5
    batch_size: int = 4
    seed: int = 0
    save_every: int = 25
    clip_norm: float = 1.0

    def check(self) -> None:
        """Refuse what the loop cannot honour, before any work."""
        if self.steps < 2:
            raise BadInput(f"--steps {self.steps}: a tuning run needs at least 2 steps to show it learns")


@dataclass(frozen=True)
class DpoSettings(TuneSettings):
    """DPO's own settings: β and the label noise ε of conservative DPO."""

    lr: float = 1e-4
    beta: float = 0.1
    label_noise: float = 0.0

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.label_noise < 0.5:
            raise BadInput(f"--label-noise {self.label_noise} must be in [0, 0.5)")


@dataclass(frozen=True)
class DistillSettings(TuneSettings):
    """Distillation's own settings: temperature, weight of the soft term, sequence length."""

    lr: float = 1e-3
    temperature: float = 4.0
    alpha: float = 0.7
    seq_len: int | None = None  # the student's context
    truncate_vocab: int | None = None

    def check(self) -> None:
        super().check()
        if not 0.0 <= self.alpha <= 1.0:
            raise BadInput(f"--alpha {self.alpha} must be in [0, 1]")


DPO_DEFAULTS = DpoSettings()
DISTILL_DEFAULTS = DistillSettings()
