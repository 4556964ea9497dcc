"""GATE-CKPT-002 of a committed checkpoint a record read, verified again from the checkpoint itself.

A command that reads a model (eval, sample, trace, export, a surgery, memorization's base) judges
GATE-CKPT-002 on it: every file its manifest lists matches its sha256, and the record states the
checkpoint's name, the files verified and the first problem. Where the command line named the
checkpoint by a path of the repository (a released model under evidence/models/, whose files are
committed and never changed), the checker verifies that directory again by the stack's own
`verify_files` and holds the record to it. A record repointed at another committed model (a
withdrawn release that holds no manifest) cannot keep saying its files were verified.

The same committed checkpoint decides the built-in sample an export or a quantisation compared
logits on (stack.export.sample): the fixed text as the checkpoint's tokenizer encodes it, cut into
windows of its context. A record whose `metrics.sample` says `builtin` states that sample's
windows, tokens per window and ids' digest, and its gates compared windows × tokens positions:
each is derived again from the checkpoint by the contracts' rule (contracts.agreement_sample). A
sample that names `data:DIR (heldout split)` is derived again from DIR's held-out split where DIR
can be read here, and named unheld (a warning) where it cannot.

And it decides the vocabulary every logit-comparing gate counts: a lens's, a patch's elements are
positions × the model's vocabulary, each position a prompt token (`config.tokens`) or, for a lens
fitted on data, a window position (`batch_size` × `seq_len`). Edited together, the gates agree
with each other (contracts.derive.trace.element_problems) but not with the model.

It decides, too, what a command restates of the model it read (`committed_source_problems`): an
evaluation's config.seq_len is the model's context (stack/cli/eval.py writes the loaded config's
ctx; eval has no --seq-len), and an export.json's source
config digest and tokenizer summary are the checkpoint's config and tokenizer as
stack.export.exporters._record writes them.

The path must be a word of the command line that is relative, that `run.places` resolved to a
place ending in that same path (the run started at the root of a checkout), and that names a
directory under evidence/ here whose name is the checkpoint the gate names.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.agreement_sample import BUILTIN_SOURCE, heldout_dir, requested_problem
from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord
from contracts.reading import read_json
from stack.data.tokenizer import load_tokenizer
from stack.data.tokenizer_record import tokenizer_from_state, tokenizer_summary
from stack.export.hf_tokenizer import expected_special_ids
from stack.export.sample import source_sample
from stack.train.checkpoint import read_manifest, read_state, verify_files
from stack.train.config import resolve
from stack.train.trained import resolve_checkpoint
from tools.integrity.settings.argv_record import given, word_of

# Where the checked tree keeps what it commits of its models (released ones included).
COMMITTED = "evidence"
# The kinds whose record's `checkpoint` is the checkpoint the command read, as
# stack.eval.evidence.note_checkpoint names it (its directory's name, its manifest's step and
# files), not one it made.
READ_KINDS = frozenset(
    {
        "eval",
        "sample",
        "memorization",
        "evalmatrix",
        "synth",
        "export-hf",
        "export-onnx",
        "laser",
        "quantize",
        "lora-merge",
        "lora-export",
    }
)
# The kinds whose `data.tokenizer_sha256` is the tokenizer of the model the command read
# (stack/cli/eval.py, sample.py, memorization.py, evalmatrix.py, stack/surgery/output.py,
# stack/export/exporters.py, stack/es/rundir.py: `trained.tokenizer.sha256`).
READ_TOKENIZER_KINDS = frozenset(
    {"eval", "sample", "memorization", "evalmatrix", "laser", "quantize", "lora-merge", "export-hf", "es"}
)


def in_repository(record: EvidenceRecord, word: str, root: Path = REPO_ROOT) -> Path | None:
    """The directory of the repository at `root` a word of the record's command line names: a relative
    word that `run.places` resolved to a place ending in that same path (the run started at the
    root of a checkout), where it still is here; else None."""
    place = (record.run.places or {}).get(word)
    if word.startswith("-") or Path(word).is_absolute() or not isinstance(place, str):
        return None
    directory = (root / word).resolve()
    same = place.rstrip("/").endswith("/" + word.strip("/"))
    return directory if same and directory.is_relative_to(root.resolve()) and directory.is_dir() else None


def _committed_reads(record: EvidenceRecord, name: str, root: Path) -> list[tuple[str, Path]]:
    """(word, directory) for each word of the command line that names committed checkpoint `name`."""
    found = []
    for word in record.run.argv or []:
        directory = in_repository(record, word, root)
        committed = (root / COMMITTED).resolve()
        if directory is not None and directory.name == name and directory.is_relative_to(committed):
            found.append((word, directory))
    return found


def committed_checkpoint_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """Where the record's GATE-CKPT-002 names a committed checkpoint its command line read: the
    files verified and the problem the record states, against that checkpoint verified again."""
    result = next((g for g in record.gates if g.id == "GATE-CKPT-002"), None)
    measured: dict[str, Any] = (
        result.measured if result is not None and isinstance(result.measured, dict) else {}
    )
    name = measured.get("checkpoint")
    if not isinstance(name, str) or "files_verified" not in measured:
        return []
    problems = []
    for word, directory in _committed_reads(record, name, root):
        problem, verified = verify_files(directory)
        stated = (measured.get("files_verified"), measured.get("problem") is None)
        if stated != (len(verified), problem is None):
            problems.append(
                f"gates[GATE-CKPT-002] says {measured.get('files_verified')} file(s) of {name} verified "
                f"({measured.get('problem') or 'no problem'}), but {word}, as committed, verifies "
                f"{len(verified)} ({problem or 'no problem'})"
            )
    return problems


# The gates that compare logits over every position of the sample an export or surgery read.
SAMPLE_GATES = ("GATE-EXPORT-001", "GATE-HQQ-002")
# The gates whose check sample states the windows consumed and what the named source gives.
SAMPLE_CHECK_GATES = ("GATE-EXPORT-001", "GATE-EXPORT-002", "GATE-HQQ-002")


def _gate_sample_problems(record: EvidenceRecord, derived: dict[str, Any], where: str) -> list[str]:
    """Each check sample's stated windows and ids, consumed and of the source, against `derived`."""
    problems = []
    for g in record.gates:
        measured = g.measured if isinstance(g.measured, dict) else {}
        if g.id not in SAMPLE_CHECK_GATES:
            continue
        problems += [
            f"gates[{g.id}].measured.{side}_{key} is {measured[f'{side}_{key}']!r}, but {where} "
            f"gives {value!r}"
            for key, value in derived.items()
            for side in ("sample", "source")
            if f"{side}_{key}" in measured and measured[f"{side}_{key}"] != value
        ]
    return problems


