"""What an evaluation of a repository file states of it, held to the file at the record's commit.

`stack eval --text PATH` scores a file; its record states the file's sha256 (`metrics.text_sha256`,
GATE-EVAL-003's `file_sha256` and `text_sha256`), its bytes and characters, and the tokens the
checkpoint's tokenizer makes of it (every score divides by them). Where PATH is a file of the
repository, git holds it at the record's commit, and each of those numbers is a function of that
blob (read as `stack eval` reads it, stack.data.unpack.readable) and, for the tokens, of the
tokenizer of the committed checkpoint the command read (checkpoint_reads.committed_read). A
forger who restated the counts together (7704 tokens as 6001, the bits per byte with them) or
one digest of the two left them agreeing with each other, not
with the file.

A clean record scored the file of its commit. A record of a dirty tree may have scored an edited
file: its numbers are derived where what it states proves the text the same (the sha256 of the
file as stored, GATE-EVAL-003's `file_sha256`, or `metrics.text_sha256` where the gate kept none,
is the committed blob's), and where it does not, a warning names the file left underived; never a
silent skip.
"""

from __future__ import annotations

import hashlib
import posixpath
import tempfile
from collections.abc import Callable
from pathlib import Path, PurePath
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord
from stack.data.corpus import InputFile
from stack.data.tokenizer_record import tokenizer_from_state
from stack.data.unpack import readable
from stack.train.checkpoint import read_state
from tools.integrity.models.checkpoint_reads import committed_read
from tools.integrity.settings.argv_record import word_of

SCORED_GATE = "GATE-EVAL-003"


def scored_texts(record: EvidenceRecord) -> list[str]:
    """The repository paths the text an evaluation scored may have (`--text PATH`, given relative to
    where it ran, which its config states resolved), dirty or clean: PATH, for a run started at the
    root of its checkout, and each shorter tail of it, for one started above it (`repo/README.md`
    from the directory holding the clone `repo` names its README.md); none for another record.
    `committed_text` picks the one its commit holds."""
    if record.run.kind != "eval":
        return []
    given = word_of(record.run.argv or [], "text")
    resolved = record.config.get("text") if isinstance(record.config, dict) else None
    if given is None or PurePath(given).is_absolute() or not isinstance(resolved, str):
        return []
    path = posixpath.normpath(given)
    if path.startswith("..") or not resolved.endswith("/" + path):
        return []
    parts = PurePath(path).parts
    return [posixpath.join(*parts[at:]) for at in range(len(parts))]


def committed_text(paths: list[str], blob_of: Callable[[str], bytes | None]) -> tuple[str, bytes | None]:
    """(repository path, bytes at the commit) of the scored text: the longest of `scored_texts`'s
    paths that the commit holds (`blob_of` is None for one it does not), or the first path with
    None where the commit holds none of them."""
    return next(((path, blob) for path in paths if (blob := blob_of(path)) is not None), (paths[0], None))


def _as_read(blob: bytes) -> bytes:
    """The bytes `stack eval` scores of a file holding `blob`: the blob, or its UTF-8 text when it
    is compressed or UTF-16/UTF-32 (stack.data.unpack.readable, which `stack eval` reads through)."""
    with tempfile.TemporaryDirectory(prefix="gatestack-text-") as scratch:
        stored = Path(scratch) / "text"
        stored.write_bytes(blob)
        return readable(InputFile("main", stored, stored.name), Path(scratch) / "read", 0).path.read_bytes()


def _stated(record: EvidenceRecord) -> dict[str, Any]:
    """Field name → value of what the record states of the scored text: its metrics and the gate's."""
    gate = next((g.measured for g in record.gates if g.id == SCORED_GATE), None)
    measured = gate if isinstance(gate, dict) else {}
    metrics = record.metrics if isinstance(record.metrics, dict) else {}
    stated = {f"metrics.{key}": metrics.get(key) for key in METRICS_STATED}
    stated |= {f"{GATE_FIELD}.{key}": measured.get(key) for key in GATE_STATED}
    return {field: value for field, value in stated.items() if value is not None}


