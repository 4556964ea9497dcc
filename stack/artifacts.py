"""What a path is, and what each command accepts: one identifier for every artifact gatestack writes.

A command handed the wrong thing that guessed from the one file it happened to open would be
wrong about why it refused: a healthy DATA_DIR read as a checkpoint is "a manifest that lacks
key 'step'; restore the checkpoint from a good copy". Here each kind of
artifact is defined once, by the files it is made of, and named in the user's words; each input
of each command says which kinds it takes. So a command refuses a valid artifact of another kind
in one line that names both kinds and the command that fits:

    DIR is a prepared DATA_DIR of pretraining text (written by `stack prepare`); `stack sample`
    needs a run directory or checkpoint: train one on it with `stack train --data DIR --out RUN_DIR`

and only an artifact of the right kind whose hashes or structure fail is called damaged (by the
reader that finds it so). Identifying is cheap: names in a directory, and at most a small JSON,
TOML or safetensors header; never weights.

`KINDS` is in identification order, most specific first, and `NEEDS` names what an input can
take; which input of which command takes which need is stack.cli.inputs.INPUTS. A new kind is one
entry here (and a new input one entry there): the table "What each command accepts" in
docs/reliability.md (tools/site/accepts.py) and tests/cli/test_artifacts.py follow from them. The
files that define a kind are named here, and their writers import the names from here.
"""

from __future__ import annotations

import json
import re
import struct
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath
from typing import Any

from contracts.checkpoints import STATE_FILE  # a checkpoint's step, config, tokenizer and the rest
from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE
from contracts.model_card import CARD_FILE as MODEL_CARD  # `stack release`
from contracts.release_rules import WEIGHTS_FILE

# The files that define the kinds below (their writers import these names from here).
DATA_MANIFEST = "manifest.json"  # a DATA_DIR's manifest (`stack prepare`)
INDEX_FILE = "documents.npy"  # a DATA_DIR's document index: which documents are held out
TOKENIZER_JSON = "tokenizer.json"  # a tokenizer in the `tokenizers` library's format
# The files of the tokenizers transformers keeps beside tokenizer.json, or in its place in older
# model directories, and converts into one: GPT-2's byte-level BPE, SentencePiece (Llama 1, T5),
# BERT's WordPiece.
OLDER_TOKENIZER_FILES = (("vocab.json", "merges.txt"), ("tokenizer.model",), ("vocab.txt",))
LOCK_FILE = ".lock"  # the one writer's lock of a run directory or DATA_DIR (stack.outputs.lock)
CHECKPOINTS_DIR = "checkpoints"  # a run's checkpoints, RUN_DIR/checkpoints/step-NNNNNNN
CHECKPOINT_NAME = re.compile(r"step-\d{7}")  # `step-0000005-my-backup` is the user's, never ours
CHECKPOINT_MANIFEST = "manifest.json"  # a checkpoint's sha256 per file (a DATA_DIR's has the same name)
OPTIMIZER_FILE = "optimizer.safetensors"  # what a weights-only checkpoint (a release) lacks
RUN_CONFIG = "config.toml"  # a run's resolved configuration
IMPORT_RECORD = "import.json"  # `stack import-hf`
SURGERY_RECORD = "surgery.json"  # `stack laser`, `stack quantize`, `stack lora merge`
ES_RUN_KIND = "es"  # the evidence record's run kind of a `stack es` run
ES_WRITER = "stack es"  # the command an ES run's lock names while it writes (stack.outputs.lock)
ES_STATE = "es"  # the key of an ES checkpoint's state.json that holds the run's own state
ADAPTER_DIR = "adapter"  # where a LoRA run keeps its adapter
ADAPTER_MANIFEST = "adapter.json"
ADAPTER_WEIGHTS = "adapter.safetensors"
PEFT_CONFIG, PEFT_WEIGHTS = "adapter_config.json", "adapter_model.safetensors"  # peft's format
SYNTH_RECORDS, SYNTH_SIDECAR = "synth.jsonl", "synth.json"  # `stack synth`
EXPORT_RECORD = "export.json"  # `stack export`
ONNX_MODEL = "model.onnx"
HF_CONFIG = "config.json"  # a Hugging Face model's configuration
HF_WEIGHT_INDEX = "model.safetensors.index.json"  # its shards, when its weights are sharded
LENS_FORMAT = "gatestack-tuned-lens-1"  # the `format` in a tuned-lens file's safetensors metadata
TRACE_DUMP_FORMAT = "gatestack-trace-dump"  # the `format` of a `stack trace --dump` file

