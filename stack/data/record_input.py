"""Record files: JSON Lines and Parquet, one document per record.

A record's text is taken from a named field (JSONL) or column (Parquet), `text` unless told
otherwise, and its source from another one when `--source-field` names it (else the file's
source). A record whose text is empty, blank or null is no document; it is counted as
skipped-empty. A record without the text field is left out, counted (`missing_field`) and
named by its line; only a file in which no record has the field is refused, since the field
named is then the wrong one. A line that is not a JSON object, a missing column, or text that
is not a string is refused, naming the file and line (or row): a corpus that half parses is
not trusted. Read with `--format jsonl`, a file whose first line is not JSON and whose name is
not that of a JSONL file (a dataset's README.md) is left out with a note.

Parquet is read with pyarrow one batch of rows at a time, each about the working set's batch
size of text (from the file's own column statistics), never the whole file. A JSONL line is
read whole, since a JSON text cannot be cut; an unusually long line costs its own size.

The books of a file of records (stack.data.accounting, GATE-DATA-014) count its text fields'
UTF-8 bytes, per source: measured where each record is parsed (`field_bytes`), or for Parquet
from the column's offsets, batch by batch, apart from the loop that makes each row's document;
a blank text is counted as blank framing, and each document carries the bytes it was read from.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput
from contracts.split import document_identity
from stack.data import json_array
from stack.data.accounting import BLANK
from stack.data.corpus import (
    SOURCE_NAME_RE,
    Document,
    Framing,
    InputFile,
    Note,
    Skipped,
    document,
    unreadable,
)
from stack.data.json_array import array_elements, starts_array
from stack.data.line_ends import BOM, CRLF, Normalised, reported

if TYPE_CHECKING:
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

Item = Document | Skipped | Normalised | Note | Framing
# What a `.json` file's format is told from: at most this much of each of its first two lines.
SNIFF_LINE_BYTES = 1 << 20
# The names of JSON Lines files; `--format auto` reads these as JSONL.
JSONL_SUFFIXES = (".jsonl", ".ndjson")
NOT_JSON_LINES = (
    "note: --format jsonl: these file(s) are not JSON Lines (their first line is no JSON) and were left "
    "out; read only the JSONL files with --glob '*.jsonl'"
)


@dataclass(frozen=True)
class Fields:
    """Which field (JSONL) or column (Parquet, CSV) holds a record's text, and which its source, if
    any; `own` is the file's source when it has a name of its own, whose text field can then be
    named for it alone (`--text-field SOURCE=NAME`)."""

    text: str = "text"
    source: str | None = None
    own: str | None = None

    def remedy(self, table: bool = False) -> str:
        """How to name the text field, for a refusal that found the one named missing: a table's
        column (`table`: Parquet, CSV), or a JSON record's field, which may be named by its path."""
        option = "--text-column" if table else "--text-field"
        path = "" if table else " (a nested one by its path, e.g. data.text)"
        alone = "" if self.own is None else f", or {option} {self.own}=NAME for source {self.own} alone"
        return f"pass {option} NAME{path}{alone}"


# The fields that mark a fine-tuning record (stack.data.chat_shapes), and the --format that reads it.
FINE_TUNING_FIELDS = (
    (frozenset({"chosen", "rejected"}), "prefs"),
    (frozenset({"messages"}), "chat"),
    (frozenset({"conversations"}), "chat"),
    (frozenset({"prompt", "completion"}), "prompt-completion"),
    (frozenset({"instruction", "output"}), "prompt-completion"),
)


def fine_tuning_hint(record: dict[str, Any]) -> str:
    """The empty string when `record` looks like a document; else how to read it as the fine-tuning record its
    fields make it (a chat file in a folder of documents must be sent to --format chat, not from
    --text-field to --text-field)."""
    keys = set(record)
    found = next((shape for fields, shape in FINE_TUNING_FIELDS if fields <= keys), None)
    if found is None:
        return ""
    return (
        f"; these are the fields of {found} records, which `stack prepare --format {found}` reads "
        "(prepare it on its own, or give it as a source of its own)"
    )


