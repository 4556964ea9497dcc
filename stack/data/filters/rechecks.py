"""GATE-DATA-013's check `rules`: each measuring filter's drops judged again by its rule, apart from it.

A filter's drop report and drop log say what the filter decided, not that the decision was its
rule's: a filter comparing a share with the wrong setting drops what it should keep, and its
books add up all the same. So, as dedup's drops are (stack.data.filters.dedup.Rechecks), the first
`filter_recheck_docs` documents each reason drops, in reading order, are measured again from the
document itself, and the judge holds each to the filter's rule (contracts.filter_rules) under the
settings in force:

- script_mismatch, mis_encoded: the document's sample is taken again from its bytes and its
  letters by script and its U+FFFD counted one character at a time (contracts.filter_rules
  .letters_by_script), apart from the filter's table;
- low_diversity: its first window is taken again from its text, and the probes and the zlib ratio
  computed on it;
- oversize: its length, and whether a separator or a record made it;
- leak_phrase, leak_headers, leak_weight: its first user turn is found again in its bytes (or is
  the chat example's), and its headers, characters and fingerprint phrases counted, with the leak
  filter's own finder and counter (stack.data.filters.leak), which GATE-DATA-012's canaries hold
  at the limits: what this adds is the filter's glue and its rule, not a second measure.

A document too long to hold (stack.data.long_documents) is measured on what was read of it from
disk, its first window and its sample, as the filter was. What is kept of a dropped document until
the writer takes it is small (`Dropped`: the sample, the first window, the first user turn); the
letters are counted only for the documents the sample takes.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass
from typing import Any

from contracts import filter_rules
from stack.data.filters import leak
from stack.data.filters.settings import FilterSettings

# The reasons judged again here; dedup's drops are judged by its own rechecks.
RULED = (
    "leak_phrase",
    "leak_headers",
    "leak_weight",
    "oversize",
    "mis_encoded",
    "low_diversity",
    "script_mismatch",
)


@dataclass(frozen=True)
class Dropped:
    """What the recheck reads of one dropped document, taken from its bytes where it was held:
    its sample (contracts.filter_rules.sample_of), its first window as text, the headers,
    characters and fingerprint phrases of its first user turn (None: it holds none), its length
    in bytes, and whether a separator or a record made it and whether it is code."""

    sample: str
    window: str
    turn: tuple[int, int, int] | None
    length: int
    delimited: bool
    code: bool


def dropped_of(
    settings: FilterSettings,
    whole: bytes | None,
    window: bytes,
    sample: str | None,
    length: int,
    delimited: bool = True,
    code: bool = False,
    head: str | None = None,
) -> Dropped:
    """A dropped document as the recheck reads it: from its bytes `whole` when it was held, else from
    its first `window` of bytes and the `sample` the filter read from disk; `head` is a chat
    example's first user turn."""
    chars = settings.diversity.window_chars
    data = window if whole is None else whole
    if whole is not None:
        sample = filter_rules.sample_of(whole, settings.sample.bytes, settings.sample.spans)
    assert sample is not None, "a document too long to hold comes with the sample read from disk"
    turn = leak.head_region(data, settings.leak, head)
    return Dropped(
        sample,
        data[: 4 * chars].decode("utf-8", "ignore")[:chars],
        None if turn is None else leak.measured(turn, settings.leak),
        len(whole) if whole is not None else length,
        delimited,
        code,
    )


def remeasured(reason: str, doc: Dropped) -> dict[str, Any]:
    """The quantity `reason`'s rule decides by, measured again on the dropped document."""
    if reason in ("script_mismatch", "mis_encoded"):
        letters, replaced = filter_rules.letters_by_script(doc.sample)
        return {"letters": letters, "replaced": replaced, "code": doc.code}
    if reason == "low_diversity":
        window = doc.window.encode("utf-8")
        return {
            "chars": len(doc.window),
            "repeats": filter_rules.repeats_itself(window),
            "ratio": filter_rules.compression_ratio(window),
        }
    if reason == "oversize":
        return {"bytes": doc.length, "delimited": doc.delimited}
    headers, chars, phrases = doc.turn or (0, 0, 0)
    return {"turn": doc.turn is not None, "headers": headers, "chars": chars, "phrases": phrases}


class FilterRechecks:
    """The books of GATE-DATA-013's check `rules`: every drop of a reason in RULED counted, the first
    `docs` of each measured again (`remeasured`), and what the script filter keeps in each source
    whose drops were measured."""

    def __init__(self, settings: FilterSettings, docs: int) -> None:
        self.settings, self.docs = settings, docs
        self.drops: Counter[str] = Counter()
        self.rechecked: dict[str, list[dict[str, Any]]] = {}
        self.held: dict[str, list[str]] = {}

    def wants(self, reason: str | None) -> bool:
        """Whether a drop for `reason` now would be among those measured again (so what the recheck
        reads of it is worth taking)."""
        return reason in RULED and len(self.rechecked.get(str(reason), [])) < self.docs

    def note(self, source: str, reason: str, where: str, doc: Dropped | None, held: list[str]) -> None:
        """One drop for `reason` of a document of `source` read `where`; `held` are the scripts the
        script filter keeps in the source."""
        if reason not in RULED:
            return
        self.drops[reason] += 1
        found = self.rechecked.setdefault(reason, [])
        if doc is None or len(found) >= self.docs:
            return
        found.append({"where": where, "source": source, **remeasured(reason, doc)})
        if reason == "script_mismatch":
            self.held[source] = held

    def as_dict(self) -> dict[str, Any]:
        """What the check reads: the settings the rules take, the drops and those measured again."""
        s = self.settings
        return {
            "settings": {
                "script": {"min_share": s.script.min_share, "min_letters": s.script.min_letters},
                "encoding": {
                    "max_replaced_share": s.encoding.max_replaced_share,
                    "min_letters": s.encoding.min_letters,
                },
                "diversity": {
                    "min_chars": s.diversity.min_chars,
                    "min_compression_ratio": s.diversity.min_compression_ratio,
                },
                "oversize": {"max_bytes": s.oversize.max_bytes},
                "leak": {
                    "max_headers": s.leak.max_headers,
                    "max_header_weight": s.leak.max_header_weight,
                    "fingerprint_min_chars": s.leak.fingerprint_min_chars,
                },
            },
            "drops": dict(sorted(self.drops.items())),
            "rechecked": dict(sorted(self.rechecked.items())),
            "held": dict(sorted(self.held.items())),
        }