# How much of a file's head identifying may read (a safetensors header, a JSON's first key).
HEAD_BYTES = 1 << 20
# A reader's words for damage: a refusal of the wrong kind never uses them (tests/cli/test_artifacts.py).
DAMAGE_WORDS = ("corrupt", "restore", "good copy", "damaged", "malformed", "tampered")


class Look:
    """One path as identifying sees it: its entries, and its small JSON or TOML files, read once."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self._names: set[str] | None = None
        self._read: dict[str, Any] = {}

    @property
    def names(self) -> set[str]:
        """The names of the directory's entries (empty for anything but a directory)."""
        if self._names is None:
            self._names = {p.name for p in self.path.iterdir()} if self.path.is_dir() else set()
        return self._names

    def has(self, *names: str) -> bool:
        """Whether every one of `names` is an entry of the directory."""
        return all(name in self.names for name in names)

    def has_dir(self, name: str) -> bool:
        return name in self.names and (self.path / name).is_dir()

    def json(self, name: str) -> dict[str, Any] | None:
        """The directory's JSON file `name` as an object, or None when it is absent or is not one."""
        if name not in self._read:
            self._read[name] = _object(_parse(self.path / name, json.loads)) if self.has(name) else None
        return self._read[name]

    def toml(self, name: str) -> dict[str, Any] | None:
        """The directory's TOML file `name`, or None when it is absent or does not parse."""
        key = f"toml:{name}"
        if key not in self._read:
            self._read[key] = _parse(self.path / name, tomllib.loads) if self.has(name) else None
        return self._read[key]


def _parse(path: Path, parse: Callable[[str], Any]) -> Any:
    """`path` parsed, or None when it cannot be read or parsed (its reader will say why, if asked)."""
    try:
        return parse(path.read_bytes().decode("utf-8-sig"))
    except (OSError, ValueError, tomllib.TOMLDecodeError):
        return None


def _object(value: Any) -> dict[str, Any] | None:
    return value if isinstance(value, dict) else None


def _head(path: Path, size: int) -> bytes:
    """The first `size` bytes of a regular file (never a pipe, whose read would wait)."""
    if not path.is_file():
        return b""
    try:
        with open(path, "rb") as handle:
            return handle.read(size)
    except OSError:
        return b""


def safetensors_metadata(path: Path) -> dict[str, str] | None:
    """The `__metadata__` of a safetensors file's header, read without torch; None when it has none."""
    head = _head(path, 8)
    if len(head) < 8:
        return None
    (length,) = struct.unpack("<Q", head)
    if length > HEAD_BYTES:
        return None
    header = _parse_bytes(_head(path, 8 + length)[8:])
    metadata = header.get("__metadata__") if header is not None else None
    return metadata if isinstance(metadata, dict) else None


def _parse_bytes(data: bytes) -> dict[str, Any] | None:
    try:
        return _object(json.loads(data))
    except (ValueError, UnicodeDecodeError):
        return None


# -- the kinds ------------------------------------------------------------------------------------


def _is_lens(look: Look) -> bool:
    metadata = safetensors_metadata(look.path)
    return metadata is not None and metadata.get("format") == LENS_FORMAT


def _is_trace_dump(look: Look) -> bool:
    head = _head(look.path, 256).lstrip()
    return head.startswith(b"{") and json.dumps({"format": TRACE_DUMP_FORMAT})[1:-1].encode() in head


def _is_checkpoint(look: Look) -> bool:
    if look.has(WEIGHTS_FILE, STATE_FILE):
        return True
    manifest = look.json(CHECKPOINT_MANIFEST)
    return manifest is not None and {"step", "files"} <= manifest.keys()


def _data_manifest(look: Look) -> dict[str, Any] | None:
    """A DATA_DIR's manifest as read ({} when it cannot be read); None when `look` is no DATA_DIR."""
    manifest = look.json(DATA_MANIFEST)
    if manifest is not None and {"shards", "tokenizer"} <= manifest.keys():
        return manifest
    if look.has(INDEX_FILE):  # a folder of the user's called shards/ is no DATA_DIR: the index is
        return {}
    return None


def _data_format(look: Look) -> str | None:
    """'pretrain', 'sft' or 'prefs' for a DATA_DIR, '' when its manifest cannot be read, else None."""
    manifest = _data_manifest(look)
    if manifest is None:
        return None
    if not manifest:
        return ""
    sft = manifest.get("sft")
    if not isinstance(sft, dict):
        return "pretrain"
    return "prefs" if sft.get("format") == "prefs" else "sft"