def _json_kind(value: object) -> str:
    """What a parsed JSON value is, in JSON's words."""
    if isinstance(value, bool):
        return "true or false"
    kinds = {dict: "an object", list: "an array", str: "a string", int: "a number", float: "a number"}
    return next((name for kind, name in kinds.items() if isinstance(value, kind)), "null")


def _text_bytes(text: str) -> tuple[bytes, bool]:
    """A JSON string as UTF-8; lone surrogates (valid JSON, not valid text) become U+FFFD."""
    try:
        return text.encode("utf-8"), False
    except UnicodeEncodeError:
        return text.encode("utf-8", "surrogatepass").decode("utf-8", "replace").encode("utf-8"), True


def _source_name(where: str, value: object, column: str) -> str:
    if not isinstance(value, str) or not SOURCE_NAME_RE.match(value):
        raise BadInput(
            f"{where}: source {column!r} is {value!r}, not a source name (letters, digits, '_', '.', "
            "'-'); fix the data or leave out --source-field"
        )
    return value


def _json_object(where: str, line: bytes) -> tuple[dict[str, Any], bool]:
    try:
        text, invalid = line.decode("utf-8"), False
    except UnicodeDecodeError:
        text, invalid = line.decode("utf-8", errors="replace"), True
    try:
        record = json_array.loads(text)
    except json.JSONDecodeError as exc:
        raise BadInput(
            f"{where} is not JSON ({exc.msg}, column {exc.colno}); each line of a JSONL file must be "
            "one JSON object: fix the line, or read the file as text with --format text"
        ) from None
    if not isinstance(record, dict):
        raise BadInput(
            f"{where} is {_json_kind(record)}, not an object; each line of a JSONL file must be one "
            'object such as {"text": "..."}'
        )
    return record, invalid


MISSING = object()  # what `field_value` gives for a field a record does not have


def field_value(record: dict[str, Any], name: str) -> Any:
    """The value of a record's field `name`, or MISSING: the key of that name, else a dotted path
    through nested objects (`--text-field data.text` reads {"data": {"text": "..."}})."""
    if name in record:
        return record[name]
    value: Any = record
    for part in name.split("."):
        if not isinstance(value, dict) or part not in value:
            return MISSING
        value = value[part]
    return value


def field_bytes(record: object, name: str) -> int:
    """The UTF-8 bytes of a record's text field as parsed, or of the field's value itself when
    `record` is that value (0 for a record without it, or whose field holds no text): the input
    side of the books of a file of records."""
    value = field_value(record, name) if isinstance(record, dict) else record
    return len(value.encode("utf-8", "surrogatepass")) if isinstance(value, str) else 0


class FieldBooks:
    """A file of records' books by source: the text fields' bytes read, and those blank."""

    def __init__(self) -> None:
        self.read: Counter[str] = Counter()
        self.blank: Counter[str] = Counter()

    def framing(self) -> Iterator[Framing]:
        """One Framing per source the file's records named."""
        for source in sorted(self.read.keys() | self.blank.keys()):
            yield Framing(source, {BLANK: self.blank[source]}, self.read[source])


def _field(where: str, record: dict[str, Any], name: str, option: str) -> object:
    value = field_value(record, name)
    if value is MISSING:
        fields = ", ".join(sorted(record)) or "none"
        raise BadInput(
            f"{where} has no field {name!r}; its fields are: {fields}; pass {option} NAME (a nested "
            "one by its path, e.g. data.text)"
        )
    return value


def jsonl_documents(item: InputFile, fields: Fields, advance: Callable[[int], None]) -> Iterator[Item]:
    """One document per non-blank line of a JSONL file; a leading byte-order mark is dropped, and
    CRLF line ends are read as LF ends (stack.data.line_ends)."""
    bom = crlf = False
    missing: list[tuple[str, dict[str, Any]]] = []  # the records without the text field
    records = 0
    books = FieldBooks()
    try:
        with open(item.path, "rb") as handle:
            for number, line in enumerate(handle, 1):
                advance(len(line))
                if number == 1 and line.startswith(BOM):
                    line, bom = line[len(BOM) :], True
                crlf |= line.endswith(CRLF)
                if not line.strip():
                    continue
                if not records and _not_json_lines(item, line):
                    advance(item.path.stat().st_size - len(line))
                    yield Note(item.source, NOT_JSON_LINES, item.label)
                    return
                records += 1
                parsed = _json_object(f"{item.given}:{number}", line)
                found = record_item(item, f":{number}", parsed, fields, missing)
                books.read[found.source] += field_bytes(parsed[0], fields.text)
                yield booked(found, books)
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    _refuse_wrong_field(item, records, missing, fields)
    yield from reported(item.source, bom, crlf)
    yield from books.framing()


