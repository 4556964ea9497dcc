"""Every byte of every input, accounted for: GATE-DATA-014's check `bytes`; and every file read is
one the inputs and --glob admit: its check `inputs` (`FilesRead`); and every rendered fine-tuning
example holds each text field of its record: its check `fields` (`Fields`); and no file is read as
UTF-16 or UTF-32 text never made UTF-8: its check `marks` (`Marks`).

Per source, the input read is held to what became of it: input = the bytes of the documents
kept + those of the documents dropped, by reason + the framing the format removed, by kind. The
input is measured apart from the reader where it can be:

- a file read as text: its size on disk, taken by the writer when the file ends (for a
  compressed file, or UTF-16 or UTF-32 with a byte-order mark, the size of the UTF-8 copy read);
  a document's bytes are the file bytes it was read from, before CRLF is read as LF and bytes that
  are not UTF-8 are replaced;
- a record (JSONL, a JSON array, Parquet): the UTF-8 bytes of its text field, measured where the
  record is parsed (Parquet: from the column's offsets, apart from the loop over its rows); the
  rest of the file (JSON syntax, other fields) is no document's and is not counted;
- a fine-tuning example (chat, prompt-completion, prefs): the UTF-8 bytes of its turns as read
  from its record; a record left out as read (unanswered, tie, diverged) holds no turns.

Framing, each kind counted from the bytes it names where the reader takes them away, never as a
difference of totals: a byte-order mark, separators (`--doc-sep`), blank text (the whitespace
around a separated document, a file or record of whitespace only), and binary files. Beside the
sum, each document held in memory whose text was not normalised (no CRLF read as LF, no byte
replaced) must be exactly as long as the bytes it was read from: a document cut or padded on
its way to the filters is `altered`.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.corpus_inputs import glob_admits
from contracts.gates import Outcome, gate_require, measure
from contracts.record_fields import fields_missing
from contracts.text_marks import HEAD_BYTES, marked_text

# The input units, by how a format's input is measured.
TEXT_FILES, TEXT_FIELDS, TURNS = "text_files", "text_fields", "turns"
# The framing kinds a reader removes.
BYTE_ORDER_MARK, SEPARATOR, BLANK, BINARY = "byte_order_mark", "separator", "blank", "binary"


@dataclass
class Account:
    """One source's books: input by unit, documents kept and dropped by reason, framing by kind."""

    input: Counter[str] = field(default_factory=Counter)
    kept: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    framing: Counter[str] = field(default_factory=Counter)
    altered: int = 0

    def as_dict(self) -> dict[str, Any]:
        """The account as the manifest and GATE-DATA-014 keep it."""
        return {
            "input_bytes": _nonzero(self.input),
            "kept_bytes": self.kept,
            "dropped_bytes": _nonzero(self.dropped),
            "framing_bytes": _nonzero(self.framing),
            "altered_documents": self.altered,
        }


def _nonzero(counts: Counter[str]) -> dict[str, int]:
    """The counts that are not 0, by name: the same books whatever kinds a reader named with nothing."""
    return {name: n for name, n in sorted(counts.items()) if n}


class Books:
    """Every source's account, kept by the one process that writes."""

    def __init__(self) -> None:
        self.accounts: dict[str, Account] = {}

    def _of(self, source: str) -> Account:
        return self.accounts.setdefault(source, Account())

    def read(self, source: str, unit: str, size: int) -> None:
        """Input of `source`: `size` bytes in `unit`."""
        self._of(source).input[unit] += size

    def framed(self, source: str, removed: dict[str, int]) -> None:
        """Framing a reader removed from `source`'s input, by kind."""
        self._of(source).framing.update(removed)

    def document(self, source: str, reason: str | None, size: int, altered: bool = False) -> None:
        """One document of `size` input bytes, kept (`reason` None) or dropped for `reason`."""
        account = self._of(source)
        if reason is None:
            account.kept += size
        else:
            account.dropped[reason] += size
        account.altered += altered

    def as_dict(self) -> dict[str, dict[str, Any]]:
        """Every source's account, by source name."""
        return {name: self.accounts[name].as_dict() for name in sorted(self.accounts)}


def altered(stored: int, raw: int, normalised: bool) -> bool:
    """Whether a document of `stored` bytes is not the `raw` input bytes it was read from, though
    nothing normalised it (no CRLF read as LF, no byte replaced)."""
    return not normalised and stored != raw


def accounts_outcome(books: Books) -> Outcome:
    """GATE-DATA-014's check `bytes` over every source's account."""
    return measure("GATE-DATA-014", {"accounts": books.as_dict()}, holds="every input byte is accounted for")


@gate_require("GATE-DATA-014", lambda books: accounts_outcome(books))
def check_accounts(books: Books) -> None:
    """Refuse a prepare whose books lose or make up input bytes, or whose documents are not the bytes
    they were read from."""


class FilesRead:
    """The files whose reading the writer saw end, each judged as it ends by the --glob the prepare
    was handed (contracts.corpus_inputs, apart from the walk that found them): GATE-DATA-014's check
    `inputs` (a .rst file read under --glob '*.py' is what it catches)."""

    def __init__(self, glob: str | None) -> None:
        self.glob = glob
        self.count = 0
        self.outside: list[str] = []

    def ended(self, name: str, below: bool) -> None:
        """One file read to its end, at `name` below its input (`below`: found in a directory input;
        a file given as an input is read whatever the pattern)."""
        self.count += 1
        if below and not glob_admits(name, self.glob):
            self.outside.append(name)


