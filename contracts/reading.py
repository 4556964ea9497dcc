"""Reading a file the integrity check did not write: every byte of it may be hostile.

A record, its artifacts, the registry and the model cards it names come from whoever committed
them. The checker reads each through these functions and no other way, so that one place decides
what a readable file is: a regular file (a link is followed only while it stays inside the
directory the caller names), at most MAX_READ_BYTES long (checked before a byte is read), whose
text is UTF-8 without NUL bytes, and that parses as the format it is read as. Any other file raises
`Unreadable`, naming the file and what is wrong with it; the checker makes that a finding of the
record that cites the file and goes on, where a parser's own exception would have ended the check
in a traceback.
"""

from __future__ import annotations

import json
import os
import stat
import struct
import tomllib
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import yaml

from contracts.errors import BadInput
from contracts.hf_export import HEADER_LENGTH_BYTES

# The most bytes the checker reads of one file into memory (hashing streams, and has no cap): the
# largest file the stack writes that the checker parses is a small model's weights (3 MB in the
# ledger); a quarter of a gigabyte leaves room for any model a CPU check replays, and a file
# planted to exhaust the checker's memory stops here.
MAX_READ_BYTES = 256 * 2**20


class Unreadable(BadInput):
    """A file that is not what it is read as: `path`, and `problem`, what is wrong with it."""

    def __init__(self, path: Path | str, problem: str) -> None:
        self.path = Path(path)
        self.problem = problem
        super().__init__(f"{path}: {problem}")


def read_bytes(path: Path | str, within: Path | str | None = None, limit: int = MAX_READ_BYTES) -> bytes:
    """The bytes of a regular file of at most `limit` bytes, inside `within` when it is given."""
    with _opened(path, within) as (handle, size):
        if size > limit:
            raise Unreadable(path, f"is {size} bytes, more than the {limit} the checker reads")
        data = handle.read(limit + 1)
    if len(data) > limit:  # a file that grew while it was read
        raise Unreadable(path, f"is more than the {limit} bytes the checker reads")
    return data


@contextmanager
def _opened(path: Path | str, within: Path | str | None) -> Iterator[tuple[BinaryIO, int]]:
    """The file open for reading, with its size: a regular file (a link followed only while it
    stays inside `within`, when that is given), its name free of NUL bytes."""
    if "\0" in str(path):
        raise Unreadable(ascii(str(path)), "names a path with a NUL byte in it")
    if within is not None:
        inside = os.path.join(os.path.realpath(within), "")
        if not os.path.realpath(path).startswith(inside):
            raise Unreadable(path, f"leaves {within} (a link out of it, or a path that climbs out)")
    try:
        handle = open(path, "rb")  # noqa: SIM115 (closed below, after the caller's reads)
    except OSError as exc:
        raise Unreadable(path, f"cannot be read ({exc.strerror or exc})") from None
    with handle:
        found = os.fstat(handle.fileno())
        if not stat.S_ISREG(found.st_mode):
            raise Unreadable(path, "is not a regular file")
        try:
            yield handle, found.st_size
        except OSError as exc:
            raise Unreadable(path, f"cannot be read ({exc.strerror or exc})") from None


def decoded(data: bytes, path: Path | str) -> str:
    """`data` as UTF-8 text: no NUL byte (a binary file where text belongs) and no invalid sequence."""
    if (at := data.find(b"\0")) >= 0:
        raise Unreadable(path, f"holds a NUL byte at offset {at}: binary, where text belongs")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise Unreadable(path, f"is not UTF-8 text (byte {exc.start}: {exc.reason})") from None


def read_text(path: Path | str, within: Path | str | None = None) -> str:
    """The file's UTF-8 text (`read_bytes`, `decoded`)."""
    return decoded(read_bytes(path, within), path)


def parse_json(text: str | bytes, path: Path | str) -> Any:
    """`text` (the contents of `path`) parsed as JSON."""
    try:
        return json.loads(decoded(text, path) if isinstance(text, bytes) else text)
    except (ValueError, RecursionError) as exc:
        raise Unreadable(path, f"is not valid JSON ({_short(exc)})") from None


def parse_toml(text: str, path: Path | str) -> dict[str, Any]:
    """`text` (the contents of `path`) parsed as TOML."""
    try:
        return tomllib.loads(text)
    except (tomllib.TOMLDecodeError, RecursionError) as exc:
        raise Unreadable(path, f"is not valid TOML ({_short(exc)})") from None


# libyaml's parser when PyYAML was built with it: the same safe subset (no object is built),
# several times faster than the pure-Python one.
SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def load_yaml(text: str | bytes) -> Any:
    """YAML text parsed by the safe loader; PyYAML's errors propagate (see `parse_yaml`)."""
    return yaml.load(text, Loader=SAFE_LOADER)


def parse_yaml(text: str, path: Path | str) -> Any:
    """`text` (the contents of `path`) parsed as YAML by the safe loader."""
    try:
        return load_yaml(text)
    except (yaml.YAMLError, RecursionError) as exc:
        raise Unreadable(path, f"is not valid YAML ({_short(exc)})") from None


