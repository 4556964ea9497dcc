"""Input formats: how one input file becomes a stream of documents.

| format  | chosen for                   | a document is                                    |
|---------|------------------------------|---------------------------------------------------|
| text    | any other file               | the file (cut by `--doc-bytes`), or each text between `--doc-sep`s|
| jsonl   | `.jsonl`, `.ndjson`; `.json` of records | the `--text-field` string of each record    |
| parquet | `.parquet`                   | the `--text-column` value of each row             |
| csv     | `.csv`, `.tsv` with the text column | the `--text-column` value of each row      |

A record is a line's object (JSON Lines) or an element of a file's one array (stack.data.json_array).

A `.json` file is read as records when it holds JSON Lines of documents (record_input.holds_records)
or one array whose first element has the text field or is a string (stack.data.json_array), and
prepare says so;
any other `.json` file (a config, a pretty-printed document) is text, and prepare names the ones
that hold arrays of other records, which `--text-field` would read as records. A `.csv` or `.tsv`
file is read by its rows when its header names the text column, or when `--text-field` names one
for its source (a missing column is then refused); else it is text, with a note.

`--text-field` names one field for every source, and `--text-field SOURCE=NAME` one for a source
alone (`web=web.jsonl code=code.jsonl --text-field code=content`), so sources that keep their text
under different names are prepared into one DATA_DIR.

`--format` names one format for every file instead of going by suffix. Every format yields
documents hashed by content (stack.data.corpus), so the same text gets the same id, and lands in
the same split, whatever file, format or position it came from.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Collection, Iterator, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from contracts.errors import BadInput
from stack.data.corpus import (
    SOURCE_NAME_RE,
    Document,
    FileRegion,
    InputFile,
    Note,
    Skipped,
    holds_text,
    parse_input,
)
from stack.data.defaults import DEFAULT_DOC_BYTES, DEFAULT_SOURCE, DEFAULT_TEXT_FIELD
from stack.data.doc_size import fitted_doc_bytes
from stack.data.line_ends import Normalised
from stack.data.record_input import (
    JSONL_SUFFIXES,
    MISSING,
    Fields,
    field_value,
    first_element,
    holds_array,
    holds_records,
    json_array_documents,
    jsonl_documents,
    parquet_documents,
)
from stack.data.table_input import TABLE_SUFFIXES, holds_column, table_documents
from stack.data.text_input import text_documents

FORMATS = ("auto", "text", "jsonl", "parquet", "csv")
SUFFIX_FORMATS = {
    **dict.fromkeys(JSONL_SUFFIXES, "jsonl"),
    ".parquet": "parquet",
    **dict.fromkeys(TABLE_SUFFIXES, "csv"),
}
JSON_LINES_IN_JSON = (
    "note: these .json file(s) hold JSON Lines, read one record a line (--format text reads a file whole)"
)
ARRAY_IN_JSON = (
    "note: these .json file(s) hold an array of records or texts, read one document an element (--format "
    "text reads a file whole)"
)
TABLE_AS_TEXT = (
    "note: these CSV/TSV file(s) have no column named by --text-field (default text) and were read whole "
    "as text, header and all; to learn one column's text instead, pass --text-field NAME"
)
OTHER_RECORDS_AS_TEXT = (
    "note: these .json file(s) hold an array of records without the text field and were read whole as "
    "text; to learn their records' text instead, pass --text-field NAME"
)

Item = Document | FileRegion | Skipped | Normalised | Note


@dataclass(frozen=True)
class TextFields:
    """`--text-field` as given: one name for every source and/or one per source (`SOURCE=NAME`)."""

    every: str | None = None
    by_source: tuple[tuple[str, str], ...] = ()

    @classmethod
    def parse(cls, values: Sequence[str]) -> TextFields:
        """The names of `--text-field VALUE ...`; a value `SOURCE=NAME` whose left part is a source
        name (as in `NAME=PATH`) names the field of that source alone. Each source, and the
        every-source name, may be named once."""
        every: list[str] = []
        by_source: dict[str, str] = {}
        for value in values:
            source, name = parse_input(value, "")
            if not source and value.endswith("=") and SOURCE_NAME_RE.match(value[:-1]):
                raise BadInput(
                    f"--text-field {value} names no field for source {value[:-1]!r}; give one, e.g. "
                    f"--text-field {value}content"
                )
            if not source:
                every.append(value)
                continue
            if source in by_source:
                raise BadInput(
                    f"--text-field names the field of source {source!r} twice ({by_source[source]}, "
                    f"{name}); give it once"
                )
            by_source[source] = str(name)
        if len(every) > 1:
            raise BadInput(
                f"--text-field is given {len(every)} times ({', '.join(every)}); give one name for every "
                "source, and SOURCE=NAME for a source whose field differs"
            )
        return cls(every[0] if every else None, tuple(sorted(by_source.items())))

    def of(self, source: str) -> str | None:
        """The field named for `source`, or None when none was (the default applies)."""
        return dict(self.by_source).get(source, self.every)

    def given(self) -> list[str]:
        """The values as given, for messages."""
        every = [] if self.every is None else [self.every]
        return every + [f"{source}={name}" for source, name in self.by_source]


@dataclass(frozen=True)
class Layout:
    """How input files are read: their format (`auto`: by suffix) and the options of each format.

    `text_field` is a TextFields, or one name for every source (a str), as the library is called.
    `doc_bytes` is --doc-bytes; None (`stack prepare` without --doc-bytes) has prepare fit it to the
    corpus (`fitted`).
    """

    format: str = "auto"
    doc_sep: str | None = None
    text_field: TextFields | str | None = None
    source_field: str | None = None
    doc_bytes: int | None = DEFAULT_DOC_BYTES

    def __post_init__(self) -> None:
        if not isinstance(self.text_field, TextFields):
            object.__setattr__(self, "text_field", TextFields(self.text_field))
        if self.format not in FORMATS:
            raise BadInput(f"unknown --format {self.format!r}; use one of: {', '.join(FORMATS)}")
        if self.doc_sep == "":
            raise BadInput(
                "--doc-sep is empty; give the text between documents, e.g. '<|endoftext|>' or '\\n\\n'"
            )
        if "" in self.fields.given() or any(not name for _, name in self.fields.by_source):
            raise BadInput("--text-field is empty; name the field or column that holds the text")
        if self.source_field == "":
            raise BadInput("--source-field is empty; name the field or column that holds the source")
        given = self.field_options()
        if self.format == "text" and given:
            raise BadInput(
                f"{' and '.join(given)} {'name' if len(given) > 1 else 'names'} a JSONL field or a Parquet "
                "or CSV column, but --format text reads every file whole as text; drop it, or read the "
                "records with --format jsonl, parquet or csv"
            )
        if self.doc_bytes is not None and self.doc_bytes < 1:
            raise BadInput(f"--doc-bytes {self.doc_bytes} must be at least 1 byte, e.g. 1M")

    @property
    def cut_bytes(self) -> int:
        """The most bytes of a document cut from a text file read whole: --doc-bytes as given or as
        `fitted`, else DEFAULT_DOC_BYTES."""
        return DEFAULT_DOC_BYTES if self.doc_bytes is None else self.doc_bytes

    def fitted(self, files: Sequence[InputFile], val_fraction: float) -> Layout:
        """This layout with --doc-bytes fitted to a corpus of `files` (stack.data.doc_size) where none
        was given: a corpus of text files read whole alone, by their sizes; any other at the default."""
        if self.doc_bytes is not None:
            return self
        text = [item for item in files if self.format_of(item) == "text"]
        if self.doc_sep is not None or len(text) < len(files):
            return replace(self, doc_bytes=DEFAULT_DOC_BYTES)
        sizes = [item.path.stat().st_size for item in text if holds_text(item)]  # no binary file
        return replace(self, doc_bytes=fitted_doc_bytes(sizes, val_fraction))

    @property
    def fields(self) -> TextFields:
        """`text_field` as a TextFields (what __post_init__ made of it)."""
        assert isinstance(self.text_field, TextFields)
        return self.text_field

    def field_options(self, source: str | None = None) -> list[str]:
        """The options given that name a record's field (of `source` alone, when named), as typed."""
        texts = self.fields.given() if source is None else [name for name in [self.fields.of(source)] if name]
        sources = [] if self.source_field is None else [f"--source-field {self.source_field}"]
        return [f"--text-field {name}" for name in texts] + sources

    def check_sources(self, sources: Collection[str]) -> None:
        """BadInput for a `--text-field SOURCE=NAME` whose source no input has: it would name nothing."""
        for source, name in self.fields.by_source:
            if source not in sources:
                raise BadInput(
                    f"--text-field {source}={name} names source {source!r}, but the sources are: "
                    f"{', '.join(sorted(sources))}; name one of those (inputs name theirs as NAME=PATH)"
                )

    def field(self, source: str) -> str:
        """The JSONL field, Parquet or CSV column that holds the text of a record of `source`."""
        return self.fields.of(source) or DEFAULT_TEXT_FIELD

    def fields_of(self, item: InputFile) -> Fields:
        """The fields a record of `item` is read by; a refusal for a missing text field may suggest the
        per-source option when the file has a source of its own."""
        own = None if item.source == DEFAULT_SOURCE else item.source
        return Fields(self.field(item.source), self.source_field, own)

    def format_of(self, item: InputFile) -> str:
        """The format `item` is read in."""
        if self.format != "auto":
            return self.format
        path, field = item.path, self.field(item.source)
        suffix = path.suffix.lower()
        if suffix == ".json" and (holds_records(path, field) or self._holds_array(path, field)):
            return "jsonl"
        if suffix in TABLE_SUFFIXES and self.fields.of(item.source) is None and not holds_column(path, field):
            return "text"
        return SUFFIX_FORMATS.get(suffix, "text")

    @staticmethod
    def _holds_array(path: Path, field: str) -> bool:
        """Whether `path` holds a JSON array whose first element is a record with the text field,
        or a string (an array of texts)."""
        first = first_element(path)
        return isinstance(first, str) or (
            isinstance(first, dict) and field_value(first, field) is not MISSING
        )


