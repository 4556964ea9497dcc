"""manifest.json: every file `stack prepare` wrote, with its size and sha256, and the corpus totals.

The readers trust nothing but the manifest: a shard it does not list is never read, and a path
in it must stay inside DATA_DIR, so a manifest cannot be used to read files elsewhere. The
manifest holds no absolute paths and no clock, so preparing the same corpus twice gives the
same bytes, and its sha256 is a fingerprint of the data that reader states are tied to.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from pathlib import Path, PurePosixPath
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    ValidationError,
    field_validator,
    model_validator,
)

from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes
from stack.artifacts import DATA_MANIFEST as MANIFEST_FILE
from stack.artifacts import require
from stack.data.damage import Damaged

FORMAT_VERSION = 1
SPLITS = ("train", "heldout")
SOURCE_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]*$"
SHA256_PATTERN = r"^[0-9a-f]{64}$"
# The largest vocabulary each shard dtype can hold (ids 0..limit-1).
DTYPE_VOCAB_LIMITS = {"uint16": 1 << 16, "uint32": 1 << 32}

Split = Literal["train", "heldout"]


class Strict(BaseModel):
    """Unknown keys are refused and values are immutable, so a hand-edited manifest shows."""

    model_config = ConfigDict(extra="forbid", frozen=True)


def _relative_inside(path: str) -> str:
    pure = PurePosixPath(path)
    if not path or "\\" in path or pure.is_absolute() or ".." in pure.parts or path.startswith("~"):
        raise ValueError(f"path {path!r} must be relative to DATA_DIR and stay inside it")
    return path


class DataFile(Strict):
    """One file of DATA_DIR, by its path relative to DATA_DIR."""

    path: str
    bytes: int = Field(ge=0)
    sha256: str = Field(pattern=SHA256_PATTERN)

    _check_path = field_validator("path")(_relative_inside)


class Shard(DataFile):
    """One token shard: the documents of one source and one split, separated by EOT."""

    split: Split
    source: str = Field(pattern=SOURCE_NAME_PATTERN)
    tokens: int = Field(ge=1)
    documents: int = Field(ge=1)


class TokenizerEntry(Strict):
    """Which tokenizer made the shards; `bpe` and `hf` keep their tokenizer.json in a file beside them."""

    name: Literal["byte", "bpe", "hf"]
    vocab_size: int = Field(ge=2)
    sha256: str = Field(pattern=SHA256_PATTERN)
    path: str | None = None
    # hf only: the token written after every document (the model's eos_token), by its text.
    eot_token: str | None = None
    # What the tokenizer does, as one digest (stack.data.tokenizer_identity): the same for the
    # model's checkpoint, its export and its re-import. None in a manifest written before it was.
    identity: str | None = Field(default=None, pattern=SHA256_PATTERN)
    # hf only: the files that name the model's special tokens, as they came, and config.json's
    # special ids (stack.data.hf_specials.HfSettings); None in a manifest written before they were kept.
    hf_settings: dict[str, Any] | None = None
    # bpe trained by prepare only: the sample it read, as contracts.bpe_sample.sample_digest states it
    # (GATE-DATA-007's check sample); left out of the manifest's bytes where None.
    sample_sha256: str | None = Field(default=None, pattern=SHA256_PATTERN)

    @field_validator("path")
    @classmethod
    def _inside(cls, path: str | None) -> str | None:
        return None if path is None else _relative_inside(path)

    @model_validator(mode="after")
    def _file_iff_bpe(self) -> Self:
        if (self.path is not None) != (self.name != "byte"):
            raise ValueError("a bpe or hf tokenizer names its file; a byte tokenizer has none")
        if (self.eot_token is not None) != (self.name == "hf"):
            raise ValueError("an hf tokenizer names its eot_token; the stack's own tokenizers have none")
        return self


class SourceStats(Strict):
    """What prepare found under one source's inputs, and what it did with it."""

    files: int = Field(ge=0)
    documents: int = Field(ge=0)
    binary_skipped: int = Field(ge=0)
    empty_skipped: int = Field(ge=0)
    invalid_utf8_files: int = Field(ge=0)
    missing_field_skipped: int = Field(default=0, ge=0)  # JSONL records without the --text-field field


class NormalisedInput(Strict):
    """What the readers normalised in one source's files (stack.data.line_ends), so a file saved by
    a Windows editor is read like any other and the manifest says so."""

    byte_order_marks: int = Field(default=0, ge=0)  # files that began with a UTF-8 byte-order mark, dropped
    crlf_files: int = Field(default=0, ge=0)  # files whose CRLF line ends were read as LF


