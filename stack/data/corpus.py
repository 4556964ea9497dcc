"""Finding the corpus and what reading it yields: documents, long documents, and skipped input.

Directories are walked recursively in sorted order, links to directories followed (each
directory once); hidden entries (names starting with "."), anything that is not a regular file,
DATA_DIR itself and any other prepared DATA_DIR found inside an input are left out, the last
with a note naming it, as are named pipes, sockets and devices (`special_kind`: an open of a pipe
waits for a writer, and prepare reads each file more than once). How a file becomes
documents depends on its format (stack.data.formats): a text file is one document, or many
with a separator; a JSONL or Parquet file holds one document per record. A document is valid
UTF-8 (stack.data.utf8 replaces what is not, and the manifest counts it) identified by the
sha256 of its bytes, so the train/held-out split is a pure function of content.
"""

from __future__ import annotations

import logging
import os
import re
import stat
import sysconfig
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from contracts.errors import BadInput
from contracts.split import document_identity
from stack.data.line_ends import LfStream
from stack.data.manifest import SOURCE_NAME_PATTERN
from stack.data.utf8 import repaired

BINARY_SNIFF_BYTES = 8000
INVALID_UTF8_ACTION = "bytes that are not UTF-8 were replaced with U+FFFD; the rest of each file was kept"
STDLIB_SOURCE = "stdlib"
ALL_FILES = "*"  # the pattern of an input without --glob
# Parts of the interpreter's library directory that are not the standard library's own text.
STDLIB_SKIP_DIRS = frozenset({"site-packages", "dist-packages", "__pycache__"})
SOURCE_NAME_RE = re.compile(SOURCE_NAME_PATTERN)
# What marks a directory as a DATA_DIR `stack prepare` wrote: its tokens are no corpus text.
PREPARED_MARKS = ("manifest.json", "shards")
# Names a note lists at most.
NAMED_IN_NOTES = 5
# What a path is that is neither a regular file nor a directory, by the test of its mode.
SPECIAL_KINDS: tuple[tuple[Callable[[int], bool], str], ...] = (
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
)

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class InputSpec:
    """One input path of one source, with the pattern its files must match."""

    source: str
    path: Path
    glob: str = ALL_FILES
    suffix: str | None = None
    skip_dirs: frozenset[str] = frozenset()  # directory names left out wherever they are


@dataclass(frozen=True)
class InputFile:
    """One file found under an input, with the source it belongs to.

    `name` is how messages and the drop log name it: its path below the input directory given
    (the file's name when the input is the file), never an absolute path. `origin` is the file the
    user gave when `path` is a copy of it read in its place (stack.data.unpack).
    """

    source: str
    path: Path
    name: str = ""
    origin: Path | None = None
    below: bool = False  # found in a directory input (--glob applies), not given as an input itself

    @property
    def label(self) -> str:
        """The name messages, the drop log and the manifest use (`name_text`)."""
        return name_text(self.name or self.path.name)

    @property
    def given(self) -> Path:
        """The file as the user gave it, for messages that name its path (`name_text`: a name that
        is not UTF-8 is shown with its bytes escaped, so this is no path to open)."""
        return Path(name_text(self.origin or self.path))


def name_text(name: str | os.PathLike[str]) -> str:
    """A file's name or path as text any file can hold: itself when it is UTF-8, else with each byte
    that is not UTF-8 written as `\\xNN` (`loop\\xe9.txt`), the bytes os.fsencode gives back.

    Python hands such a byte over as a lone surrogate (U+DCE9 for 0xE9), which no UTF-8 file, JSON
    record or drop log line can hold: every name prepare writes or says passes through here, so a
    file's name never refuses the corpus it is in.
    """
    return os.fsencode(name).decode("utf-8", "backslashreplace")