def _builtin_sample_problems(record: EvidenceRecord, stated: dict[str, Any], root: Path) -> list[str]:
    """The built-in sample of each committed checkpoint the record read, rebuilt by the contracts'
    rule (contracts.agreement_sample.source_facts), against the sample and positions stated."""
    checked = next((g.measured for g in record.gates if g.id == "GATE-CKPT-002"), None)
    name = checked.get("checkpoint") if isinstance(checked, dict) else None
    if not isinstance(name, str):
        return []
    problems = []
    for word, directory in _committed_reads(record, name, root):
        try:
            state = read_state(directory)
            tokenizer = tokenizer_from_state(state["tokenizer"])
            sample = source_sample(BUILTIN_SOURCE, tokenizer, int(state["config"]["model"]["ctx"]))
        except (BadInput, KeyError, TypeError, ValueError):
            continue  # a checkpoint that does not read: GATE-CKPT-002's verification says why
        where = f"the built-in sample of {word}"
        problems += [
            f"metrics.sample.{key} is {stated.get(key)!r}, but {where} has {value!r}"
            for key, value in sample.items()
            if stated.get(key) != value
        ]
        problems += _gate_sample_problems(record, sample, where)
        positions = sample["windows"] * sample["tokens_per_window"]
        problems += [
            f"gates[{g.id}].measured.positions is {g.measured.get('positions')!r}, but the built-in sample "
            f"of {word} holds {positions} positions"
            for g in record.gates
            if g.id in SAMPLE_GATES
            and isinstance(g.measured, dict)
            and "positions" in g.measured
            and g.measured.get("positions") != positions
        ]
    return problems


