"""What a record states of a committed model it read, derived again from that model.

A command that reads a model by a path of the repository (a released model under evidence/models/,
whose files are committed and never change: `checkpoint_reads.in_repository`) states facts of that
model besides its files, and they were compared only with each other: a memorization whose base
row, and a distillation whose frozen teacher, were said to be another model's weights (given and
measured, before and after alike) passed, as did an export's count of the settings read back
from its config.json. Where the model a record
names for a role is committed, each such fact is derived here from the model, by the stack's code:

* the digest of its weights as the frozen-model gates take it (`stack.tune.frozen.weights_sha256`):
  GATE-FT-003's `models_given` and `models_measured` of a memorization's rows (base, fine-tuned),
  GATE-KD-002's `sha256_before` and `sha256_after` of a distillation's teacher, GATE-DPO-002's of a
  DPO reference;
* its tokenizer and vocabulary where a gate states them: GATE-KD-001's teacher tokenizer values (its
  vocabulary and context are held with the teacher's record, tools/integrity/models/cross_reads.py),
  GATE-DATA-007's `model_*` values (the model the run put data in front of: the teacher, the reference, or the
  model a run started from);
* GATE-LENS-004's `model_sha256`, what a lens reads through (`stack.lens.probes.model_sha256`);
* of the model a command read (and names as its checkpoint): the checkpoint's step and files, and
  `data.tokenizer_sha256`, its tokenizer's;
* of the model an ES run started from (`stack es` writes its source's configuration, as
  `load_trained` resolves it, to config.toml, and cites the source checkpoint by its manifest's
  sha256): the run's config.toml, key for key, and `config.source.manifest_sha256` (so neither
  config.toml's train.lr nor the source's manifest digest can be restated);
* a Hugging Face export's config.json (`stack.export.hf.config_json` of the checkpoint's model and
  tokenizer), by the sha256 export.json keeps of it, and `architecture_keys`, the settings GATE-
  EXPORT-001 counted as read back from it (`stack.export.hf.model_config_from_hf`'s, and from rev 4
  every field of config.json too).

A model is loaded once per process and content (`read_model`, keyed by its files' sha256: the
checker's tests check copies of this ledger a hundred times). A committed model the record names
that does not load is a violation, not a check left out.
"""

from __future__ import annotations

import hashlib
import tempfile
from collections.abc import Callable
from functools import cached_property
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.hf_export import dtypes_fit
from contracts.model_shape import param_count
from contracts.reading import read_bytes, read_json, read_toml
from contracts.spec import Spec
from stack.artifacts import RUN_CONFIG
from stack.data.chat_jinja import chat_template_of
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_identity import probe_sha256
from stack.data.tokenizer_record import tokenizer_from_state
from stack.export import hf, hf_tokenizer
from stack.export.tokenizer_check import expected_reading
from stack.lens.probes import model_sha256
from stack.train.checkpoint import MANIFEST, STATE_FILE, read_state
from stack.train.trained import Trained, load_trained, resolve_checkpoint
from stack.tune.frozen import weights_sha256
from tools.integrity.models.checkpoint_reads import COMMITTED, in_repository

WEIGHTS_FILE = "model.safetensors"
CONFIG_IDS = "config.json "  # export.json's special_ids read from config.json (stack.export.runtimes)
TOKENIZER_JSON = "tokenizer.json"  # the tokenizer in Hugging Face form, in a checkpoint and an export
# A key one of two tables lacks (unequal to any value, None included).
UNSET = object()
# What a model cannot be read for: a file that is missing or damaged, a state that is not one.
UNREADABLE = (BadInput, OSError, KeyError, TypeError, ValueError)