@dataclass(frozen=True)
class Document:
    """A document's text as valid UTF-8, its content hash, and whether bytes had to be replaced.

    `where` says where it was read (file, then line, row, document number or byte range), for
    messages and the drop log. `delimited` is false for a text file read without a separator,
    whole or cut by size: its length is the file's, which the oversize filter does not judge.
    `raw` is the input bytes it was read from (stack.data.accounting: the file bytes of its span,
    or its record's text field), and `crlf` whether its CRLF were read as LF; -1: not counted.
    """

    source: str
    data: bytes
    sha: bytes
    invalid_utf8: bool
    where: str = ""
    delimited: bool = True
    raw: int = -1
    crlf: bool = False


@dataclass(frozen=True)
class FileRegion:
    """A document too long to hold in the working set: bytes `start` to `end` of a file.

    It is read again, in blocks, when it is sampled or encoded; its hash is known only then.
    """

    source: str
    path: Path
    start: int
    end: int
    where: str = ""
    delimited: bool = True
    crlf: bool = False  # read every CRLF as LF (stack.data.line_ends)

    @property
    def raw(self) -> int:
        """The file bytes the document is read from (stack.data.accounting)."""
        return self.end - self.start

    def raw_blocks(self, size: int) -> Iterator[bytes]:
        """The region's bytes as read from disk, `size` at a time (CRLF as LF when `crlf`)."""
        blocks = self._read(size)
        return LfStream().blocks(blocks) if self.crlf else blocks

    def read(self, start: int, end: int) -> bytes:
        """Bytes `start` to `end` of the region, as on disk (a sample's stretch: line ends do not matter)."""
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.start + start)
                return handle.read(min(end, self.end - self.start) - start)
        except OSError as exc:
            raise unreadable(self.path, exc) from None

    def _read(self, size: int) -> Iterator[bytes]:
        try:
            with open(self.path, "rb") as handle:
                handle.seek(self.start)
                left = self.end - self.start
                while left > 0 and (block := handle.read(min(size, left))):
                    left -= len(block)
                    yield block
        except OSError as exc:
            raise unreadable(self.path, exc) from None


@dataclass(frozen=True)
class Skipped:
    """Input that is not a document, and why: the manifest counts these per source. `what` names it
    (a file and its kind, or a record's line) for the note that lists what was skipped; `size` is
    a blank record's text bytes (stack.data.accounting; a file's framing is its reader's Framing)."""

    source: str
    reason: str  # "binary" (a file) | "empty" (a file, or a record without text) | "missing_field"
    what: str = ""
    size: int = 0


@dataclass(frozen=True)
class Framing:
    """What one input file of `source` held besides its documents (stack.data.accounting):
    `removed`, the bytes its reader took away as framing, by kind; and, for a file of records,
    `read`, the UTF-8 bytes of the text fields it read, the input side of the books."""

    source: str
    removed: dict[str, int]
    read: int = 0


@dataclass(frozen=True)
class Note:
    """Something a reader found that the user should read; prepare says it on screen. Notes with an
    `about` (a file's name) are said once for all the files they are about, their names listed."""

    source: str
    text: str
    about: str = ""


def document(
    source: str, text: bytes, where: str = "", delimited: bool = True, raw: int = -1, crlf: bool = False
) -> Document:
    """The document of `text` bytes, read from `raw` input bytes (CRLF as LF when `crlf`): repaired
    to valid UTF-8, then hashed."""
    data, invalid = repaired(text)
    return Document(source, data, document_identity(data), invalid, where, delimited, raw, crlf)


def unreadable(path: Path, exc: OSError) -> BadInput:
    """The one line for an input file that cannot be read."""
    return BadInput(f"cannot read {name_text(path)}: {exc.strerror}; fix its permissions or leave it out")


def special_kind(path: Path) -> str | None:
    """What `path` is when it is a named pipe, a socket or a device (links followed): no file prepare
    can read, since it reads each file more than once and an open of a pipe waits for a writer;
    None for anything else (a regular file, a directory, a broken link)."""
    try:
        mode = path.stat().st_mode
    except OSError:
        return None
    return next((kind for test, kind in SPECIAL_KINDS if test(mode)), None)