def json_array_documents(item: InputFile, fields: Fields, advance: Callable[[int], None]) -> Iterator[Item]:
    """One document per element of a `.json` file holding one array (stack.data.json_array) of
    records or of strings (`json.dump(texts, f)`: each string a document); any other element is
    refused, naming it."""
    missing: list[tuple[str, dict[str, Any]]] = []
    records = 0
    books = FieldBooks()
    try:
        for index, value, invalid in array_elements(item.path, item.given, advance):
            at = f"[{index}]"
            if isinstance(value, str):
                value = _stringrecord_item(f"{item.given}{at}", value, fields)
            if not isinstance(value, dict):
                raise BadInput(
                    f"{item.given}{at} is {_json_kind(value)}, not an object or a string; each element "
                    'of the array must be one object such as {"text": "..."}, or one text'
                )
            records += 1
            found = record_item(item, at, (value, invalid), fields, missing)
            books.read[found.source] += field_bytes(value, fields.text)
            yield booked(found, books)
    except OSError as exc:
        raise unreadable(item.given, exc) from None
    _refuse_wrong_field(item, records, missing, fields)
    yield from books.framing()


def booked(found: Item, books: FieldBooks) -> Item:
    """A record's document or skip, a blank text's bytes booked as blank framing."""
    if isinstance(found, Skipped) and found.reason == "empty":
        books.blank[found.source] += found.size
    return found


def _stringrecord_item(where: str, text: str, fields: Fields) -> dict[str, Any]:
    """A string element as the record it stands for: its text, in the text field."""
    if fields.source is not None:
        raise BadInput(
            f"{where} is a string, which has no field {fields.source!r} to name its source; drop "
            "--source-field, and name the file's source as NAME=PATH"
        )
    return {fields.text: text}


def record_item(
    item: InputFile,
    at: str,
    parsed: tuple[dict[str, Any], bool],
    fields: Fields,
    missing: list[tuple[str, dict[str, Any]]],
) -> Item:
    """The document of one record found `at` a line (`:12`) or an element (`[11]`) of its file; a
    record without the text field is skipped and kept in `missing`."""
    if field_value(parsed[0], fields.text) is not MISSING:
        return _record_document(item, at, parsed, fields)
    missing.append((at, parsed[0]))
    return Skipped(item.source, "missing_field", f"{item.label}{at}")


def _refuse_wrong_field(
    item: InputFile, records: int, missing: list[tuple[str, dict[str, Any]]], fields: Fields
) -> None:
    """BadInput when no record of the file has the text field: the field named is the wrong one."""
    if missing and len(missing) == records:
        at, record = missing[0]
        names = ", ".join(sorted(record)) or "none"
        remedy = fields.remedy() + fine_tuning_hint(record)
        raise BadInput(f"{item.given}{at} has no field {fields.text!r}; its fields are: {names}; {remedy}")


def _not_json_lines(item: InputFile, line: bytes) -> bool:
    """Whether a file read as JSONL is not JSON Lines at all: its first line is no JSON and its name
    is not that of a JSONL file (a README beside the data, under --format jsonl)."""
    if item.path.suffix.lower() in JSONL_SUFFIXES:
        return False
    try:
        json_array.loads(line)
    except (json.JSONDecodeError, UnicodeDecodeError):
        return True
    return False


def holds_records(path: Path, text_field: str) -> bool:
    """Whether a `.json` file holds JSON Lines of documents: its first two non-blank lines are JSON
    objects, the first with the text field. A JSON document (pretty-printed, or a one-line
    config) is not, nor are lines of records of something else: those are read as text. Only
    SNIFF_LINE_BYTES of a line are read to tell (a longer first line: `--format jsonl` reads it)."""
    stat = path.stat()
    return _holds_records(path, stat.st_size, stat.st_mtime_ns, text_field)