def _run_kind(look: Look) -> str | None:
    """The run kind of the directory's evidence record, when it holds a readable one."""
    record = look.json(EVIDENCE_FILE)
    run = record.get("run") if record is not None else None
    kind = run.get("kind") if isinstance(run, dict) else None
    return kind if isinstance(kind, str) else None


def _has_checkpoints(look: Look) -> bool:
    """A checkpoints/ directory holding a step-NNNNNNN checkpoint (a folder of the user's that happens
    to be called checkpoints/ does not make a run)."""
    if not look.has_dir(CHECKPOINTS_DIR):
        return False
    return any(CHECKPOINT_NAME.fullmatch(p.name) for p in (look.path / CHECKPOINTS_DIR).iterdir())


def _is_run_like(look: Look) -> bool:
    """Its checkpoints, or a run configuration beside the lock of the run's writer (a run stopped
    before its first checkpoint; a ledger's copy of a run's record has the configuration, no lock)."""
    return _has_checkpoints(look) or look.has(RUN_CONFIG, LOCK_FILE)


def lock_holder(path: Path) -> tuple[str, str | None]:
    """The pid and command a lock file names ('unknown' and None when it names none): its writer
    marks it while it writes, and the file of a writer the kernel released at a kill still does."""
    pid, _, command = _head(path, 4096).decode("utf-8", "replace").strip().partition(" ")
    return pid or "unknown", command or None


def _newest_state(look: Look) -> dict[str, Any] | None:
    """The state.json of the run's newest checkpoint that has a readable one (None: no such)."""
    steps = [p for p in (look.path / CHECKPOINTS_DIR).iterdir() if CHECKPOINT_NAME.fullmatch(p.name)]
    for step in sorted(steps, reverse=True):
        state = _object(_parse(step / STATE_FILE, json.loads))
        if state is not None:
            return state
    return None


def _is_es_run(look: Look) -> bool:
    """A `stack es` run, known by what it writes as it goes, not only by the record it writes at the
    end (a run killed before that was taken for a training run, and neither command would resume
    it): a record of run kind es; a checkpoint whose state.json holds the ES state; or, before its
    first checkpoint, its lock naming `stack es` (the words of a killed writer's lock stay)."""
    if not _is_run_like(look):
        return False
    if _run_kind(look) == ES_RUN_KIND:
        return True
    if _has_checkpoints(look):
        state = _newest_state(look)
        return state is not None and isinstance(state.get(ES_STATE), dict)
    return lock_holder(look.path / LOCK_FILE)[1] == ES_WRITER


def _is_lora_run(look: Look) -> bool:
    if not _is_run_like(look):
        return False
    config = look.toml(RUN_CONFIG)
    return (config is not None and "lora" in config) or (look.path / ADAPTER_DIR / ADAPTER_MANIFEST).is_file()


def _is_export(look: Look, model: str) -> bool:
    return look.has(EXPORT_RECORD) and any(n.startswith(model) for n in look.names)


def older_tokenizer_files(directory: Path) -> tuple[str, ...] | None:
    """The files of an older tokenizer a directory holds in place of tokenizer.json (the first set
    of OLDER_TOKENIZER_FILES it holds whole), or None."""
    return next(
        (names for names in OLDER_TOKENIZER_FILES if all((directory / n).is_file() for n in names)), None
    )


def _older_names() -> str:
    return "; ".join(" and ".join(names) for names in OLDER_TOKENIZER_FILES)


def _is_hf_model(look: Look) -> bool:
    config = look.json(HF_CONFIG)
    return config is not None and ("model_type" in config or "architectures" in config)


def _is_evidence(look: Look) -> bool:
    record = look.json(EVIDENCE_FILE)
    return record is not None and "run" in record and "schema_version" in record


@dataclass(frozen=True)
class Kind:
    """One kind of thing a path can be: how it is called, what writes it, and what defines it."""

    name: str
    noun: str  # how a refusal calls it: "a prepared DATA_DIR of pretraining text"
    written_by: str  # the command that writes it ("" for what gatestack does not write)
    defined_by: str  # the files that make it this kind, for the table in docs/reliability.md
    family: str  # a damaged artifact is known by its family even when its kind within it is not
    matches: Callable[[Look], bool] = field(repr=False)
    # How to get from this kind to what a need names, where that differs from the need's own way
    # of making one: by need name, or by the part before its first '-' ("model" serves
    # "model-merged" too); {path} is the path given.
    routes: dict[str, str] = field(default_factory=dict, repr=False)