def _heldout_sample_findings(
    record: EvidenceRecord, stated: dict[str, Any], data_dir: Path
) -> tuple[list[str], list[str]]:
    """A `data:DIR (heldout split)` sample rebuilt from DIR's held-out split by the contracts' rule,
    encoded by DIR's tokenizer (the stack takes the split only where it is the checkpoint's), for
    the stated window length (min(ctx, MAX_WINDOW), which gives the same cut as ctx itself): the
    windows and ids stated against it. A DIR the checker cannot read leaves the sample unheld."""
    source = str(stated.get("source"))
    try:
        length = int(stated["tokens_per_window"])
        sample = source_sample(source, load_tokenizer(data_dir), length)
    except (BadInput, KeyError, TypeError, ValueError, OSError) as exc:
        return [], [f"metrics.sample is unheld: its source {source!r} cannot be read here ({exc})"]
    where = f"the held-out split of {data_dir}"
    problems = [
        f"metrics.sample.{key} is {stated.get(key)!r}, but {where} gives {value!r}"
        for key, value in sample.items()
        if stated.get(key) != value
    ]
    return problems + _gate_sample_problems(record, sample, where), []


def sample_findings(record: EvidenceRecord, root: Path = REPO_ROOT) -> tuple[list[str], list[str]]:
    """Where the record compared logits on a sample: the sample it states, the positions its gates
    compared and the windows its checks sample consumed, against the sample its named source gives
    again (a committed checkpoint's built-in sample, or a DATA_DIR's held-out split); violations and
    warnings (a data source this checker cannot read)."""
    metrics = record.metrics if isinstance(record.metrics, dict) else {}
    stated = metrics.get("sample")
    if not isinstance(stated, dict) or not isinstance(stated.get("source"), str):
        return [], []
    asked = _requested_problems(record, stated["source"])
    if stated["source"] == BUILTIN_SOURCE:
        return asked + _builtin_sample_problems(record, stated, root), []
    data_dir = heldout_dir(stated["source"])
    found = ([], []) if data_dir is None else _heldout_sample_findings(record, stated, data_dir)
    return asked + found[0], found[1]


def _requested_problems(record: EvidenceRecord, source: str) -> list[str]:
    """The sample's stated source against the one its request asked for: the record's
    config.sample_text (--sample-text FILE, or null) by contracts.agreement_sample.requested_problem
    (a record that ignored the file and stated both is caught). A kind whose config takes no
    sample_text asks for none; one that states it as other than a path or null is named."""
    config = record.config if isinstance(record.config, dict) else {}
    if "sample_text" not in config:
        return []
    asked = config["sample_text"]
    if asked is not None and not isinstance(asked, str):
        return [f"config.sample_text is {asked!r}: the sample's request cannot be read"]
    wrong = requested_problem(source, asked)
    return [] if wrong is None else [f"metrics.sample.source: {wrong}"]


# The gates whose `elements` count logits over a run's positions, by the run kind (a lens fitted on
# data compares over its first batch's windows; a reading or a patch over the prompt's tokens).
VOCABULARY_GATES = {
    "lens-train": ("GATE-LENS-001", "GATE-LENS-005"),
    "lens": ("GATE-LENS-005",),
    "patch": ("GATE-PATCH-001", "GATE-PATCH-002"),
}


def _positions(record: EvidenceRecord) -> int | None:
    """The positions a record's logit-comparing gates count elements over, per site (see above)."""
    config = record.config if isinstance(record.config, dict) else {}
    if record.run.kind == "lens-train":
        batch, length = config.get("batch_size"), config.get("seq_len")
        return batch * length if isinstance(batch, int) and isinstance(length, int) else None
    tokens = config.get("tokens")
    return tokens if isinstance(tokens, int) else None