@lru_cache(maxsize=4096)
def _holds_records(path: Path, size: int, mtime_ns: int, text_field: str) -> bool:
    """holds_records, told once per version of a file (every pass asks for each file's format)."""
    found: list[object] = []
    try:
        with open(path, "rb") as handle:
            while len(found) < 2 and (line := handle.readline(SNIFF_LINE_BYTES)):
                if line.strip():
                    found.append(json_array.loads(line.removeprefix(BOM)))
    except (OSError, json.JSONDecodeError, UnicodeDecodeError):
        return False
    first = found[0] if found else None
    return (
        len(found) == 2
        and isinstance(first, dict)
        and isinstance(found[1], dict)
        and field_value(first, text_field) is not MISSING
    )


def holds_array(path: Path) -> bool:
    """Whether `path` is read as one JSON array of records: it begins with `[` and its name is not
    that of a JSON Lines file (whose first line is a record, and an array there is refused)."""
    return path.suffix.lower() not in JSONL_SUFFIXES and starts_array(path)


def first_element(path: Path) -> object:
    """The first element of a `.json` file holding a JSON array, or None when it holds no array or
    the array is empty or malformed."""
    stat = path.stat()
    return _first_element(path, stat.st_size, stat.st_mtime_ns)


@lru_cache(maxsize=4096)
def _first_element(path: Path, size: int, mtime_ns: int) -> object:
    """first_element, told once per version of a file (every pass asks for each file's format)."""
    if not holds_array(path):
        return None
    try:
        return next((value for _, value, _ in array_elements(path, str(path), lambda _n: None)), None)
    except (BadInput, OSError):
        return None


def _record_document(item: InputFile, at: str, parsed: tuple[dict[str, Any], bool], fields: Fields) -> Item:
    where = f"{item.given}{at}"
    record, invalid = parsed
    text = field_value(record, fields.text)
    source = item.source
    if fields.source is not None:
        source = _source_name(where, _field(where, record, fields.source, "--source-field"), fields.source)
    if text is None or (isinstance(text, str) and not text.strip()):
        return Skipped(source, "empty", size=field_bytes(text, fields.text))
    if not isinstance(text, str):
        raise BadInput(
            f"{where}: field {fields.text!r} holds {_json_kind(text)}, not a string; "
            "pass --text-field the field that holds the text (a nested one by its path, e.g. data.text)"
            f"{fine_tuning_hint(record)}"
        )
    data, replaced = _text_bytes(text)
    raw = field_bytes(text, fields.text)
    return Document(source, data, document_identity(data), invalid or replaced, f"{item.label}{at}", raw=raw)


def _arrow_failure(path: Path, exc: Exception) -> BadInput:
    detail = " ".join(str(exc).split())[:200]
    return BadInput(
        f"{path} cannot be read as Parquet ({detail}); give a Parquet file, or name the format of "
        "this one with --format text or --format jsonl"
    )


def missing_column(path: Path, columns: Sequence[str], name: str, remedy: str) -> BadInput:
    """The refusal of a table (Parquet, CSV) without the column named: its columns, and `remedy`."""
    return BadInput(
        f"{path} has no column {name!r}; its columns are: {', '.join(columns) or 'none'}; {remedy}"
    )


def _column(path: Path, schema: pa.Schema, name: str, remedy: str) -> pa.DataType:
    if name not in schema.names:
        raise missing_column(path, schema.names, name, remedy)
    return schema.field(name).type


def _check_text_column(path: Path, schema: pa.Schema, fields: Fields) -> None:
    import pyarrow as pa

    name = fields.text
    kind = _column(path, schema, name, fields.remedy(table=True))
    if pa.types.is_dictionary(kind):  # pandas' category, Polars' categorical: strings by index
        kind = kind.value_type
    textual = (pa.types.is_string, pa.types.is_large_string, pa.types.is_binary, pa.types.is_large_binary)
    if not (_is_view(kind) or any(test(kind) for test in textual)):
        raise BadInput(
            f"{path}: column {name!r} holds {kind}, not text; pass --text-column the column that holds it"
        )