TRAIN_ON_IT = "train one on it with `stack train --data {path} --out RUN_DIR`"
IMPORT_IT = "import it with `stack import-hf {path} --out RUN_DIR`"
# An adapter is no model by itself: merged onto its base it is one, and `stack lora inspect` shows it.
MERGE_ADAPTER = (
    "merge it onto its base with `stack lora merge {path} --base RUN_DIR --out OUT` "
    "(`stack lora inspect {path}` shows the adapter itself)"
)
PREPARE_TEXT = "prepare pretraining text with `stack prepare INPUT --out DATA_DIR`"

KINDS: tuple[Kind, ...] = (
    Kind(
        "missing",
        "not there (no such file or directory)",
        "",
        "nothing at the path",
        "missing",
        lambda look: not look.path.exists() and not look.path.is_symlink(),
    ),
    Kind(
        "lens",
        "a tuned-lens file",
        "stack lens --train",
        f"a safetensors file whose metadata names the format {LENS_FORMAT}",
        "lens",
        _is_lens,
        {
            "model": "read it beside the model it was trained on: "
            "`stack lens RUN_DIR --prompt TEXT --lens {path}`"
        },
    ),
    Kind(
        "trace-dump",
        "a trace dump",
        "stack trace --dump",
        f"a JSON file whose format is {TRACE_DUMP_FORMAT}",
        "trace-dump",
        _is_trace_dump,
        {"model": "compare two dumps with `stack trace --compare {path} OTHER.json`"},
    ),
    Kind(
        "file",
        "a plain file",
        "",
        "any other file: text, JSONL, Parquet, ...",
        "file",
        lambda look: not look.path.is_dir(),
        {
            "model": "a model is a directory: train one with `stack train --data DATA_DIR --out RUN_DIR`",
            "data": "prepare it first with `stack prepare {path} --out DATA_DIR`",
            "data-sft": "prepare it first with `stack prepare {path} --format chat --out DATA_DIR`",
            "data-prefs": "prepare it first with `stack prepare {path} --format prefs --out DATA_DIR`",
        },
    ),
    Kind(
        "release",
        "a released model",
        "stack release",
        f"{MODEL_CARD} beside a weights-only checkpoint "
        f"({WEIGHTS_FILE}, {STATE_FILE}, {CHECKPOINT_MANIFEST})",
        "model",
        lambda look: look.has(MODEL_CARD) and _is_checkpoint(look),
        {
            "training-run": "a release cannot be resumed: start a new run from it with --init-from {path}",
            "run": "it is released already; release the run directory it came from",
        },
    ),
    Kind(
        "checkpoint",
        "a checkpoint directory",
        "stack train",
        f"{WEIGHTS_FILE} and {STATE_FILE}, or a {CHECKPOINT_MANIFEST} with a step and files",
        "model",
        _is_checkpoint,
        {
            "training-run": "resume its run directory (the one above checkpoints/), or start a new run "
            "from it with --init-from {path}",
            "es-run": "resume the ES run directory above its checkpoints/",
            "run": "give the run directory above its checkpoints/",
        },
    ),
    Kind(
        "data-prefs",
        "a DATA_DIR of preference pairs",
        "stack prepare --format prefs",
        f"a DATA_DIR ({DATA_MANIFEST} with shards) whose manifest's sft.format is prefs",
        "data",
        lambda look: _data_format(look) == "prefs",
        {
            "model": "tune a model on it with `stack dpo RUN_DIR --data {path} --out OUT`",
            "data-sft": "it is for `stack dpo RUN_DIR --data {path}`; supervised fine-tuning needs "
            "`stack prepare FILE.jsonl --format chat --out DATA_DIR`",
            "data-pretrain": PREPARE_TEXT + " (pairs are for `stack dpo --data`)",
        },
    ),
    Kind(
        "data-sft",
        "a DATA_DIR of chat or prompt-completion examples",
        "stack prepare --format chat|prompt-completion",
        f"a DATA_DIR ({DATA_MANIFEST} with shards) whose manifest's sft.format is chat or prompt-completion",
        "data",
        lambda look: _data_format(look) == "sft",
        {
            "model": "fine-tune a model on it with `stack sft --data {path} --init-from RUN_DIR --out OUT`",
            "data-prefs": "it is for `stack sft --data {path}`; DPO needs pairs: "
            "`stack prepare PAIRS.jsonl --format prefs --out DATA_DIR`",
            "data-pretrain": PREPARE_TEXT + " (chat examples are for `stack sft --data`)",
        },
    ),
    Kind(
        "data-pretrain",
        "a prepared DATA_DIR of pretraining text",
        "stack prepare",
        f"{DATA_MANIFEST} listing shards (or its {INDEX_FILE}), and no sft entry",
        "data",
        lambda look: _data_format(look) in ("pretrain", ""),
        {
            "model": TRAIN_ON_IT,
            "data-sft": "fine-tuning reads examples: `stack prepare FILE.jsonl --format chat --out DATA_DIR`",
            "data-prefs": "DPO reads pairs: `stack prepare PAIRS.jsonl --format prefs --out DATA_DIR`",
            "corpus": "it is prepared already: train on it with `stack train --data {path} --out RUN_DIR`",
        },
    ),
    Kind(
        "import",
        "a Hugging Face model imported as a run directory",
        "stack import-hf",
        f"{IMPORT_RECORD} beside {CHECKPOINTS_DIR}/step-NNNNNNN",
        "model",
        lambda look: look.has(IMPORT_RECORD) and _has_checkpoints(look),
        {
            "training-run": "it cannot be resumed: start a new run from it with --init-from {path}",
            "hf": "it is imported already: give it to the command that reads a model",
        },
    ),
    Kind(
        "surgery",
        "a surgery output",
        "stack laser | quantize | lora merge",
        f"{SURGERY_RECORD} beside {CHECKPOINTS_DIR}/step-NNNNNNN",
        "model",
        lambda look: look.has(SURGERY_RECORD) and _has_checkpoints(look),
        {"training-run": "it cannot be resumed: start a new run from it with --init-from {path}"},
    ),
    Kind(
        "es-run",
        "an evolution-strategies run directory",
        ES_WRITER,
        f"a run directory whose {EVIDENCE_FILE} is of run kind {ES_RUN_KIND}, or whose newest "
        f"{CHECKPOINTS_DIR}/step-NNNNNNN/{STATE_FILE} holds the ES state ({ES_STATE}), or, before its "
        f"first checkpoint, whose {LOCK_FILE} names {ES_WRITER}",
        "model",
        _is_es_run,
        {"training-run": "resume it with `stack es --resume {path}`"},
    ),
    Kind(
        "lora-run",
        "a LoRA run directory",
        "stack train | sft with [lora]",
        f"a run directory whose {RUN_CONFIG} has a [lora] section (its adapter in {ADAPTER_DIR}/)",
        "model",
        _is_lora_run,
        {
            "model-merged": "merge its adapters first with `stack lora merge {path} --out OUT`",
            "es-run": "resume it with `stack train --resume {path}`",
        },
    ),
    Kind(
        "run",
        "a run directory",
        "stack train",
        f"{CHECKPOINTS_DIR}/step-NNNNNNN, or {RUN_CONFIG} beside the writer's {LOCK_FILE}",
        "model",
        _is_run_like,
        {
            "es-run": "resume it with `stack train --resume {path}` (or the command that wrote it)",
            "lora": "train a LoRA run with `stack sft --init-from {path} --data DATA_DIR --out OUT --set "
            "lora.r=8`",
        },
    ),
    Kind(
        "adapter",
        "a LoRA adapter directory",
        "stack train | sft with [lora] (RUN_DIR/adapter)",
        f"{ADAPTER_MANIFEST} (beside {ADAPTER_WEIGHTS})",
        "adapter",
        lambda look: look.has(ADAPTER_MANIFEST),
        {
            "model": MERGE_ADAPTER,
            "model-merged": MERGE_ADAPTER,
        },
    ),
    Kind(
        "peft-adapter",
        "a peft adapter directory",
        "stack lora export",
        f"{PEFT_CONFIG} (beside {PEFT_WEIGHTS})",
        "adapter",
        lambda look: look.has(PEFT_CONFIG),
        {
            "model": "read it onto its base with `stack lora import {path} --base RUN_DIR --out "
            "ADAPTER_DIR`, then merge that with `stack lora merge ADAPTER_DIR --base RUN_DIR --out OUT`",
            "lora": "read it as the stack's adapter with `stack lora import {path} --base RUN_DIR --out "
            "ADAPTER_DIR`",
        },
    ),
    Kind(
        "synth",
        "a synth output",
        "stack synth",
        f"{SYNTH_SIDECAR} beside {SYNTH_RECORDS}",
        "synth",
        lambda look: look.has(SYNTH_SIDECAR, SYNTH_RECORDS),
        {"corpus": f"prepare its examples, {{path}}/{SYNTH_RECORDS}, not the directory"},
    ),
    Kind(
        "onnx-export",
        "an ONNX export",
        "stack export --format onnx",
        f"{EXPORT_RECORD} beside {ONNX_MODEL}",
        "export",
        lambda look: _is_export(look, ONNX_MODEL),
        {
            "model": "ONNX Runtime reads it; give the run it was exported from "
            f"(named in {{path}}/{EXPORT_RECORD})",
            "hf": f"export its run with --format hf instead ({{path}}/{EXPORT_RECORD} names the run)",
        },
    ),
    Kind(
        "hf-export",
        "a Hugging Face export",
        "stack export --format hf",
        f"{EXPORT_RECORD} beside {HF_CONFIG} and {WEIGHTS_FILE}",
        "export",
        lambda look: _is_export(look, WEIGHTS_FILE),
        {"model": IMPORT_IT},
    ),
    Kind(
        "hf-model",
        "a Hugging Face model directory",
        "",
        f"{HF_CONFIG} with a model_type or architectures",
        "hf",
        _is_hf_model,
        {"model": IMPORT_IT, "model-merged": IMPORT_IT},
    ),
    Kind(
        "hf-tokenizer",
        "a Hugging Face tokenizer directory",
        "",
        f"{TOKENIZER_JSON}, or an older tokenizer's files ({_older_names()}), without a {HF_CONFIG}",
        "hf",
        lambda look: (
            (look.has(TOKENIZER_JSON) or older_tokenizer_files(look.path) is not None)
            and not look.has(HF_CONFIG)
        ),
        {
            "model": "it holds no weights: prepare data with it: `stack prepare INPUT --tokenizer hf:{path}`",
            "hf": "it holds a tokenizer but no weights: give the model's own directory",
        },
    ),
    Kind(
        "evidence",
        "an evidence record",
        "any command that keeps evidence",
        f"{EVIDENCE_FILE} with a run and a schema_version (and the files the record names)",
        "evidence",
        _is_evidence,
        {"model": "an evidence record holds no weights: give the run directory it describes"},
    ),
    Kind(
        "plain-dir",
        "a directory of plain files",
        "",
        "a directory that is none of the above",
        "plain-dir",
        lambda look: True,
        {"data": "prepare it first with `stack prepare {path} --out DATA_DIR`"},
    ),
)
BY_NAME = {kind.name: kind for kind in KINDS}
MODEL_KINDS = ("checkpoint", "release", "run", "lora-run", "es-run", "surgery", "import")
DATA_KINDS = ("data-pretrain", "data-sft", "data-prefs")


