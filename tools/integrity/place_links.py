"""Records linked by the places their command lines name, not only by the digests they state.

A record names what it read by digest (`data.manifest_sha256`, a lineage parent's weights, the
files of the checkpoint it read, a lens's sha256), and the cross-record checks keyed by digest
(tools/integrity/lineage.py) hold it to the ledger's record that made those bytes. A digest that no record
of the ledger made matches nothing, and those checks went silent: a run's manifest restated as
an unknown digest dropped every check against its prepare record, a memorization's checkpoint
swapped for another run's passed.

Here a record is also linked by place. Where the ledger holds a record whose command line wrote
the directory (or file) that another record's command line read, and that finished before the
reader started, the last such writer decides what the reader found there, and the reader's
digests must be the writer's:

- data a prepare record wrote (its `--out`): the reader's `data.manifest_sha256`, which a run
  that makes a model must state;
- a model a run wrote (its `--out`, or `--resume` for a later leg; a surgery's, merge's, export's
  or import's `--out`): each lineage parent read there names the weights the writer made
  (tools/integrity/lineage.made_weights), and a record whose `checkpoint` is the one it read (an
  evaluation, a sample, a memorization, a surgery's source, ...) hashes those weights, names the
  step the writer's checkpoint is at, states that checkpoint's name and every file of it by the
  sha256 and size the writer stated (a completed one states the checkpoint it read at all) and (for
  a command that states the read model's tokenizer) its tokenizer;
- a tuned lens a lens training saved (`--save`): the `config.lens_sha256` of a reading of it
  (`--lens`);
- the adapters a LoRA run wrote: a merge of them (`stack lora merge ADAPTER`) merged the modules
  the run's config puts adapters on, and counts that many.

A read of one of a run's earlier checkpoints (a step its record does not vouch for) is not
compared. Paths are compared where each run resolved them (`run.places`, links followed), or as
written when absolute; a relative word the run did not resolve is not linked.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import datetime
from pathlib import PurePath

from contracts.checkpoint_layout import adapted_modules
from contracts.evidence import CheckpointRef, EvidenceRecord, RunStatus, run_named
from contracts.model_parameters import lora_touched
from tools.integrity.lineage import MAKING_KINDS, WEIGHTS_FILE, made_weights
from tools.integrity.models.checkpoint_reads import READ_KINDS, READ_TOKENIZER_KINDS, read_option
from tools.integrity.settings.argv_record import given, word_of

# The option of `stack lora merge ADAPTER` that names the adapters it merges.
ADAPTER_OPTION = "path"
# The options through which a command writes what another command reads.
WRITING_OPTIONS = ("out", "resume", "save")


@dataclass(frozen=True)
class Written:
    """A place a record of the ledger wrote: the place's parts, by which option, and the record."""

    place: tuple[str, ...]
    option: str
    record: EvidenceRecord
    finished: datetime


@dataclass(frozen=True)
class Read:
    """A place a record's command line named by an option (not one it wrote): the option, the
    place's parts, and how the command line spelled it (`places` keys its resolution by that)."""

    option: str
    place: tuple[str, ...]
    word: str


def _places_named(argv: list[str], places: Mapping[str, str]) -> dict[str, tuple[str, tuple[str, ...]]]:
    """Option → (its word, the place it led to) for each path an option of a `stack` command line
    gives (argv_record.word_of): where the run resolved the word (`run.places`, links followed), or
    the word itself when it is absolute. A relative word the run did not resolve names no place."""
    named = {}
    for option in given(argv) or {}:
        word = word_of(argv, option)
        place = _place(word, places) if word is not None else None
        if word is not None and place is not None:
            named[option] = (word, place)
    return named


def _place(word: str, places: Mapping[str, str]) -> tuple[str, ...] | None:
    """The parts of the place `word` led to (see `_places_named`), or None."""
    where = places.get(word) or (word if word.startswith("/") else None)
    return PurePath(os.path.normpath(where)).parts if where is not None else None