def _is_view(kind: pa.DataType) -> bool:
    import pyarrow as pa

    return bool(getattr(pa.types, "is_string_view", lambda _kind: False)(kind))


def _batch_rows(parquet: pq.ParquetFile, column: str, batch_bytes: int) -> int:
    """Rows per read so that a batch holds about `batch_bytes` of text, from the column's statistics."""
    meta = parquet.metadata
    size = 0
    for group in range(meta.num_row_groups):
        chunks = meta.row_group(group)
        size += sum(
            chunks.column(i).total_uncompressed_size
            for i in range(chunks.num_columns)
            if chunks.column(i).path_in_schema == column
        )
    per_row = max(size // max(meta.num_rows, 1), 1)
    return max(batch_bytes // per_row, 1)


def _strings(array: pa.Array) -> tuple[list[int], memoryview, np.ndarray]:
    """Offsets, bytes and validity of a string or binary array, without making Python strings."""
    import numpy as np
    import pyarrow as pa

    if pa.types.is_dictionary(array.type):
        array = array.dictionary_decode()
    if _is_view(array.type):
        array = array.cast(pa.large_string())
    large = pa.types.is_large_string(array.type) or pa.types.is_large_binary(array.type)
    _, offsets, data = array.buffers()
    width = np.int64 if large else np.int32
    bounds = np.frombuffer(offsets, dtype=width)[array.offset : array.offset + len(array) + 1]
    view = memoryview(data) if data is not None else memoryview(b"")
    return bounds.tolist(), view, array.is_valid().to_numpy(zero_copy_only=False)


def _column_bytes(books: FieldBooks, sources: str | list[Any], bounds: list[int], valid: np.ndarray) -> None:
    """The bytes of a batch's text column, from its offsets (null rows hold none), booked by source:
    the input side of a Parquet file's books, apart from the loop over its rows."""
    import numpy as np

    lengths = np.diff(np.asarray(bounds, dtype=np.int64)) * np.asarray(valid, dtype=bool)
    if isinstance(sources, str):
        books.read[sources] += int(lengths.sum())
        return
    for name in set(sources):
        books.read[str(name)] += int(lengths[np.asarray([s == name for s in sources])].sum())


def parquet_documents(
    item: InputFile, fields: Fields, batch_bytes: int, advance: Callable[[int], None]
) -> Iterator[Item]:
    """One document per row of a Parquet file, read in batches of rows."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(item.path)
    except (pa.ArrowException, OSError) as exc:
        raise _arrow_failure(item.given, exc) from None
    schema = parquet.schema_arrow
    _check_text_column(item.given, schema, fields)
    columns = [fields.text]
    if fields.source is not None:
        _column(item.given, schema, fields.source, "pass --source-column NAME")
        columns.append(fields.source)
    size, rows, done, row = item.path.stat().st_size, max(parquet.metadata.num_rows, 1), 0, 0
    batches = parquet.iter_batches(batch_size=_batch_rows(parquet, fields.text, batch_bytes), columns=columns)
    books = FieldBooks()
    while True:
        try:
            batch = next(batches, None)
        except (pa.ArrowException, OSError) as exc:
            raise _arrow_failure(item.given, exc) from None
        if batch is None:
            yield from books.framing()
            return
        bounds, data, valid = _strings(batch.column(0))
        sources = batch.column(1).to_pylist() if fields.source is not None else None
        _column_bytes(books, item.source if sources is None else sources, bounds, valid)
        for i in range(batch.num_rows):
            source = item.source
            if sources is not None:
                source = _source_name(f"{item.given} row {row + i}", sources[i], columns[1])
            raw = bytes(data[bounds[i] : bounds[i + 1]]) if valid[i] else b""
            if not raw.strip():
                yield booked(Skipped(source, "empty", size=len(raw)), books)
            else:
                yield document(source, raw, f"{item.label} row {row + i}", raw=len(raw))
        row += batch.num_rows
        advance(size * row // rows - done)
        done = size * row // rows