def vocabulary_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """The `elements` a record's logit-comparing gates state, against positions × the vocabulary of
    the committed checkpoint it read (a lens-train's GATE-LENS-001 counts every lens site: a whole
    number of them)."""
    gates = VOCABULARY_GATES.get(record.run.kind, ())
    checked = next((g.measured for g in record.gates if g.id == "GATE-CKPT-002"), None)
    name = checked.get("checkpoint") if isinstance(checked, dict) else None
    positions = _positions(record)
    if not gates or not isinstance(name, str) or not positions:
        return []
    problems = []
    for word, directory in _committed_reads(record, name, root):
        try:
            vocab = int(read_state(directory)["config"]["model"]["vocab"])
        except (BadInput, KeyError, TypeError, ValueError):
            continue
        for result in record.gates:
            elements = result.measured.get("elements") if isinstance(result.measured, dict) else None
            if result.id not in gates or not isinstance(elements, int):
                continue
            per_site = positions * vocab
            if elements % per_site if result.id == "GATE-LENS-001" else elements != per_site:
                problems.append(
                    f"gates[{result.id}].measured.elements is {elements}, but {positions} position(s) of the "
                    f"{vocab}-token vocabulary of {word} make {per_site} per site"
                )
    return problems


def end_of_text_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """An export's GATE-EXPORT-001 holds every special id it names to the model's own
    (`special_expected`; before rev 4, to `eot_id`, the end of text of the checkpoint's tokenizer):
    where the checkpoint is a committed one the export read, both are the committed tokenizer's
    own, rebuilt from its state (stack.export.hf_tokenizer.expected_special_ids)."""
    stated = next((g.measured for g in record.gates if g.id == "GATE-EXPORT-001"), None)
    checked = next((g.measured for g in record.gates if g.id == "GATE-CKPT-002"), None)
    name = checked.get("checkpoint") if isinstance(checked, dict) else None
    if not isinstance(stated, dict) or "eot_id" not in stated or not isinstance(name, str):
        return []
    problems = []
    for word, directory in _committed_reads(record, name, root):
        try:
            tokenizer = tokenizer_from_state(read_state(directory)["tokenizer"])
        except (BadInput, KeyError, TypeError, ValueError):
            continue
        if stated["eot_id"] != tokenizer.eot_id:
            problems.append(
                f"gates[GATE-EXPORT-001].measured.eot_id is {stated['eot_id']!r}, but the tokenizer of "
                f"{word} ends texts with {tokenizer.eot_id}"
            )
        own = expected_special_ids(tokenizer)
        if "special_expected" in stated and stated["special_expected"] != own:
            problems.append(
                f"gates[GATE-EXPORT-001].measured.special_expected is {stated['special_expected']!r}, but "
                f"the tokenizer of {word} makes {own}"
            )
    return problems


def read_option(record: EvidenceRecord) -> str:
    """The option naming the model whose checkpoint (and tokenizer) the record states: RUN_DIR|CKPT,
    or the --base a LoRA merge changes where it gives one."""
    options = given(record.run.argv or []) or {}
    lora = record.run.kind.startswith("lora-") and options.get("base") is not None
    return "base" if lora else "path"


def committed_read(record: EvidenceRecord, root: Path = REPO_ROOT) -> tuple[str, Path] | None:
    """(word, checkpoint directory) of the committed checkpoint the record's command line read by
    its `read_option` (a directory under evidence/ here, `in_repository`); None for a model read
    elsewhere. Raises BadInput for a committed directory that holds no checkpoint to read."""
    word = word_of(record.run.argv or [], read_option(record))
    directory = in_repository(record, word, root) if word is not None else None
    if word is None or directory is None or not directory.is_relative_to((root / COMMITTED).resolve()):
        return None
    return word, resolve_checkpoint(directory)


