"""GATE-DATA-007's check sample: the units a BPE was trained on are the sample its seed draws.

Measured where the sample acts: the texts the trainer read, each hashed (sha256 of its UTF-8 bytes)
as the trainer takes it, in the order taken (`Reading`). The rule's sample is drawn again by
contracts.bpe_sample from every unit the survey offered (its content hash and length), the run's
--seed and --bpe-sample budget, apart from the sampler's own priority (stack.data.bpe_sample): a
sampler whose draw ignores the seed, keeps too much or reads in another order trains
another BPE, and only this check sees it. The digest of the units read is what the manifest states
of the sample (its tokenizer entry's `sample_sha256`).
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Iterator
from typing import Any

from contracts.bpe_sample import sample_digest, selected
from contracts.gates import Outcome, gate_require, measure
from stack.data.bpe_sample import BpeSample


class Reading:
    """The texts handed to the trainer, passed through and hashed as it reads them."""

    def __init__(self, texts: Iterable[str]) -> None:
        self._texts = texts
        self.read: list[bytes] = []

    def __iter__(self) -> Iterator[str]:
        for text in self._texts:
            self.read.append(hashlib.sha256(text.encode("utf-8")).digest())
            yield text

    @property
    def digest(self) -> str:
        """The sample as the trainer read it: sha256 of its units' sha256s in the order read."""
        return sample_digest(self.read)


def sample_measured(reading: Reading, sample: BpeSample, seed: int, budget: int) -> dict[str, Any]:
    """The check's values: the units the trainer read against contracts.bpe_sample's draw, under the
    run's `seed` and `budget` (--seed, --bpe-sample), of every unit `sample` was offered."""
    rule = selected(sample.offered, seed, budget)
    return {
        "sample_seed": seed,
        "sample_budget": budget,
        "sample_offered_units": len(sample.offered),
        "sample_read_units": len(reading.read),
        "sample_sha256": reading.digest,
        "sample_rule_units": len(rule),
        "sample_rule_sha256": sample_digest(rule),
    }


def _outcome(measured: dict[str, Any]) -> Outcome:
    return measure("GATE-DATA-007", measured, holds="the BPE read the sample its seed draws")


@gate_require("GATE-DATA-007", _outcome)
def check_sample(measured: dict[str, Any]) -> None:
    """Refuse a prepare whose BPE was trained on another sample than the rule's, before any shard."""