@dataclass
class Named:
    """What a note names: the first NAMED_IN_NOTES names, and how many there are in all."""

    first: list[str] = field(default_factory=list)
    count: int = 0

    def add(self, name: str) -> None:
        if self.count < NAMED_IN_NOTES:
            self.first.append(name)
        self.count += 1

    def __str__(self) -> str:
        more = f"; and {self.count - len(self.first):,} more" if self.count > len(self.first) else ""
        return "; ".join(self.first) + more


def is_binary(head: bytes) -> bool:
    """git's rule: a NUL byte in the first BINARY_SNIFF_BYTES bytes makes a file binary; and a PDF,
    whose first kilobytes may hold none, is no text either."""
    return b"\0" in head[:BINARY_SNIFF_BYTES] or head.startswith(b"%PDF-")


def holds_text(item: InputFile) -> bool:
    """Whether the text reader reads `item` as text rather than skip it as binary (`is_binary` of its
    first bytes, as the reader sniffs them), for what is said of a file before it is read."""
    try:
        with open(item.path, "rb") as handle:
            return not is_binary(handle.read(BINARY_SNIFF_BYTES))
    except OSError as exc:
        raise unreadable(item.given, exc) from None


# Text of ASCII characters in UTF-16 has a NUL in every other byte; past this share of them, a file
# without a byte-order mark is named as UTF-16 text.
UTF16_NUL_SHARE = 0.9
# Files that hold no text, by their first bytes: what they are, and what to do.
KINDS = {
    b"PK\x03\x04": "a zip archive (unpack it)",
    b"\x89PNG": "a PNG image",
    b"\xff\xd8\xff": "a JPEG image",
    b"GIF8": "a GIF image",
    b"%PDF": "a PDF (extract its text, e.g. with pdftotext)",
    b"PAR1": "a Parquet file (name it .parquet, or pass --format parquet)",
    b"SQLite format 3\x00": "an SQLite database",
    b"\x7fELF": "an executable",
    b"7z\xbc\xaf\x27\x1c": "a 7-Zip archive (unpack it)",
    b"\x00asm": "a WebAssembly module",
}