# What a `--text` evaluation states of the text, in its metrics and GATE-EVAL-003's measured values.
METRICS_STATED = ("text_sha256", "bytes", "tokens", "predicted_tokens")
GATE_STATED = (
    "file_sha256",
    "text_sha256",
    "file_bytes",
    "text_bytes",
    "bytes",
    "chars",
    "tokens",
    "scored_targets",
    "predicted_tokens",
)
GATE_FIELD = f"gates[{SCORED_GATE}].measured"


def text_problems(
    record: EvidenceRecord, path: str, blob: bytes, root: Path = REPO_ROOT
) -> tuple[list[str], list[str]]:
    """(violations, warnings) of what the record states of repository file `path`, whose bytes at
    its commit are `blob` (see the module docstring)."""
    stated = _stated(record)
    stored = _as_read(blob)
    digest = hashlib.sha256(stored).hexdigest()
    proof = stated.get(f"{GATE_FIELD}.file_sha256", stated.get("metrics.text_sha256"))
    if record.code.git_dirty and proof != digest:
        return [], [
            f"{path} at its commit hashes to {digest}, not the {proof} it states it scored: a dirty tree may "
            "have edited it, so what the file decides of the record is not derived"
        ]
    try:
        text = stored.decode("utf-8")
    except UnicodeDecodeError:
        return [f"{path} at its commit is not UTF-8 text, which `stack eval --text` scores"], []
    derived = {**_derived(stored, text), **_tokens(record, text, root)}
    return [
        f"{field} is {stated[field]!r}, but {path} {says(value)}"
        for field, (value, says) in derived.items()
        if field in stated and stated[field] != value
    ], []


Derived = dict[str, tuple[Any, Callable[[Any], str]]]


def _derived(stored: bytes, text: str) -> Derived:
    """Field → (value, what the file says of it) for what the text itself decides."""
    encoded = text.encode("utf-8")
    sha, n = hashlib.sha256(encoded).hexdigest(), len(encoded)

    def hashes(value: Any) -> str:
        return f"hashes to {value!r}"

    def holds(value: Any) -> str:
        return f"holds {value} UTF-8 bytes"

    return {
        "metrics.text_sha256": (sha, hashes),
        f"{GATE_FIELD}.text_sha256": (sha, hashes),
        f"{GATE_FIELD}.file_sha256": (hashlib.sha256(stored).hexdigest(), hashes),
        "metrics.bytes": (n, holds),
        f"{GATE_FIELD}.bytes": (n, holds),
        f"{GATE_FIELD}.text_bytes": (n, holds),
        f"{GATE_FIELD}.file_bytes": (len(stored), lambda value: f"holds {value} bytes as stored"),
        f"{GATE_FIELD}.chars": (len(text), lambda value: f"holds {value} characters"),
    }


def _tokens(record: EvidenceRecord, text: str, root: Path) -> Derived:
    """Field → (value, what the file says of it) for the tokens the tokenizer of the committed
    checkpoint the evaluation read makes of the text (none where it read a model elsewhere): every
    one of them, and every one after the first, each predicted once (stack.eval.bpb.evaluate_text)."""
    try:
        read = committed_read(record, root)
        if read is None:
            return {}
        word, checkpoint = read
        tokens = len(tokenizer_from_state(read_state(checkpoint)["tokenizer"]).encode(text))
    except (BadInput, KeyError, TypeError):
        return {}  # checkpoint_reads.read_checkpoint_problems names a committed checkpoint that does not read

    def makes(value: Any) -> str:
        return f"is {value} token(s) as the tokenizer of {word} encodes it"

    def predicts(value: Any) -> str:
        return f"is {value} token(s) after the first as the tokenizer of {word} encodes it"

    return {
        "metrics.tokens": (tokens, makes),
        f"{GATE_FIELD}.tokens": (tokens, makes),
        "metrics.predicted_tokens": (tokens - 1, predicts),
        f"{GATE_FIELD}.predicted_tokens": (tokens - 1, predicts),
        f"{GATE_FIELD}.scored_targets": (tokens - 1, predicts),
    }