class ReadModel:
    """A checkpoint as the stack loads it, and each fact of it a record may state, computed once."""

    def __init__(self, checkpoint: Path) -> None:
        self.checkpoint = checkpoint

    @cached_property
    def state(self) -> dict[str, Any]:
        return read_state(self.checkpoint)

    @cached_property
    def tokenizer(self) -> Tokenizer:
        return tokenizer_from_state(self.state["tokenizer"])

    @cached_property
    def tokenizer_json(self) -> tuple[str, int]:
        """The sha256 and size of the tokenizer.json a checkpoint or an export writes of this model's
        tokenizer (`Tokenizer.hf_json`: stack.data.tokenizer_record.write_tokenizer_file,
        stack.export.hf_tokenizer.write_tokenizer_files)."""
        text = self.tokenizer.hf_json().encode("utf-8")
        return hashlib.sha256(text).hexdigest(), len(text)

    @cached_property
    def trained(self) -> Trained:
        return load_trained(self.checkpoint, "cpu")

    @cached_property
    def weights_sha256(self) -> str:
        return weights_sha256(self.trained.model)

    @cached_property
    def lens_sha256(self) -> str:
        return model_sha256(self.trained.model)

    @cached_property
    def hf_config(self) -> dict[str, Any]:
        return hf.hf_config(self.trained.config.model, self.trained.tokenizer)

    @cached_property
    def config_json(self) -> str:
        return hf.config_json(self.trained.config.model, self.trained.tokenizer)

    @cached_property
    def chat_template(self) -> str | None:
        return chat_template_of(self.trained.checkpoint.state)

    @cached_property
    def tokenizer_files(self) -> dict[str, tuple[str, int]]:
        """The sha256 and size of each tokenizer file but tokenizer.json (held by `tokenizer_json`) an
        export writes of this model (stack.export.hf_tokenizer.write_tokenizer_files, at its context
        and with its chat template, as stack.export.exporters does)."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp)
            hf_tokenizer.write_tokenizer_files(
                out, self.trained.tokenizer, self.trained.config.model.ctx, self.chat_template
            )
            return {
                f.name: (hashlib.sha256(f.read_bytes()).hexdigest(), f.stat().st_size)
                for f in sorted(out.iterdir())
                if f.name != TOKENIZER_JSON
            }

    @cached_property
    def tokenizer_keys(self) -> int:
        """GATE-EXPORT-001's tokenizer_keys: the settings of this model's tokenizer an export's reading
        back holds (stack.export.tokenizer_check.expected_reading)."""
        family = hf.family(self.trained.config.model)
        return len(expected_reading(self.trained.tokenizer, self.chat_template, family))


# Files' sha256 by (path, size, modification time), and models by their files' sha256.
_DIGESTS: dict[tuple[str, int, int], str] = {}
_MODELS: dict[tuple[str, str], ReadModel] = {}


def file_sha256(path: Path) -> str:
    """The sha256 of a file, hashed once per process while it stays as it is."""
    found = path.stat()
    key = (str(path.resolve()), found.st_size, found.st_mtime_ns)
    if key not in _DIGESTS:
        _DIGESTS[key] = hashlib.sha256(read_bytes(path)).hexdigest()
    return _DIGESTS[key]


def read_model(path: Path) -> ReadModel:
    """The checkpoint at `path` (a run directory: its newest valid checkpoint, as the stack resolves
    it), one per content; raises one of UNREADABLE when there is none to read."""
    checkpoint = resolve_checkpoint(path)
    key = (file_sha256(checkpoint / WEIGHTS_FILE), file_sha256(checkpoint / STATE_FILE))
    if key not in _MODELS:
        _MODELS[key] = ReadModel(checkpoint)
    return _MODELS[key]


def committed_directory(record: EvidenceRecord, stated: Any, root: Path = REPO_ROOT) -> Path | None:
    """The committed directory a path the record states names (as its command line gave it, or as
    the run resolved that word, `run.places`): a word of the command line naming a directory under
    evidence/ of the repository at `root` (`checkpoint_reads.in_repository`); else None."""
    if not isinstance(stated, str):
        return None
    places, committed = record.run.places or {}, (root / COMMITTED).resolve()
    for word in record.run.argv or []:
        if not isinstance(word, str) or stated not in (word, places.get(word)):
            continue
        directory = in_repository(record, word, root)
        if directory is not None and directory.is_relative_to(committed):
            return directory
    return None


# Where a record states the path of each model it read, by run kind and role: "read" is the model a
# command read and names as its checkpoint (a memorization's is its fine-tuned model).
NAMED: dict[str, dict[str, tuple[str, ...]]] = {
    "memorization": {"base": ("config", "models", "base"), "fine-tuned": ("config", "models", "tuned")},
    "distill": {"teacher": ("config", "distill", "teacher")},
    "dpo": {"reference": ("config", "dpo", "reference"), "init": ("metrics", "init_from", "path")},
    "finetune": {"init": ("metrics", "init_from", "path")},
    "sft": {"init": ("metrics", "init_from", "path")},
    "es": {"init": ("config", "source", "checkpoint")},
    **{kind: {"read": ("config", "checkpoint")} for kind in ("sample", "eval", "export-hf", "export-onnx")},
    **{kind: {"read": ("config", "checkpoint")} for kind in ("lens", "lens-train")},
    **{kind: {"read": ("config", "source")} for kind in ("laser", "quantize")},
}
# The role of the model whose checkpoint and tokenizer a command's record names as its own.
OWN = {"memorization": "fine-tuned"}
# The model GATE-DATA-007 held the data's tokenizer to, by run kind (else the model it started from).
DATA_READER = {"distill": "teacher", "dpo": "reference"}

Fact = Callable[[ReadModel], Any]
TOKENIZER_FACTS: dict[str, Fact] = {
    "model_tokenizer": lambda m: m.tokenizer.name,
    "model_tokenizer_identity": lambda m: m.tokenizer.identity,
    "model_probe_sha256": lambda m: probe_sha256(m.tokenizer),
    "model_vocab": lambda m: m.state["config"]["model"]["vocab"],
}
# What each gate states of a model it read: (gate, role, the measured key's path, the fact), where a
# role of None is the run kind's DATA_READER.
GATE_FACTS: tuple[tuple[str, str | None, tuple[str, ...], Fact], ...] = (
    *(
        ("GATE-FT-003", role, (given, role), lambda m: m.weights_sha256)
        for role in ("base", "fine-tuned")
        for given in ("models_given", "models_measured")
    ),
    *(
        (gate, role, (key,), lambda m: m.weights_sha256)
        for gate, role in (("GATE-KD-002", "teacher"), ("GATE-DPO-002", "reference"))
        for key in ("sha256_before", "sha256_after")
    ),
    ("GATE-KD-001", "teacher", ("teacher_tokenizer_identity",), lambda m: m.tokenizer.identity),
    ("GATE-KD-001", "teacher", ("teacher_tokenizer_sha256",), lambda m: m.tokenizer.sha256),
    ("GATE-KD-001", "teacher", ("tokenizer_ids",), lambda m: m.tokenizer.vocab_size),
    *(("GATE-DATA-007", None, (key,), fact) for key, fact in TOKENIZER_FACTS.items()),
    ("GATE-LENS-004", "read", ("model_sha256",), lambda m: m.lens_sha256),
)


def _at(data: Any, path: tuple[str, ...]) -> Any:
    """The value at `path` of nested tables (None where a step is missing)."""
    for key in path:
        data = data.get(key) if isinstance(data, dict) else None
    return data


def _committed_models(record: EvidenceRecord, root: Path) -> tuple[dict[str, ReadModel], list[str]]:
    """Each role's committed model the record names, read (`read_model`); and a problem for each
    committed one that does not read."""
    models, problems = {}, []
    tables = {"config": record.config, "metrics": record.metrics}
    for role, path in NAMED.get(record.run.kind, {}).items():
        stated = _at(tables.get(path[0]), path[1:])
        directory = committed_directory(record, stated, root)
        if directory is None:
            continue
        try:
            models[role] = read_model(directory)
        except UNREADABLE as exc:
            problems.append(f"its {role} model {stated} is committed, but does not read: {exc}")
    return models, problems


def committed_model_problems(
    record: EvidenceRecord, run_dir: Path, spec: Spec, root: Path = REPO_ROOT
) -> list[str]:
    """What the record states of each committed model it read, against that model (module doc)."""
    models, problems = _committed_models(record, root)
    if not models:
        return problems
    try:
        problems += _gate_fact_problems(record, models)
        own = models.get(OWN.get(record.run.kind, "read"))
        if own is not None:
            problems += _own_checkpoint_problems(record, own)
        reader = models.get(DATA_READER.get(record.run.kind, "init"))
        if own is None and reader is not None:
            problems += _data_tokenizer_problems(record, reader)
            problems += _written_tokenizer_problems(record, reader)
        if record.run.kind == "export-hf" and own is not None:
            problems += _export_config_problems(record, run_dir, own, spec)
        if record.run.kind == "es" and "init" in models:
            problems += _es_source_problems(record, run_dir, models["init"])
    except UNREADABLE as exc:
        problems.append(f"a committed model it read does not read: {exc}")
    return problems


def _es_source_problems(record: EvidenceRecord, run_dir: Path, model: ReadModel) -> list[str]:
    """An ES run's config.toml (where the record cites it) is its committed source's configuration as
    `load_trained` resolves it (stack.es.rundir.start saves `trained.config`), every key; its
    `config.source.manifest_sha256` is the sha256 of that checkpoint's manifest (module docstring)."""
    problems = []
    stated = _at(record.config, ("source", "manifest_sha256"))
    manifest = file_sha256(model.checkpoint / MANIFEST)
    if stated != manifest:
        problems.append(
            f"config.source.manifest_sha256 is {str(stated)[:12]}, but the manifest of the committed model "
            f"{_name(model)} it started from hashes to {manifest[:12]}"
        )
    if RUN_CONFIG not in {a.path for a in record.artifacts}:
        return problems
    written = read_toml(run_dir / RUN_CONFIG, run_dir)
    wrote, saved = _leaves(written), _leaves(model.trained.config.as_dict())
    problems += [
        f"{RUN_CONFIG} holds {key} = {wrote.get(key, 'nothing')!r}, but the committed model {_name(model)} "
        f"it started from has {saved.get(key, 'nothing')!r}: an ES run writes its source's configuration"
        for key in sorted(wrote.keys() | saved.keys())
        if wrote.get(key, UNSET) != saved.get(key, UNSET)
    ]
    return problems