def normalised_input(counts: Mapping[str, Mapping[str, int]]) -> dict[str, NormalisedInput]:
    """The manifest's `normalised`: each source where a reader normalised something, by source name."""
    return {
        source: NormalisedInput(**found) for source, found in sorted(counts.items()) if any(found.values())
    }


class SplitTotals(Strict):
    """Tokens and documents of one split, summed over its shards."""

    tokens: int = Field(ge=0)
    documents: int = Field(ge=0)


class LabelFile(DataFile):
    """The labels of one token shard of supervised fine-tuning data (stack.data.sft_prepare)."""

    shard: str
    tokens: int = Field(ge=1)


class SftEntry(Strict):
    """What `stack prepare --format chat|prompt-completion` adds: how examples were rendered and packed.

    `labels` hold, per token of each shard, the example it belongs to and whether it is
    supervised. The marker and supervision counts are what GATE-SFT-001/002 judged at prepare;
    a training run judges them again from these files and this entry.
    """

    format: Literal["chat", "prompt-completion", "prefs"]  # prefs: pairs, one per window
    template: str
    template_sha256: str = Field(pattern=SHA256_PATTERN)
    # prompt-completion: joined as TRL joins them (concatenate) or rendered as two chat turns
    join: Literal["concatenate", "chat-turns"] | None = None
    # The template as Jinja (stack.data.chat_jinja) when it rendered the examples: what a model
    # trained on them carries into its checkpoints and its Hugging Face export
    chat_template: str | None = None
    # What rendered them: the stack's template (or TRL's join), or the model's own chat template,
    # whose prompts may hold its EOS (stack.data.chat_render; GATE-SFT-001's prompt_eos)
    renderer: Literal["stack", "model"] = "stack"
    pack_len: int = Field(ge=2)
    examples: dict[Split, int]
    supervised_tokens: dict[Split, int]
    assistant_turns: int = Field(ge=0)
    markers_missing: int = Field(ge=0)
    # Assistant turns read as context, not supervised: the model's own template writes them
    # otherwise once a later turn follows (Qwen3's drops their reasoning; stack.data.chat_render).
    # Left out of the manifest while 0, so data prepared before the count existed reads the same.
    history_turns: int = Field(default=0, ge=0, exclude_if=lambda count: count == 0)
    labels: list[LabelFile]
    # examples left out by rule (empty, too_long, and as read unanswered, tie, diverged:
    # stack.data.sft_prepare), the tokens the longest too-long one needs, and per rule where its
    # first was read and why; the filters' own drops are in `filters`
    dropped: dict[str, int] = {}
    longest_dropped: int | None = None
    first_dropped: dict[str, str] = {}


class ReadSettings(Strict):
    """How `stack prepare` found and read a corpus's files, as it was handed the options: the
    --format, --glob, --doc-sep, --doc-bytes, --text-field values (as `TextFields.given` writes
    them), --source-field, --shard-tokens and --bpe-sample the files were read and the shards
    written with. The integrity check holds the record's config to them (a --glob that never
    reached the walk would otherwise be stated nowhere)."""

    format: str
    glob: str | None
    doc_sep: str | None
    doc_bytes: int = Field(ge=1)
    text_field: list[str]
    source_field: str | None
    shard_tokens: int = Field(ge=1)
    bpe_sample: int = Field(ge=1)


class ScriptTally(Strict):
    """The documents of one writing system in a source, as the script filter read them: in, out and
    dropped by reason (by any filter)."""

    documents_in: int = Field(ge=0)
    documents_out: int = Field(ge=0)
    dropped: dict[str, int]


class FilterReport(Strict):
    """What the filters did to one source (stack.data.filters): which ran, or the waiver, and the counts.

    documents_in = documents_out + Σ dropped (GATE-DATA-014), each drop a line of the drop log;
    `unread` documents were too long to hold, judged on their first window and length, not by
    dedup. `scripts`: what the script filter kept (measured, or the settings' `expected`): the
    source's writing system, or, `multilingual`, every script found in it; `by_script`: the
    documents it read, by writing system; `examples`: the first document dropped for each
    reason; `canaries`: per filter, the planted documents and how many of them that filter
    dropped (GATE-DATA-012/013).
    """

    filters: list[str]
    kind: str
    pre_clean: bool
    waiver: str | None
    scripts: list[str] | None = None
    multilingual: bool = False
    documents_in: int = Field(ge=0)
    documents_out: int = Field(ge=0)
    unread: int = Field(ge=0)
    dropped: dict[str, int]
    examples: dict[str, str] = {}
    canaries: dict[str, dict[str, int]] = {}
    by_script: dict[str, ScriptTally] = {}