def read_checkpoint_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """Where a command read a committed checkpoint: the `checkpoint` its record states (READ_KINDS)
    is that checkpoint's name, step and files as its manifest lists them, and the tokenizer it
    states (READ_TOKENIZER_KINDS) is that checkpoint's, rebuilt from its state by the stack's own
    code. The committed files are never changed (the registry's history holds them), so this holds
    of a record of a dirty tree as of a clean one."""
    if record.run.kind not in READ_KINDS | READ_TOKENIZER_KINDS:
        return []
    try:
        read = committed_read(record, root)
        if read is None:
            return []
        word, checkpoint = read
        manifest = read_manifest(checkpoint)
        tokenizer = tokenizer_from_state(read_state(checkpoint)["tokenizer"]).sha256
    except (BadInput, KeyError, TypeError) as exc:
        return [f"the committed checkpoint its command line read cannot be read here: {exc}"]
    problems = []
    stated = record.checkpoint if record.run.kind in READ_KINDS else None
    if stated is not None:
        files = {name: (entry["sha256"], entry["bytes"]) for name, entry in manifest["files"].items()}
        said = {name: (entry.sha256, entry.bytes) for name, entry in stated.files.items()}
        problems += [
            f"checkpoint.{field} is {mine!r}, but {word}, as committed, has {theirs!r}"
            for field, mine, theirs in (
                ("name", stated.name, checkpoint.name),
                ("step", stated.step, manifest["step"]),
                ("files", said, files),
            )
            if mine != theirs
        ]
    said_tokenizer = record.data.tokenizer_sha256 if record.data is not None else None
    if record.run.kind in READ_TOKENIZER_KINDS and said_tokenizer != tokenizer:
        problems.append(
            f"data.tokenizer_sha256 is {said_tokenizer!r}, but the tokenizer of {word}, as committed, is "
            f"{tokenizer!r}"
        )
    return problems


# The kinds whose export.json restates the source checkpoint's config digest and tokenizer.
EXPORT_KINDS = frozenset({"export-hf", "export-onnx"})
EXPORT_RECORD = "export.json"


def committed_source_problems(record: EvidenceRecord, run_dir: Path, root: Path = REPO_ROOT) -> list[str]:
    """Where a command read a committed checkpoint: an evaluation's config.seq_len is its config's
    model.ctx, and an export's export.json states its config's digest (`source_checkpoint.config_sha256`,
    the resolved config's sha256, as stack.train.trained.load_trained resolves it) and its tokenizer
    (`tokenizer`: stack.data.tokenizer_record.tokenizer_summary of the tokenizer rebuilt from its
    state). A committed checkpoint that cannot be read is named, never passed."""
    if record.run.kind != "eval" and record.run.kind not in EXPORT_KINDS:
        return []
    try:
        read = committed_read(record, root)
        if read is None:
            return []
        word, checkpoint = read
        state = read_state(checkpoint)
        config = resolve(None, None, [], base=state["config"])
        tokenizer = tokenizer_summary(tokenizer_from_state(state["tokenizer"]))
    except (BadInput, KeyError, TypeError, ValueError) as exc:
        return [f"the committed checkpoint its command line read cannot be read here: {exc}"]
    stated = record.config if isinstance(record.config, dict) else {}
    if record.run.kind == "eval":
        if stated.get("seq_len") == config.model.ctx:
            return []
        return [
            f"config.seq_len is {stated.get('seq_len')!r}, but {word}, as committed, has a context of "
            f"{config.model.ctx}, the windows `stack eval` scores"
        ]
    report = _json_of(run_dir / EXPORT_RECORD)
    if report is None:
        return []  # a record that cites no export.json is named by its derivation (contracts.derive)
    source = report.get("source_checkpoint") if isinstance(report.get("source_checkpoint"), dict) else {}
    problems = []
    if source.get("config_sha256") != config.sha256:
        problems.append(
            f"{EXPORT_RECORD}'s source_checkpoint.config_sha256 is {source.get('config_sha256')!r}, but the "
            f"config of {word}, as committed, hashes to {config.sha256!r}"
        )
    if report.get("tokenizer") != tokenizer:
        differing = sorted(
            key
            for key in set(tokenizer) | set(report.get("tokenizer") or {})
            if (report.get("tokenizer") or {}).get(key) != tokenizer.get(key)
        )
        problems.append(
            f"{EXPORT_RECORD}'s tokenizer states {', '.join(differing) or 'its fields'} otherwise than the "
            f"tokenizer of {word}, as committed ({', '.join(f'{k}={tokenizer.get(k)!r}' for k in differing)})"
        )
    return problems


def _json_of(path: Path) -> dict[str, Any] | None:
    """The JSON object in `path`, or None where there is no such file or it holds no object (one
    that does not read as JSON raises `Unreadable`, which the checker names)."""
    if not path.is_file():
        return None
    value = read_json(path)
    return value if isinstance(value, dict) else None