def _leaves(table: Any, where: str = "") -> dict[str, Any]:
    """Every leaf of nested tables by its dotted key (an empty table is a leaf, so it is held too)."""
    if not isinstance(table, dict) or (where and not table):
        return {where: table}
    leaves: dict[str, Any] = {}
    for key, value in table.items():
        leaves.update(_leaves(value, f"{where}.{key}" if where else str(key)))
    return leaves


def _gate_fact_problems(record: EvidenceRecord, models: dict[str, ReadModel]) -> list[str]:
    """Each gate value of GATE_FACTS the record states, against the committed model of its role."""
    results = {g.id: g.measured for g in record.gates if isinstance(g.measured, dict)}
    problems = []
    for gate_id, role, path, fact in GATE_FACTS:
        model = models.get(role or DATA_READER.get(record.run.kind, "init"))
        stated = _at(results.get(gate_id), path)
        if model is None or stated is None:
            continue
        if stated != (derived := fact(model)):
            problems.append(
                f"gates[{gate_id}].measured.{'.'.join(path)} is {stated!r}, but the committed model "
                f"{_name(model)} it read has {derived!r}"
            )
    return problems


def _name(model: ReadModel) -> str:
    return model.checkpoint.name


def _data_tokenizer_problems(record: EvidenceRecord, model: ReadModel) -> list[str]:
    """A training run from a committed model (its init, a distillation's teacher, a DPO reference:
    DATA_READER) reads its data with that model's tokenizer, which GATE-DATA-007 holds the data to:
    `data.tokenizer_sha256` is that tokenizer's (not another tokenizer restated by an SFT record,
    whose data no prepare record made)."""
    stated = record.data.tokenizer_sha256 if record.data is not None else None
    if stated is None or stated == model.tokenizer.sha256:
        return []
    return [
        f"data.tokenizer_sha256 is {stated!r}, but the committed model {_name(model)} it read its data "
        f"for has the tokenizer {model.tokenizer.sha256!r}"
    ]