class ByteAccount(Strict):
    """Where one source's input bytes went (stack.data.accounting, GATE-DATA-014's check `bytes`):
    input by unit (`text_files`, `text_fields`, `turns`) = the bytes of the documents kept + those
    dropped, by reason + the framing removed, by kind; `altered_documents` held in memory whose
    text is not the bytes they were read from though nothing normalised them (none, once published)."""

    input_bytes: dict[str, int]
    kept_bytes: int = Field(ge=0)
    dropped_bytes: dict[str, int]
    framing_bytes: dict[str, int]
    altered_documents: int = Field(ge=0)


class Manifest(Strict):
    """The whole DATA_DIR as data. `sha256` is the fingerprint of the manifest file's bytes."""

    format_version: int
    tokenizer: TokenizerEntry
    dtype: Literal["uint16", "uint32"]
    seed: int = Field(ge=0)
    val_fraction: float = Field(ge=0.0, lt=1.0)
    invalid_utf8_action: str
    sources: dict[str, SourceStats]
    shards: list[Shard]
    documents: DataFile
    totals: dict[Split, SplitTotals]
    duplicate_documents: int = Field(ge=0)
    sft: SftEntry | None = None  # supervised fine-tuning data only; absent from other manifests
    filters: dict[str, FilterReport] = {}  # per source; absent from manifests made before filters
    drop_log: DataFile | None = None  # drops.jsonl (stack.data.filters.droplog); absent before it was kept
    # per source, where a reader dropped a byte-order mark or read CRLF as LF; absent when none did
    normalised: dict[str, NormalisedInput] = {}
    # per source, where every input byte went (GATE-DATA-014); absent from manifests made before it
    accounting: dict[str, ByteAccount] = {}
    # a corpus's read settings (not a fine-tuning set's); absent from manifests made before spec 1.33.0
    reading: ReadSettings | None = None

    _sha256: str = PrivateAttr(default="")

    @model_validator(mode="after")
    def _consistent(self) -> Self:
        if self.tokenizer.vocab_size > DTYPE_VOCAB_LIMITS[self.dtype]:
            raise ValueError(f"vocab {self.tokenizer.vocab_size} does not fit dtype {self.dtype}")
        paths = [s.path for s in self.shards]
        if len(set(paths)) != len(paths):
            raise ValueError("a shard path is listed twice")
        for shard in self.shards:
            if shard.source not in self.sources:
                raise ValueError(f"shard {shard.path} names unknown source {shard.source!r}")
        for split in SPLITS:
            listed = self.totals.get(split, SplitTotals(tokens=0, documents=0))
            tokens = sum(s.tokens for s in self.shards if s.split == split)
            documents = sum(s.documents for s in self.shards if s.split == split)
            if (listed.tokens, listed.documents) != (tokens, documents):
                raise ValueError(f"totals for {split} do not add up to its shards")
        return self

    @property
    def sha256(self) -> str:
        """sha256 of manifest.json as read (or as written): the data fingerprint."""
        return self._sha256

    def shards_of(self, split: str) -> list[Shard]:
        """The shards of one split, ordered by source then path: the order windows are numbered in."""
        return sorted((s for s in self.shards if s.split == split), key=lambda s: (s.source, s.path))

    def files(self) -> list[str]:
        """Every path this manifest owns, itself included: what `--force` may replace."""
        return [*self.hashes(), MANIFEST_FILE]

    def hashes(self) -> dict[str, str]:
        """Every file it lists (itself excepted) with the sha256 prepare recorded for it.

        `--force` replaces a listed file only when it still has this sha256: a file changed
        since, or put there by someone else under a listed name, is not prepare's to delete.
        """
        listed = {s.path: s.sha256 for s in self.shards} | {self.documents.path: self.documents.sha256}
        if self.tokenizer.path is not None:
            listed[self.tokenizer.path] = self.tokenizer.sha256  # the sha256 of the file's bytes
        if self.sft is not None:
            listed |= {labels.path: labels.sha256 for labels in self.sft.labels}
        if self.drop_log is not None:
            listed[self.drop_log.path] = self.drop_log.sha256
        return listed