def _command_lines(record: EvidenceRecord) -> list[tuple[list[str], dict[str, str]]]:
    """(argv, places) of the record's start and of each resume it lists."""
    lines = [(record.run.argv or [], record.run.places or {})]
    resumes = record.metrics.get("resumes") if isinstance(record.metrics, dict) else None
    return lines + [
        (r["argv"], r.get("places") or {})
        for r in resumes or []
        if isinstance(r, dict) and isinstance(r.get("argv"), list)
    ]


@dataclass(frozen=True)
class Places:
    """The places one record's command lines name: (option, place) of each its first one wrote
    (WRITING_OPTIONS), and every one they read (`_reads`)."""

    written: tuple[tuple[str, tuple[str, ...]], ...]
    read: tuple[Read, ...]


def record_places(record: EvidenceRecord) -> Places:
    """The places `record`'s command lines name (`Places`): a function of the record alone, which a
    check of many runs against one ledger may work out once a record (place_link_problems)."""
    named = _places_named(record.run.argv or [], record.run.places or {})
    written = tuple((option, named[option][1]) for option in WRITING_OPTIONS if option in named)
    return Places(written, tuple(_reads(record)))


def _written(records: Mapping[str, EvidenceRecord], places: Callable[[str], Places]) -> list[Written]:
    """Every place a record's first command line wrote (WRITING_OPTIONS)."""
    return [
        Written(place, option, record, record.run.finished or record.run.started)
        for run_id, record in records.items()
        for option, place in places(run_id).written
    ]


def _reads(record: EvidenceRecord) -> list[Read]:
    """Every place an option of the record's command lines names but the ones it writes
    (WRITING_OPTIONS: a resume's run directory is the run's own, held by its `resumes` parent)."""
    return [
        Read(option, place, word)
        for argv, places in _command_lines(record)
        for option, (word, place) in _places_named(argv, places).items()
        if option not in WRITING_OPTIONS
    ]


def _writer(
    read: Read, reader: EvidenceRecord, written: Mapping[tuple[str, ...], list[tuple[int, Written]]]
) -> Written | None:
    """The last record of another run that wrote the place read (or a directory holding it) and
    finished before `reader` started; of two that finished at once, the one the ledger lists
    first. `written` holds the writes by place, each with its position in the ledger, so only
    the places that hold the one read (its own and its parents') are looked at."""
    before = [
        (w.finished, -position, w)
        for depth in range(len(read.place) + 1)
        for position, w in written.get(read.place[:depth], ())
        if run_named(w.record.run.id) != run_named(reader.run.id) and w.finished <= reader.run.started
    ]
    return max(before, key=lambda found: found[:2])[2] if before else None


def place_link_problems(
    records: Mapping[str, EvidenceRecord], places: Callable[[str], Places] | None = None
) -> list[tuple[str, str]]:
    """(run id, problem) for each record whose digests of what it read at a place are not those of
    the record of the ledger that wrote that place (see the module docstring). `places` gives a
    record's `record_places` by run id (by default worked out here)."""
    places_of = places or (lambda run_id: record_places(records[run_id]))
    written: dict[tuple[str, ...], list[tuple[int, Written]]] = {}
    for position, write in enumerate(_written(records, places_of)):
        written.setdefault(write.place, []).append((position, write))
    problems = []
    for run_id, record in records.items():
        seen: set[tuple[str, str]] = set()
        for read in places_of(run_id).read:
            writer = _writer(read, record, written)
            if writer is None or (read.option, writer.record.run.id) in seen:
                continue
            seen.add((read.option, writer.record.run.id))
            where = f"{read.word} (written by {writer.record.run.id!r})"
            rest = read.place[len(writer.place) :]
            if writer.record.run.kind == "prepare" and not rest:
                found = _data_problems(record, writer.record, where)
            elif writer.option == "save" and not rest:
                found = _lens_problems(record, writer.record, read, where)
            elif record.run.kind == "lora-merge" and read.option == ADAPTER_OPTION:
                found = _merged_problems(record, writer.record, where)
            elif _names_vouched(writer.record, rest):
                found = _model_problems(record, writer.record, read, where)
            else:
                found = []
            problems += [(run_id, problem) for problem in found]
    return problems