def _tokenizer_json_problems(where: str, listed: Any, model: ReadModel, how: str) -> list[str]:
    """A tokenizer.json a record lists (`listed`: its {sha256, bytes}) against the one `model`'s
    tokenizer serialises to (`ReadModel.tokenizer_json`): the file is written deterministically from a
    committed tokenizer, so a restated digest is caught."""
    if not isinstance(listed, dict) or ("sha256" not in listed and "bytes" not in listed):
        return []
    digest, size = model.tokenizer_json
    if listed.get("sha256", digest) == digest and listed.get("bytes", size) == size:
        return []
    return [
        f"{where} is sha256 {str(listed.get('sha256'))[:12]} of {listed.get('bytes')} bytes, but the "
        f"tokenizer of the committed model {_name(model)} {how} serialises to sha256 {digest[:12]} of "
        f"{size} bytes"
    ]


def _written_tokenizer_problems(record: EvidenceRecord, model: ReadModel) -> list[str]:
    """A run that read its data with a committed model's tokenizer (`data.tokenizer_sha256` is that
    tokenizer's, `_data_tokenizer_problems`) writes that tokenizer into the checkpoint it makes: the
    checkpoint's tokenizer.json is its Hugging Face form (stack.train.checkpoint)."""
    stated = record.data.tokenizer_sha256 if record.data is not None else None
    if record.checkpoint is None or stated != model.tokenizer.sha256:
        return []
    listed = record.checkpoint.files.get(TOKENIZER_JSON)
    return _tokenizer_json_problems(
        f"checkpoint.files.{TOKENIZER_JSON}",
        None if listed is None else listed.model_dump(),
        model,
        "its data was read with",
    )


