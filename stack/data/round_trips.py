"""The documents prepare writes decode to their text: GATE-DATA-007's check `round_trip`.

A tokenizer that changes the text it encodes (a prefix space before every document, a character
it cannot encode dropped) stores other documents than the corpus: training, sampling and
evaluating a split all read what was stored and agree with it, and only scoring a file against
its own bytes finds out. So prepare decodes what it writes, measured on the ids the writer is
handed for the document (its end-of-text id last) against the document's text as the filters
judged it:

- a document held in memory is checked when it is held out (by contracts.split's rule) or drawn
  by its content hash at `rate`, the share of the corpus GATE-DATA-007's round_trip_bytes allows
  (1 for a corpus no larger): every held-out document, and a deterministic sample of the rest;
- a document encoded in pieces (longer than the working set's batch) is checked piece by piece as
  it is encoded, every one;
- a fine-tuning example, every one: its ids decoded between end-of-text ids against the text its
  messages render to.

The stack's own tokenizers (byte, bpe) promise the round trip, and so does a pretrained one that
gives back the probe text (stack.data.tokenizer_identity.PROBE_TEXT): every document checked must
then decode to its text. A pretrained tokenizer that normalises by design (lower-cases, writes
"▁" for spaces) is recorded with its failures and not held to them.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from contracts.gates import Outcome, gate_require, measure
from contracts.spec import load_spec
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_identity import PROBE_TEXT


def sample_rate(input_bytes: int) -> float:
    """The share of documents (beside the held-out ones) whose round trip is checked: round_trip_bytes
    over the corpus's bytes, at most 1."""
    budget = load_spec().threshold("GATE-DATA-007", "round_trip_bytes")
    return min(1.0, budget / max(input_bytes, 1))


def drawn(doc_sha: bytes, rate: float) -> bool:
    """Whether a document of content sha256 `doc_sha` is in the round-trip sample at `rate` (bytes
    8..16 of its hash: a draw apart from the split's)."""
    return int.from_bytes(doc_sha[8:16], "little") < rate * 2**64


def decodes_to(tokenizer: Tokenizer, ids: np.ndarray, text: bytes) -> bool:
    """Whether a document's ids as handed to the writer, its end-of-text id last and nowhere
    before, decode to its text."""
    eot = tokenizer.eot_id
    if not len(ids) or int(ids[-1]) != eot or bool((ids[:-1] == eot).any()):
        return False
    return tokenizer.decode(ids[:-1]) == text.decode("utf-8")


@dataclass
class RoundTrips:
    """What prepare found decoding what it writes: documents checked and failed, held-out ones
    written and checked, the first failure's place."""

    tokenizer: Tokenizer
    rate: float
    input_bytes: int
    checked: int = 0
    failed: int = 0
    heldout: int = 0
    heldout_checked: int = 0
    first: str | None = None

    def add(self, heldout: bool, verdict: bool | None, where: str) -> None:
        """One document written (`heldout`: to the held-out split); `verdict` None when unchecked."""
        self.heldout += heldout
        if verdict is None:
            return
        self.checked += 1
        self.heldout_checked += heldout
        if not verdict:
            self.failed += 1
            self.first = self.first or where

    def measured(self) -> dict[str, Any]:
        tok = self.tokenizer
        return {
            "tokenizer": tok.name,
            "gives_back_probe": tok.decode(tok.encode(PROBE_TEXT)) == PROBE_TEXT,
            "round_trip_documents": self.checked,
            "round_trip_failed": self.failed,
            "heldout_documents": self.heldout,
            "heldout_checked": self.heldout_checked,
            "round_trip_rate": self.rate,
            "input_bytes": self.input_bytes,
            **({"first_failed": self.first} if self.first else {}),
        }


def book_examples(trips: RoundTrips, heldout: bool, verdicts: Sequence[str], where: str) -> None:
    """Book a fine-tuning split's examples by their rendering verdicts (stack.data.sft_gates
    .example_verdict): an example round-trips when its ids decode to its whole text, `rendered`."""
    for number, verdict in enumerate(verdicts, start=1):
        trips.add(heldout, verdict == "rendered", f"{where} {number}")


def _outcome(trips: RoundTrips) -> Outcome:
    return measure("GATE-DATA-007", trips.measured(), holds="every document checked decodes to its text")


@gate_require("GATE-DATA-007", _outcome)
def check_round_trips(trips: RoundTrips) -> None:
    """Refuse a prepare whose written documents do not decode to their text."""