def _data_problems(record: EvidenceRecord, prepare: EvidenceRecord, where: str) -> list[str]:
    """The manifest a record of data a prepare record wrote states is that record's (a run that
    makes a model states one; another command may state none)."""
    stated = record.data.manifest_sha256 if record.data is not None else None
    made = prepare.data.manifest_sha256 if prepare.data is not None else None
    if made is None or stated == made or (stated is None and record.run.kind not in MAKING_KINDS):
        return []
    return [f"data.manifest_sha256 is {stated!r}, but the data it read at {where} has the manifest {made!r}"]


def _lens_problems(record: EvidenceRecord, training: EvidenceRecord, read: Read, where: str) -> list[str]:
    """A lens reading of a lens a lens training saved states that lens's sha256."""
    config, saved = record.config, training.config
    stated = config.get("lens_sha256") if isinstance(config, dict) else None
    made = saved.get("lens_sha256") if isinstance(saved, dict) else None
    if read.option != "lens" or made is None or stated == made:
        return []
    return [f"config.lens_sha256 is {stated!r}, but the lens it read at {where} is {made!r}"]


def _merged_problems(record: EvidenceRecord, writer: EvidenceRecord, where: str) -> list[str]:
    """A merge of the adapters a LoRA run of the ledger wrote merged the modules its config puts
    them on (contracts.model_parameters.lora_touched of its model and `lora.targets`, on the modules
    contracts.checkpoint_layout.adapted_modules names): `metrics.modules`, and the adapters its
    parity and unmerge checks count (so two invented modules of a layer the model lacks are
    caught)."""
    config = writer.config if isinstance(writer.config, dict) else {}
    model, lora = config.get("model"), config.get("lora")
    if not isinstance(model, dict) or not isinstance(lora, dict):
        return []
    touched = lora_touched(model, lora.get("targets"))
    modules = adapted_modules(model, touched) if touched is not None else None
    if modules is None:
        return [f"the adapters it merged at {where} sit on modules the checker cannot decide"]
    metrics = record.metrics if isinstance(record.metrics, dict) else {}
    stated = {
        "metrics.modules": (metrics.get("modules"), modules),
        "metrics.parity.adapters": ((metrics.get("parity") or {}).get("adapters"), len(modules)),
        "metrics.unmerge.adapters": ((metrics.get("unmerge") or {}).get("adapters"), len(modules)),
    }
    return [
        f"{field} is {value!r}, but the adapters it merged at {where} sit on {modules}"
        for field, (value, due) in stated.items()
        if value is not None and value != due
    ]


def _names_vouched(writer: EvidenceRecord, rest: tuple[str, ...]) -> bool:
    """Whether a read `rest` below the place a model's writer wrote is the model it vouches for: the
    place itself, or its checkpoint's own directory."""
    if made_weights(writer) is None:
        return False
    return not rest or (writer.checkpoint is not None and rest[-1] == writer.checkpoint.name)