def kind_of(head: bytes) -> str:
    """What a file that holds no text is, from its first bytes, in words a user can act on."""
    found = next((kind for magic, kind in KINDS.items() if head.startswith(magic)), None)
    if found is not None:
        return found
    if head[257:262] == b"ustar":
        return "a tar archive (unpack it)"
    pairs = head[: BINARY_SNIFF_BYTES // 2 * 2]
    for order, zeros in (("le", pairs[1::2]), ("be", pairs[0::2])):
        if zeros and zeros.count(0) > UTF16_NUL_SHARE * len(zeros):
            return f"text in UTF-16 without a byte-order mark (convert it: iconv -f utf-16{order} -t utf-8)"
    return f"binary: a NUL byte in its first {BINARY_SNIFF_BYTES:,} bytes"


def stdlib_dir() -> Path:
    """The running interpreter's standard library: the embedded default corpus."""
    return Path(sysconfig.get_paths()["stdlib"])


def default_spec(glob: str | None) -> InputSpec:
    """The default corpus: the standard library's .py files (narrowed by --glob when given)."""
    return InputSpec(STDLIB_SOURCE, stdlib_dir(), glob or ALL_FILES, suffix=".py", skip_dirs=STDLIB_SKIP_DIRS)


def parse_input(arg: str, default_source: str) -> tuple[str, Path]:
    """`NAME=PATH` names the source of PATH; a bare PATH belongs to `default_source`.

    Only a left part that is a valid source name (no "/") counts, so `./a=b` is the path `a=b`.
    """
    name, sep, rest = arg.partition("=")
    if sep and SOURCE_NAME_RE.match(name) and rest:
        return name, Path(rest)
    return default_source, Path(arg)


def check_source_name(name: str) -> str:
    """A source name is a word of letters, digits, '_', '.', '-' (it becomes part of shard names)."""
    if not SOURCE_NAME_RE.match(name):
        raise BadInput(
            f"source name {name!r} is not valid: use letters, digits, '_', '.', '-' (e.g. web, code)"
        )
    return name


def _prepared(directory: Path) -> bool:
    """Whether `directory` is a DATA_DIR `stack prepare` wrote (a manifest beside its shards)."""
    return all((directory / mark).exists() for mark in PREPARED_MARKS)


def _walk(spec: InputSpec, skip: Path, special: Named) -> Iterator[Path]:
    """The files under `spec.path` it takes, in sorted order. Links to directories are followed,
    each directory read once (a link back up the tree would loop); a prepared DATA_DIR is left
    out with a note, since reading its manifest and shards as text would train on tokens. A named
    pipe, socket or device it would take is added to `special`, never opened."""
    seen = {spec.path.resolve()}
    for dirpath, dirnames, filenames in os.walk(spec.path, followlinks=True):
        here = Path(dirpath)
        kept = []
        for d in sorted(dirnames):
            real = (here / d).resolve()
            if d.startswith(".") or d in spec.skip_dirs or real == skip or real in seen:
                continue
            if _prepared(here / d):
                log.warning(
                    f"note: left out {name_text(here / d)}: it is a DATA_DIR `stack prepare` wrote, not "
                    "corpus text"
                )
                continue
            seen.add(real)
            kept.append(d)
        dirnames[:] = kept
        for name in sorted(filenames):
            path = here / name
            rel = PurePosixPath(path.relative_to(spec.path).as_posix())
            if name.startswith(".") or not rel.match(spec.glob) or spec.suffix not in (None, path.suffix):
                continue
            if path.is_file():
                yield path
            elif (kind := special_kind(path)) is not None:  # else a broken link, left out
                special.add(f"{name_text(rel)} ({kind})")


def discover(specs: Sequence[InputSpec], out_dir: Path) -> list[InputFile]:
    """Every file the inputs name, ordered by source, then input, then path; none from `out_dir`."""
    skip = out_dir.resolve()
    found: list[tuple[str, int, InputFile]] = []
    special = Named()
    for number, spec in enumerate(specs):
        check_source_name(spec.source)
        shown = name_text(spec.path)
        if not spec.path.exists():
            raise BadInput(f"input {shown} does not exist; give existing files or directories")
        if spec.path.resolve().is_relative_to(skip):
            raise BadInput(f"input {shown} is inside --out {out_dir}; prepare would read its own output")
        if (kind := special_kind(spec.path)) is not None:
            raise BadInput(
                f"input {shown} is {kind}, not a file or a directory: prepare reads each file more than "
                f"once; write what it carries to a file first (e.g. cat {shown} > corpus.txt) and give that"
            )
        if spec.path.is_file():
            found.append((spec.source, number, InputFile(spec.source, spec.path, spec.path.name)))
        else:
            found.extend(
                (
                    spec.source,
                    number,
                    InputFile(spec.source, p, p.relative_to(spec.path).as_posix(), below=True),
                )
                for p in _walk(spec, skip, special)
            )
    if special.count:
        log.warning(
            f"note: left out {special.count:,} named pipe(s), socket(s) or device(s), which prepare does not "
            f"read (it reads each file more than once): {special}; to read what one carries, write it to "
            "a file first (cat PIPE > FILE)"
        )
    if not found:
        where = ", ".join(name_text(s.path) for s in specs)
        patterns = sorted({s.glob for s in specs} - {ALL_FILES})
        if not patterns:
            raise BadInput(
                f"no files under {where} (hidden files and directories are left out); give a directory "
                "that holds the corpus"
            )
        raise BadInput(
            f"no files matched --glob {' / '.join(patterns)} under {where}; check the paths and --glob"
        )
    found.sort(key=lambda item: (item[0], item[1]))  # stable: keeps each walk's sorted order
    return [item[2] for item in found]