def read_json(path: Path | str, within: Path | str | None = None) -> Any:
    """The file parsed as JSON."""
    return parse_json(read_text(path, within), path)


def read_jsonl(path: Path | str, within: Path | str | None = None) -> list[Any]:
    """Each non-blank line of a JSON-lines file, parsed (a line that is not JSON names its number)."""
    rows = []
    for number, line in enumerate(read_text(path, within).splitlines(), 1):
        if line.strip():
            rows.append(parse_json(line, f"{path} line {number}"))
    return rows


def read_toml(path: Path | str, within: Path | str | None = None) -> dict[str, Any]:
    """The file parsed as TOML."""
    return parse_toml(read_text(path, within), path)


def read_yaml(path: Path | str, within: Path | str | None = None) -> Any:
    """The file parsed as YAML."""
    return parse_yaml(read_text(path, within), path)


def safetensors_header(path: Path | str, within: Path | str | None = None) -> dict[str, Any]:
    """A safetensors file's header, its JSON table of tensors, read without reading a tensor: the
    length it states must fit the file and MAX_READ_BYTES, the table be a JSON object, and each
    tensor's entry name its dtype, shape and offsets, which together fill the data after it."""
    with _opened(path, within) as (handle, size):
        head = handle.read(HEADER_LENGTH_BYTES)
        if len(head) < HEADER_LENGTH_BYTES:
            raise Unreadable(path, f"is {size} bytes, too short for a safetensors header")
        (length,) = struct.unpack("<Q", head)
        if length > min(size - HEADER_LENGTH_BYTES, MAX_READ_BYTES):
            raise Unreadable(path, f"states a safetensors header of {length} bytes, more than the file holds")
        header = parse_json(handle.read(length), path)
    if not isinstance(header, dict):
        raise Unreadable(path, "has a safetensors header that is not a JSON object")
    data = size - HEADER_LENGTH_BYTES - length
    tensors = {key: entry for key, entry in header.items() if key != "__metadata__"}
    for key, entry in tensors.items():
        if not _tensor_entry(entry, data):
            raise Unreadable(
                path, f"has a safetensors header whose tensor {key!r} lacks a dtype, shape or offsets"
            )
    if max((entry["data_offsets"][1] for entry in tensors.values()), default=0) != data:
        raise Unreadable(
            path, f"holds {data} bytes of tensor data, not the bytes its header's offsets end at"
        )
    return header


def _tensor_entry(entry: object, data: int) -> bool:
    """Whether a safetensors header's entry for a tensor names its dtype, its shape (whole numbers)
    and its offsets, [begin, end] within the `data` bytes after the header."""
    if not isinstance(entry, dict) or not isinstance(entry.get("dtype"), str):
        return False
    shape, offsets = entry.get("shape"), entry.get("data_offsets")
    if not isinstance(shape, list) or not all(type(n) is int and n >= 0 for n in shape):
        return False
    return (
        isinstance(offsets, list)
        and len(offsets) == 2
        and all(type(n) is int for n in offsets)
        and 0 <= offsets[0] <= offsets[1] <= data
    )


def _short(exc: BaseException) -> str:
    """A parser's message on one line, as a finding quotes it."""
    lines = [line.strip() for line in str(exc).splitlines() if line.strip()]
    return "; ".join(lines[:3]) or type(exc).__name__


def read_safetensors(path: Path | str, within: Path | str | None = None) -> dict[str, Any]:
    """Every tensor of a safetensors file (name → torch tensor), read from its bytes once they
    pass `read_bytes`: the library's own checks of offsets and dtypes become `Unreadable`."""
    from safetensors import SafetensorError
    from safetensors.torch import load

    data = read_bytes(path, within)
    try:
        return load(data)
    except (SafetensorError, ValueError, RuntimeError, OverflowError) as exc:
        raise Unreadable(path, f"is not a valid safetensors file ({_short(exc)})") from None


# How a file is read by the suffix of its name: each format's parser, and text for the files the
# stack writes as text.
TEXT_SUFFIXES = frozenset({".md", ".txt", ".csv", ".tsv", ".jinja", ".html", ".py", ".log"})
READERS: dict[str, Callable[[Path, Path | None], Any]] = {
    ".json": read_json,
    ".jsonl": read_jsonl,
    ".toml": read_toml,
    ".yaml": read_yaml,
    ".yml": read_yaml,
    ".safetensors": safetensors_header,
}


def read_as_named(path: Path | str, within: Path | str | None = None) -> None:
    """Read the file as the format its name says (READERS, TEXT_SUFFIXES), raising `Unreadable`
    where it is not: how the checker holds every file a record cites to its form before it derives
    anything from it. A file of any other suffix is only opened (a regular file inside `within`):
    the checker hashes it as a stream and reads none of it into memory, so no size cap applies."""
    suffix = Path(path).suffix.lower()
    reader = READERS.get(suffix) or (read_text if suffix in TEXT_SUFFIXES else None)
    if reader is not None:
        reader(path, within)
        return
    with _opened(path, within):
        pass