def _model_problems(record: EvidenceRecord, writer: EvidenceRecord, read: Read, where: str) -> list[str]:
    """What a record states of a model it read where a record of the ledger made it: each parent
    read there names its weights; the checkpoint a reading kind read by that option hashes them and
    is at the writer's step; and a kind that states the read model's tokenizer states its own."""
    made = str(made_weights(writer))
    problems = [
        f"its {ref.role} parent names the weights {ref.checkpoint_sha256[:12]}, but the model it read at "
        f"{where} is {made[:12]}"
        for ref in (record.lineage.parents if record.lineage is not None else [])
        if ref.path is not None
        and _parent_place(record, ref.path) == read.place
        and ref.checkpoint_sha256 != made
    ]
    if read.option != read_option(record):
        return problems
    checkpoint = record.checkpoint if record.run.kind in READ_KINDS else None
    hashed = checkpoint.files.get(WEIGHTS_FILE) if checkpoint is not None else None
    if hashed is not None and hashed.sha256 != made:
        problems.append(
            f"checkpoint.files.{WEIGHTS_FILE} is {hashed.sha256[:12]}, but the model it read at {where} is "
            f"{made[:12]}"
        )
    made_checkpoint = writer.checkpoint if writer.run.kind in MAKING_KINDS else None
    step = made_checkpoint.step if made_checkpoint is not None else None
    if checkpoint is None and made_checkpoint is not None and _states_its_read(record):
        problems.append(
            f"it states no checkpoint, but it read the checkpoint {made_checkpoint.name} at {where}: a "
            f"completed {record.run.kind} record names the checkpoint it read and its files"
        )
    if checkpoint is not None and step is not None and checkpoint.step != step:
        problems.append(
            f"checkpoint.step is {checkpoint.step}, but the model it read at {where} is of step {step}"
        )
    elif checkpoint is not None and made_checkpoint is not None:
        problems += _checkpoint_files_problems(checkpoint, made_checkpoint, where)
    tokenizer = (
        writer.data.tokenizer_sha256 if writer.data is not None and writer.run.kind in MAKING_KINDS else None
    )
    stated = record.data.tokenizer_sha256 if record.data is not None else None
    if record.run.kind in READ_TOKENIZER_KINDS and tokenizer is not None and stated != tokenizer:
        problems.append(
            f"data.tokenizer_sha256 is {stated!r}, but the model it read at {where} has the tokenizer "
            f"{tokenizer!r}"
        )
    return problems


def _states_its_read(record: EvidenceRecord) -> bool:
    """Whether `record` must state the checkpoint it read: a completed record of a kind whose
    `checkpoint` is the one its command read (stack.eval.evidence.note_checkpoint)."""
    return record.run.kind in READ_KINDS and record.run.status is RunStatus.COMPLETED


def _checkpoint_files_problems(read: CheckpointRef, made: CheckpointRef, where: str) -> list[str]:
    """The files of the checkpoint a record read where a record of the ledger wrote it (the same
    checkpoint: its name and step) are the files the writer stated, each by its sha256 and size:
    both records hashed the same bytes, so a file stated otherwise by either is a restatement
    (a fine-tune's state.json size restated, though the memorization record that read that
    checkpoint states the size it wrote). The reader's problem names the writer."""
    if read.name != made.name:
        return [f"checkpoint.name is {read.name!r}, but the model it read at {where} is {made.name!r}"]
    stated = {name: (ref.sha256, ref.bytes) for name, ref in read.files.items()}
    wrote = {name: (ref.sha256, ref.bytes) for name, ref in made.files.items()}
    problems = [
        f"checkpoint.files lacks {name}, which the checkpoint it read at {where} holds"
        if name not in stated
        else f"checkpoint.files lists {name}, which the checkpoint it read at {where} does not hold"
        for name in sorted(stated.keys() ^ wrote.keys())
    ]
    return problems + [
        f"checkpoint.files.{name} is {stated[name][0][:12]} of {stated[name][1]} bytes, but the checkpoint "
        f"it read at {where} states {wrote[name][0][:12]} of {wrote[name][1]} bytes"
        for name in sorted(stated.keys() & wrote.keys())
        if stated[name] != wrote[name]
    ]


def _parent_place(record: EvidenceRecord, path: str) -> tuple[str, ...] | None:
    """The place a lineage parent's path led to: the place of the command-line word it was given
    as (the stack names a parent by the path it was handed), else the path itself when absolute."""
    for argv, places in _command_lines(record):
        for word, place in _places_named(argv, places).values():
            if PurePath(word) == PurePath(path):
                return place
    return _place(path, {})