def manifest_bytes(manifest: Manifest) -> bytes:
    """The canonical serialisation: fixed field order, so equal manifests have equal bytes.

    A manifest without supervised data leaves `sft` out, so its bytes (and every reader state
    tied to their sha256) are what they were before the field existed; so with `filters`,
    `drop_log`, `normalised`, `accounting` and `reading` when they are empty, with the supervised
    entry's `first_dropped`, and with the tokenizer's `sample_sha256` where none is stated."""
    exclude: dict[str, Any] = {
        name: True
        for name in ("sft", "filters", "drop_log", "normalised", "accounting", "reading")
        if not getattr(manifest, name)
    }
    if manifest.sft is not None and not manifest.sft.first_dropped:
        exclude["sft"] = {"first_dropped": True}
    if manifest.tokenizer.sample_sha256 is None:
        exclude["tokenizer"] = {"sample_sha256": True}
    return (manifest.model_dump_json(indent=2, exclude=exclude or None) + "\n").encode()


def write_manifest(data_dir: Path, manifest: Manifest) -> Manifest:
    """Write manifest.json atomically and return the manifest stamped with its fingerprint."""
    payload = manifest_bytes(manifest)
    atomic_write_bytes(Path(data_dir) / MANIFEST_FILE, payload)
    manifest._sha256 = hashlib.sha256(payload).hexdigest()
    return manifest


def parse_manifest(data_dir: Path, payload: bytes) -> Manifest:
    """Validate manifest bytes that belong to `data_dir`; any defect is BadInput naming the file."""
    where = Path(data_dir) / MANIFEST_FILE
    # A manifest that cannot be read vouches for no file, so prepare's --force replaces none.
    untrusted = f"{MANIFEST_FILE}, prepare's record of the files it wrote there, cannot be read"

    def damaged(problem: str) -> Damaged:
        return Damaged(data_dir, problem, untrusted)

    try:
        raw = json.loads(payload)
    except (ValueError, UnicodeDecodeError) as exc:
        raise damaged(f"{where} is corrupt: not JSON ({exc})") from None
    if isinstance(raw, dict) and raw.get("format_version") != FORMAT_VERSION:
        raise damaged(
            f"{where} has format_version {raw.get('format_version')!r}; this code reads {FORMAT_VERSION}"
        )
    try:
        manifest = Manifest.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        loc = ".".join(str(p) for p in first["loc"]) or "manifest"
        raise damaged(f"{where} is corrupt: {loc}: {first['msg']}") from None
    root = Path(data_dir).resolve()
    for rel in manifest.files():
        if not (root / rel).resolve().is_relative_to(root):
            raise damaged(
                f"{where} names {rel!r}, which resolves outside {data_dir}; a manifest may only "
                "name files inside its own DATA_DIR"
            )
    manifest._sha256 = hashlib.sha256(payload).hexdigest()
    return manifest


def load_manifest(data_dir: Path | str) -> Manifest:
    """The manifest of a prepared DATA_DIR; a missing or corrupt one is BadInput with the fix.

    A directory that is another kind of artifact (a checkpoint, whose manifest.json has the same
    name; a run directory) is refused for what it is (stack.artifacts), not called corrupt."""
    data_dir = Path(data_dir)
    try:
        return _load_manifest(data_dir)
    except BadInput:
        if data_dir.is_dir():
            require(data_dir, "data")
        raise


def _load_manifest(data_dir: Path) -> Manifest:
    if data_dir.exists() and not data_dir.is_dir():
        raise BadInput(
            f"DATA_DIR {data_dir} is a file, not a directory; give the directory `stack prepare` wrote"
        )
    if not data_dir.is_dir():
        raise BadInput(
            f"DATA_DIR {data_dir} does not exist; make it with `stack prepare INPUT --out {data_dir}`"
        )
    try:
        payload = (data_dir / MANIFEST_FILE).read_bytes()
    except FileNotFoundError:
        raise BadInput(
            f"{data_dir} has no {MANIFEST_FILE}: it is not a prepared DATA_DIR; "
            f"make one with `stack prepare INPUT --out {data_dir}`"
        ) from None
    except OSError as exc:
        raise BadInput(
            f"cannot read {data_dir / MANIFEST_FILE} ({exc.strerror}); fix its permissions, or prepare the "
            f"data again into a new directory (`stack prepare ... --out NEW_DIR`)"
        ) from None
    return parse_manifest(data_dir, payload)