def _own_checkpoint_problems(record: EvidenceRecord, model: ReadModel) -> list[str]:
    """The checkpoint a command read, as its record names it (`checkpoint`: its step and files), and
    `data.tokenizer_sha256`, its tokenizer's, against the committed model."""
    problems = []
    stated = record.data.tokenizer_sha256 if record.data is not None else None
    if stated is not None and stated != model.tokenizer.sha256:
        problems.append(
            f"data.tokenizer_sha256 is {stated!r}, but the tokenizer of the committed model "
            f"{_name(model)} it read is {model.tokenizer.sha256!r}"
        )
    named = record.checkpoint
    if named is None or named.name != _name(model):
        return problems
    if named.step != model.state.get("step"):
        problems.append(
            f"checkpoint.step is {named.step}, but the committed model {named.name} it read is the "
            f"checkpoint of step {model.state.get('step')}"
        )
    for file, ref in named.files.items():
        path = model.checkpoint / file
        held = file_sha256(path) if path.is_file() else None
        if ref.sha256 != held:
            problems.append(
                f"checkpoint.files.{file} is {ref.sha256[:12]}, but the committed model {named.name} it "
                f"read holds {'no such file' if held is None else held[:12]}"
            )
    return problems


EXPORT_REPORT = "export.json"
# GATE-EXPORT-001's revision from which `architecture_keys` counts every field of config.json read
# back besides the settings the importer reads of it (stack.export.parity.architecture_read_back).
FIELDS_COUNTED_FROM = 4