def read_documents(
    item: InputFile, layout: Layout, batch_bytes: int, advance: Callable[[int], None]
) -> Iterator[Item]:
    """The documents of one input file, in file order; `advance` is told how many input bytes were read.

    A text document longer than `batch_bytes` comes as a FileRegion, read again when it is used.
    """
    fields = layout.fields_of(item)
    kind = layout.format_of(item)
    suffix = item.path.suffix.lower()
    by_suffix = layout.format == "auto" and suffix == ".json"
    if kind == "jsonl" and holds_array(item.path):
        documents = json_array_documents(item, fields, advance)
        if by_suffix:
            return itertools.chain([Note(item.source, ARRAY_IN_JSON, item.label)], documents)
        return documents
    if kind == "jsonl" and by_suffix:
        note = Note(item.source, JSON_LINES_IN_JSON, item.label)
        return itertools.chain([note], jsonl_documents(item, fields, advance))
    if kind == "jsonl":
        return jsonl_documents(item, fields, advance)
    if kind == "parquet":
        return parquet_documents(item, fields, batch_bytes, advance)
    if kind == "csv":
        return table_documents(item, fields, advance)
    separator = None if layout.doc_sep is None else layout.doc_sep.encode("utf-8")
    documents = text_documents(item, separator, batch_bytes, advance, layout.cut_bytes)
    if by_suffix and isinstance(first_element(item.path), dict):
        return itertools.chain([Note(item.source, OTHER_RECORDS_AS_TEXT, item.label)], documents)
    if layout.format == "auto" and suffix in TABLE_SUFFIXES:
        return itertools.chain([Note(item.source, TABLE_AS_TEXT, item.label)], documents)
    return documents