@dataclass(frozen=True)
class Identity:
    """What a path was found to be. `sure` is False when the files that tell kinds of one family
    apart could not be read (a DATA_DIR whose manifest does not parse): its reader says why."""

    path: Path
    kind: Kind
    sure: bool = True


def identify(path: Path | str) -> Identity:
    """The kind of `path`, from the files each kind is defined by (module docstring)."""
    look = Look(Path(path))
    kind = next(k for k in KINDS if k.matches(look))
    sure = True
    if kind.family == "data":
        sure = _data_format(look) != ""
    elif kind.name in ("run", "lora-run") and look.has(EVIDENCE_FILE) and _run_kind(look) is None:
        sure = False  # an unreadable record may be an ES run's
    return Identity(Path(path), kind, sure)


# -- what inputs take -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Need:
    """What one input takes: the kinds, in words, and how to make one."""

    name: str
    noun: str
    kinds: tuple[str, ...]
    make: str  # how to get one, where the given kind has no route of its own

    def takes(self, identity: Identity) -> bool:
        """Whether `identity` is one of the kinds, or an unsure one of their family (its reader speaks)."""
        if identity.kind.name in self.kinds:
            return True
        return not identity.sure and identity.kind.family in {BY_NAME[k].family for k in self.kinds}


NEEDS: dict[str, Need] = {
    need.name: need
    for need in (
        Need(
            "model",
            "a run directory or checkpoint",
            MODEL_KINDS,
            "train one with `stack train --data DATA_DIR --out RUN_DIR`",
        ),
        Need(
            "model-merged",
            "a run directory or checkpoint (a LoRA run merged first)",
            tuple(k for k in MODEL_KINDS if k != "lora-run"),
            "train one with `stack train --data DATA_DIR --out RUN_DIR`",
        ),
        Need(
            "model-or-adapter",
            "a run directory, checkpoint or LoRA adapter directory",
            (*MODEL_KINDS, "adapter"),
            "train one with `stack train --data DATA_DIR --out RUN_DIR`",
        ),
        Need(
            "lora",
            "a LoRA run or LoRA adapter directory",
            ("lora-run", "adapter"),
            "train one with `stack sft --init-from RUN_DIR --data DATA_DIR --out OUT --set lora.r=8`",
        ),
        Need(
            "peft-adapter",
            "a peft adapter directory",
            ("peft-adapter",),
            "write one with `stack lora export RUN_DIR --out DIR`",
        ),
        Need(
            "training-run",
            "a training run directory",
            ("run", "lora-run"),
            "start one with `stack train --data DATA_DIR --out RUN_DIR`",
        ),
        Need(
            "es-run",
            "an evolution-strategies run directory",
            ("es-run",),
            "start one with `stack es RUN_DIR --data DATA_DIR --out OUT`",
        ),
        Need(
            "run",
            "a run directory",
            ("run", "lora-run", "es-run", "surgery", "import"),
            "train one with `stack train --data DATA_DIR --out RUN_DIR`",
        ),
        Need(
            "data",
            "a prepared DATA_DIR",
            ("data-pretrain", "data-sft", "data-prefs"),
            "prepare one with `stack prepare INPUT --out DATA_DIR`",
        ),
        Need(
            "data-pretrain",
            "a prepared DATA_DIR of pretraining text",
            ("data-pretrain",),
            "prepare one with `stack prepare INPUT --out DATA_DIR`",
        ),
        Need(
            "data-text",
            "a prepared DATA_DIR of pretraining text or fine-tuning examples",
            ("data-pretrain", "data-sft"),
            "prepare one with `stack prepare INPUT --out DATA_DIR`",
        ),
        Need(
            "data-sft",
            "a DATA_DIR of chat or prompt-completion examples",
            ("data-sft",),
            "prepare one with `stack prepare FILE.jsonl --format chat --out DATA_DIR`",
        ),
        Need(
            "data-prefs",
            "a DATA_DIR of preference pairs",
            ("data-prefs",),
            "prepare one with `stack prepare PAIRS.jsonl --format prefs --out DATA_DIR`",
        ),
        Need(
            "hf",
            "a Hugging Face model directory",
            ("hf-model", "hf-export"),
            "give a local Hugging Face directory, or write one with `stack export RUN_DIR --format hf "
            "--out DIR`",
        ),
        Need(
            "hf-tokenizer",
            "a Hugging Face directory with a tokenizer.json",
            ("hf-model", "hf-export", "onnx-export", "hf-tokenizer"),
            "give a local Hugging Face model or tokenizer directory",
        ),
        Need(
            "tokenizer-source",
            "a directory that carries a tokenizer (a model, a Hugging Face directory or a DATA_DIR)",
            (*MODEL_KINDS, "hf-model", "hf-export", "onnx-export", "hf-tokenizer", *DATA_KINDS),
            "give byte, bpe, hf:DIR, or a run, checkpoint, export or DATA_DIR",
        ),
        Need(
            "lens",
            "a tuned-lens file",
            ("lens",),
            "train one with `stack lens RUN_DIR --train --data DATA_DIR --save FILE`",
        ),
        Need(
            "trace-dump",
            "a trace dump",
            ("trace-dump",),
            "write one with `stack trace RUN_DIR --prompt TEXT --dump FILE`",
        ),
        Need("text", "a text file", ("file",), "give a UTF-8 text file"),
        Need("jsonl", "a JSONL file", ("file",), "give a file of one JSON object per line"),
        Need(
            "corpus",
            "text, JSONL or Parquet files, or a directory of them",
            ("file", "plain-dir"),
            "give the files to prepare",
        ),
        Need(
            "documents",
            "a folder of .txt or .md documents",
            ("plain-dir",),
            "give a folder of .txt or .md files",
        ),
        Need(
            "evidence",
            "a filed evidence record (LEDGER/<run-id>/)",
            ("evidence",),
            "file the run's record with --evidence-dir LEDGER as it is made (a finished training run's, "
            "later: `stack train --resume RUN_DIR --evidence-dir LEDGER`), then give LEDGER/<run-id>",
        ),
    )
}