def _export_config_problems(record: EvidenceRecord, run_dir: Path, model: ReadModel, spec: Spec) -> list[str]:
    """export.json's config.json (by its sha256) and `architecture_keys`, against the config.json the
    committed checkpoint makes and what the importer reads back of it."""
    path = run_dir / EXPORT_REPORT
    if not path.is_file():
        return []  # the artifact checks name a result file that is missing
    report = read_json(path, run_dir)
    written = model.hf_config
    problems = []
    file = ((report.get("files") or {}).get("config.json") or {}).get("sha256")
    digest = hashlib.sha256(model.config_json.encode("utf-8")).hexdigest()
    if file is not None and file != digest:
        problems.append(
            f"{EXPORT_REPORT}: config.json's sha256 is {file[:12]}, but the config.json of the committed "
            f"model {_name(model)} it exported hashes to {digest[:12]}"
        )
    listed = (report.get("files") or {}).get(TOKENIZER_JSON)
    problems += _tokenizer_json_problems(f"{EXPORT_REPORT}: {TOKENIZER_JSON}", listed, model, "it exported")
    problems += _tokenizer_files_problems(report, model, written)
    stated = report.get("architecture_keys")
    revision = spec.revision_at("GATE-EXPORT-001", record.spec.version) or 0
    keys = len(hf.model_config_from_hf(SimpleNamespace(**written)))
    keys += len(written) if revision >= FIELDS_COUNTED_FROM else 0
    if stated is not None and stated != keys:
        problems.append(
            f"{EXPORT_REPORT}: architecture_keys is {stated!r}, but GATE-EXPORT-001 rev {revision} reads "
            f"back {keys} setting(s) of the config.json of the committed model {_name(model)}"
        )
    return problems + _export_dtype_problems(report, model)


def _tokenizer_files_problems(report: dict[str, Any], model: ReadModel, written: dict[str, Any]) -> list[str]:
    """export.json's other tokenizer files (their bytes and sha256), its `tokenizer_keys` and the
    special ids it read from config.json, against the files the committed model makes again
    (ReadModel.tokenizer_files, tokenizer_keys; its config.json, `written`): a file's size or digest
    restated, the keys read back restated, a pad id config.json does not hold."""
    files = report.get("files") or {}
    problems = [
        f"{EXPORT_REPORT}: {name} is {listed.get('bytes')} bytes, sha256 {str(listed.get('sha256'))[:12]}, "
        f"but the {name} of the committed model {_name(model)} is {size} bytes, sha256 {digest[:12]}"
        for name, (digest, size) in model.tokenizer_files.items()
        if isinstance(listed := files.get(name), dict)
        if (listed.get("sha256"), listed.get("bytes")) != (digest, size)
    ]
    stated = report.get("tokenizer_keys")
    if stated is not None and stated != model.tokenizer_keys:
        problems.append(
            f"{EXPORT_REPORT}: tokenizer_keys is {stated!r}, but the reading of the committed model "
            f"{_name(model)}'s tokenizer holds {model.tokenizer_keys} setting(s)"
        )
    special = report.get("special_ids") if isinstance(report.get("special_ids"), dict) else {}
    problems += [
        f"{EXPORT_REPORT}: special_ids[{where!r}] is {value!r}, but the config.json of the committed model "
        f"{_name(model)} holds {written.get(where.removeprefix(CONFIG_IDS))!r}"
        for where, value in special.items()
        if where.startswith(CONFIG_IDS) and value != written.get(where.removeprefix(CONFIG_IDS))
    ]
    return problems


def _export_dtype_problems(report: dict[str, Any], model: ReadModel) -> list[str]:
    """export.json's `stored_dtypes`, against the size of the model.safetensors it lists: the
    committed model's parameters (contracts.model_shape.param_count) in those dtypes make a file of
    about that size (contracts.hf_export.dtypes_fit), where the record keeps no weights file whose
    header names them."""
    stated = report.get("stored_dtypes")
    size = ((report.get("files") or {}).get(WEIGHTS_FILE) or {}).get("bytes")
    if not isinstance(stated, list) or not isinstance(size, int):
        return []
    elements = param_count(model.state["config"]["model"])
    fits = dtypes_fit(size, elements, [str(d) for d in stated])
    if fits is None:
        return [f"{EXPORT_REPORT}: stored_dtypes {stated} names a dtype whose element size is not known"]
    if fits:
        return []
    return [
        f"{EXPORT_REPORT}: stored_dtypes is {stated}, but its {WEIGHTS_FILE} of {size} bytes does not hold "
        f"the {elements} parameters of the committed model {_name(model)} in them"
    ]