def files_outcome(files: FilesRead) -> Outcome:
    """GATE-DATA-014's check `inputs`: the glob, the files read and those it does not admit."""
    measured = {"glob": files.glob, "files_read": files.count, "outside_glob": files.outside}
    return measure("GATE-DATA-014", measured, holds="every file read is one --glob admits")


@gate_require("GATE-DATA-014", lambda files: files_outcome(files))
def check_files_read(files: FilesRead) -> None:
    """Refuse a prepare that read a file below a directory input that its --glob does not admit."""


class Separated:
    """The documents of text files read with --doc-sep, as the writer sees each file's reading end,
    and where those still holding the separator were read: GATE-DATA-014's check `separated` (a
    separator that never reaches the reader reads 60 documents as 1)."""

    def __init__(self, doc_sep: str | None) -> None:
        self.doc_sep = doc_sep
        self.documents = 0
        self.holding: list[str] = []

    def ended(self, documents: int, holding: list[str]) -> None:
        """One file's reading ended: its `documents` measured, those read at `holding` holding it."""
        self.documents += documents
        self.holding += holding


def separated_outcome(separated: Separated) -> Outcome:
    """GATE-DATA-014's check `separated`: the separator, the documents measured and those holding it."""
    measured = {
        "doc_sep": separated.doc_sep,
        "separated_documents": separated.documents,
        "holding_separator": separated.holding,
    }
    return measure("GATE-DATA-014", measured, holds="no document read with --doc-sep holds the separator")


@gate_require("GATE-DATA-014", lambda separated: separated_outcome(separated))
def check_separated(separated: Separated) -> None:
    """Refuse a prepare that yielded a document of a text file still holding the --doc-sep separator."""


class Cut:
    """The pieces of text files read without a separator, as the writer sees each file's reading end,
    and where those longer than --doc-bytes allows were read: GATE-DATA-014's check `cut` (the same
    failure for --doc-bytes: a cut that never reaches the reader)."""

    def __init__(self, doc_bytes: int) -> None:
        self.doc_bytes = doc_bytes
        self.documents = 0
        self.over: list[str] = []

    def ended(self, documents: int, over: list[str]) -> None:
        """One file's reading ended: its `documents` measured, those read at `over` over --doc-bytes."""
        self.documents += documents
        self.over += over


def cut_outcome(cut: Cut) -> Outcome:
    """GATE-DATA-014's check `cut`: --doc-bytes, the pieces measured and those longer than it allows."""
    measured = {"doc_bytes": cut.doc_bytes, "cut_documents": cut.documents, "over_doc_bytes": cut.over}
    return measure("GATE-DATA-014", measured, holds="no piece of a text file read whole is over --doc-bytes")


@gate_require("GATE-DATA-014", lambda cut: cut_outcome(cut))
def check_cut(cut: Cut) -> None:
    """Refuse a prepare that yielded a piece of a text file read without a separator longer than
    --doc-bytes allows (contracts.doc_cut)."""


class Fields:
    """The fine-tuning examples rendered, each held to its record's text fields as the contracts define
    them apart from the shape reader (contracts.record_fields), and where a field its example lost was
    read: GATE-DATA-014's check `fields` (an Alpaca record's `input` left out of
    the user turn makes 100 examples ask for a sum without the numbers)."""

    def __init__(self) -> None:
        self.examples = 0
        self.fields = 0
        self.missing: list[str] = []

    def rendered(self, texts: list[tuple[str, str]], text: str, where: str) -> None:
        """One example rendered as `text` from a record whose declared fields are `texts`."""
        self.examples += 1
        self.fields += len(texts)
        self.missing += [f"{where}: {name}" for name in fields_missing(texts, text)]


def fields_outcome(fields: Fields) -> Outcome:
    """GATE-DATA-014's check `fields`: the examples and fields measured, and the fields an example lost."""
    measured = {
        "field_examples": fields.examples,
        "record_fields": fields.fields,
        "fields_missing": fields.missing,
    }
    return measure(
        "GATE-DATA-014", measured, holds="every rendered example holds each text field of its record"
    )


@gate_require("GATE-DATA-014", lambda fields: fields_outcome(fields))
def check_fields(fields: Fields) -> None:
    """Refuse a fine-tuning prepare one of whose rendered examples lost a text field of its record."""


class Marks:
    """The input files whose reading ended, each judged on its first bytes as the reader read them (a
    compressed file's decompressed copy) by contracts.text_marks, apart from the unpacking that should
    have made UTF-16 or UTF-32 text UTF-8, and those still in such an encoding: GATE-DATA-014's check
    `marks` (a gzip'd UTF-16 file must not be skipped as holding no text "without a byte-order
    mark" when it has one)."""

    def __init__(self) -> None:
        self.files = 0
        self.marked: list[str] = []

    def ended(self, name: str, path: Path) -> None:
        """One file's reading ended: `path`, the bytes read under `name`, measured from its start."""
        with open(path, "rb") as handle:
            encoding = marked_text(handle.read(HEAD_BYTES))
        self.files += 1
        if encoding is not None:
            self.marked.append(f"{name}: {encoding} text")


def marks_outcome(marks: Marks) -> Outcome:
    """GATE-DATA-014's check `marks`: the files measured and those read as text never made UTF-8."""
    measured = {"marked_files": marks.files, "marked_unconverted": marks.marked}
    return measure("GATE-DATA-014", measured, holds="every file read as text was read as UTF-8")


@gate_require("GATE-DATA-014", lambda marks: marks_outcome(marks))
def check_marks(marks: Marks) -> None:
    """Refuse a prepare that read (or skipped as holding no text) a file of UTF-16 or UTF-32 text with
    its byte-order mark, never made UTF-8."""