# What an unsure identity is called: its family, and the file that would have told its kind.
UNSURE = {
    "data": f"a prepared DATA_DIR whose {DATA_MANIFEST} cannot be read",
    "model": f"a run directory whose {EVIDENCE_FILE} cannot be read",
}


def refusal(identity: Identity, need: Need, who: str | None = None) -> str:
    """The one line for a valid artifact of the wrong kind: what it is, what is needed, how to get it."""
    given = identity.kind
    made = f" (written by `{given.written_by}`)" if given.written_by else ""
    if not identity.sure:
        return f"{identity.path} is {UNSURE[given.family]}; {who or 'this'} needs {need.noun}: {need.make}"
    needs = f"{who} needs" if who else "this needs"
    holder = _holder(identity.path, need)
    if holder is not None:
        return (
            f"{identity.path} is {given.noun}{made} in {holder.path}, {holder.kind.noun}; {needs} "
            f"{need.noun}: pass its directory {holder.path}"
        )
    route = given.routes.get(need.name) or given.routes.get(need.name.split("-")[0]) or need.make
    hint = route.format(path=identity.path)
    return f"{identity.path} is {given.noun}{made}; {needs} {need.noun}: {hint}"


def _holder(path: Path, need: Need) -> Identity | None:
    """The directory holding a file given where `need` takes that directory (DATA_DIR/manifest.json
    for --data DATA_DIR, RUN_DIR/config.toml for --resume RUN_DIR): what was meant, so the fix is
    passing it, not a route from the file (which would, say, tokenize a manifest as a corpus)."""
    if not path.is_file():
        return None
    holder = identify(path.parent)
    return holder if holder.sure and need.takes(holder) else None


def require(
    path: Path | str,
    need: str,
    who: str | None = None,
    refused: Callable[[Identity, Need], str] | None = None,
) -> Identity:
    """The identity of `path` when `need` takes it; else BadInput with the refusal's one line, or
    with `refused`'s where the user did not name `path` (a command found it), so the line says how."""
    wanted = NEEDS[need]
    identity = identify(path)
    if not wanted.takes(identity):
        raise BadInput(refusal(identity, wanted, who) if refused is None else refused(identity, wanted))
    return identity


def weight_files(hf_dir: Path) -> list[Path]:
    """The safetensors files holding the weights: model.safetensors, or the shards its index lists.

    Checked before anything is read: a shard the index names must be a file inside `hf_dir`. A
    missing one is the usual partial download; a `../x` or absolute name would read elsewhere.
    """
    single, index = hf_dir / WEIGHTS_FILE, hf_dir / HF_WEIGHT_INDEX
    if single.is_file():
        return [single]
    if index.is_file():
        return [_shard(hf_dir, index, name) for name in _weight_map(index)]
    if any(hf_dir.glob("*.bin")):
        raise BadInput(
            f"{hf_dir} holds pickled .bin weights; the stack reads safetensors only: re-save the model "
            "with transformers' save_pretrained(dir, safe_serialization=True)"
        )
    raise BadInput(f"{hf_dir} has no {WEIGHTS_FILE} (or {HF_WEIGHT_INDEX})")


def _weight_map(index: Path) -> list[str]:
    """The distinct file names of an index's weight_map."""
    try:
        weight_map = json.loads(index.read_text(encoding="utf-8"))["weight_map"]
        names = sorted({str(name) for name in weight_map.values()})
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            f"{index} is not a safetensors index ({type(exc).__name__}: {exc}); download the model again"
        ) from None
    if not names:
        raise BadInput(f"{index} lists no weight files in its weight_map; download the model again")
    return names


def _shard(hf_dir: Path, index: Path, name: str) -> Path:
    """One file of the weight_map, refused unless it is a file inside the model directory."""
    pure = PurePosixPath(name)
    escapes = not name or pure.is_absolute() or ".." in pure.parts or "\\" in name
    if escapes or not (hf_dir / name).resolve().is_relative_to(hf_dir.resolve()):
        raise BadInput(
            f"{index} names weight file {name!r}, which is outside {hf_dir}; a weight_map may only name "
            "files in the model directory: fix the index or download the model again"
        )
    path = hf_dir / name
    if not path.is_file():
        raise BadInput(
            f"{path} is missing: {index.name} lists it in its weight_map (an incomplete download?); "
            "download the model again"
        )
    return path
