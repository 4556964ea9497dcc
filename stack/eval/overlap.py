"""Whether what an evaluation scores was held out: its items or texts against the training data.

A score on text the model trained on measures memory, not generalisation, and reads the same as
a held-out one. The evaluation commands say so in their output and their record:

- `stack evalmatrix`: held-out items that are also training items (`--train`, the pool few-shot
  examples are drawn from and an adapter was tuned on), by id or by prompt text;
- `stack eval`: the documents of `--text FILE` that are training documents of the run, and the
  held-out documents of `--split val --data DATA_DIR` that are (both by the content hash of the
  document index, stack.data.split), when the run's DATA_DIR is known. The file is read as `stack
  prepare` read the run's data (`text_documents`): a file prepare cut into pieces is in the index
  as its pieces, never as one document, so it is compared piece by piece. GATE-EVAL-003's
  check overlap holds what it states to the same counts derived from the document indexes by
  contracts.overlap (`overlap_of`); GATE-FT-002's check overlap holds evalmatrix's to
  contracts.overlap.items_in_training of the items and the pool (`item_overlap`).
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from contracts import overlap as derive
from contracts.evidence import sha256_file
from contracts.gates import Outcome, gate_ensure, measure
from stack.data.corpus import Document, InputFile
from stack.data.damage import Damaged
from stack.data.defaults import DEFAULT_DOC_BYTES
from stack.data.manifest import load_manifest
from stack.data.split import INDEX_DTYPE, index_row
from stack.data.text_input import text_documents as text_reader
from stack.data.working_set import format_size
from stack.eval.items import Item


def _prompt(text: str) -> str:
    """A prompt as compared: its words, whatever the spacing."""
    return " ".join(text.split())


def prompts_of(items: list[Item]) -> list[dict[str, str]]:
    """Items as GATE-FT-002's check overlap reads them and evalmatrix.json keeps them: id and prompt."""
    return [{"id": item.id, "prompt": item.prompt} for item in items]


def item_overlap_outcome(items: list[Item], train: list[Item], stated: dict[str, list[str]]) -> Outcome:
    """GATE-FT-002's check overlap: the overlap `stack evalmatrix` states beside the items and the
    pool it was found in (ids and prompts), which the judge holds it to by contracts.overlap."""
    measured = {"overlap_stated": stated, "overlap_items": prompts_of(items)}
    measured["overlap_pool"] = prompts_of(train)
    return measure("GATE-FT-002", measured, holds="the overlap stated is the items' and the pool's")


@gate_ensure("GATE-FT-002", lambda items, train, result: item_overlap_outcome(items, train, result))
def item_overlap(items: list[Item], train: list[Item]) -> dict[str, list[str]]:
    """The held-out items also in the training items: by id, and (under another id) by prompt text."""
    ids = {item.id for item in train}
    prompts = {_prompt(item.prompt) for item in train}
    by_id = [item.id for item in items if item.id in ids]
    by_text = [item.id for item in items if item.id not in ids and _prompt(item.prompt) in prompts]
    return {"by_id": by_id, "by_text": by_text}


def _index(data_dir: Path) -> np.ndarray:
    """A DATA_DIR's document index, checked against its manifest first."""
    manifest = load_manifest(data_dir)
    path = data_dir / manifest.documents.path
    if not path.is_file() or sha256_file(path) != manifest.documents.sha256:
        raise Damaged(data_dir, f"{path} does not match its sha256 in the manifest")
    index = np.load(path, allow_pickle=False)
    if index.dtype != INDEX_DTYPE:
        raise Damaged(data_dir, f"{path} is not a document index")
    return index


def training_documents(data_dir: Path) -> np.ndarray:
    """The 64-bit content ids of a DATA_DIR's training documents."""
    index = _index(data_dir)
    return index["doc"][index["heldout"] == 0]


def text_documents(text: bytes, training: Path) -> np.ndarray:
    """The content ids of the documents `stack prepare` reads `text` as, were it a text file of the
    corpus of `training`: split at its --doc-sep and cut at its --doc-bytes (the manifest's
    `reading`; a manifest that states none was read at prepare's defaults), by prepare's own reader
    (stack.data.text_input)."""
    reading = load_manifest(training).reading
    doc_sep = None if reading is None else reading.doc_sep
    doc_bytes = DEFAULT_DOC_BYTES if reading is None else reading.doc_bytes
    separator = None if doc_sep is None else doc_sep.encode("utf-8")
    with tempfile.TemporaryDirectory(prefix="gatestack-overlap-") as scratch:
        path = Path(scratch) / "text"
        path.write_bytes(text)
        read = text_reader(InputFile("main", path, "text"), separator, len(text) + 1, _read, doc_bytes)
        ids = [index_row(item.sha, "train")[0] for item in read if isinstance(item, Document)]
    return np.array(ids, dtype=np.uint64)


def _read(_bytes: int) -> None:
    """No progress to tell: the text is read from memory."""


def text_overlap(text: bytes, training: Path) -> dict[str, Any]:
    """How many of the documents `text` reads as (`text_documents`) are training documents of `training`."""
    documents = text_documents(text, training)
    return {
        "training_data": str(training),
        "text_documents": int(documents.size),
        "text_documents_in_training": int(np.isin(documents, training_documents(training)).sum()),
    }


def heldout_overlap(data_dir: Path, training: Path) -> dict[str, Any]:
    """How many held-out documents of `data_dir` are training documents of `training`."""
    index = _index(data_dir)
    heldout = index["doc"][index["heldout"] == 1]
    shared = np.isin(heldout, training_documents(training))
    return {
        "training_data": str(training),
        "heldout_documents": int(heldout.size),
        "heldout_documents_in_training": int(shared.sum()),
    }


def cut_apart(data_dir: Path, training: Path) -> str | None:
    """Why the held-out documents of `data_dir` may hold training text `heldout_overlap` cannot
    count: the two DATA_DIRs cut their files into documents differently (--doc-sep, --doc-bytes),
    and documents are compared whole, by content; None when they were cut alike."""
    theirs, ours = load_manifest(data_dir).reading, load_manifest(training).reading
    if theirs is None or ours is None:
        return None
    apart = [
        f"{option} {_shown(getattr(theirs, field), size)} there, {_shown(getattr(ours, field), size)} "
        "in the run's"
        for option, field, size in (("--doc-sep", "doc_sep", False), ("--doc-bytes", "doc_bytes", True))
        if getattr(theirs, field) != getattr(ours, field)
    ]
    if not apart:
        return None
    return (
        f"{data_dir} cut its files into documents otherwise than the run's data ({'; '.join(apart)}): "
        "documents are compared whole, so text both hold in other pieces is not counted; prepare it "
        "with the run's options to count it"
    )


def _shown(value: str | int | None, size: bool) -> str:
    """An option's value in a message: a size in bytes as a size, a separator quoted, none as none."""
    if value is None:
        return "none"
    return format_size(int(value)) if size else repr(value)


def derived_overlap(
    text: bytes | None, data_dir: Path | None, training: Sequence[Path], lost: str | None = None
) -> dict[str, Any]:
    """The overlap `overlap_of` states, derived from the document indexes by contracts.overlap."""

    def one(training_dir: Path) -> dict[str, Any]:
        if text is not None:
            counted = derive.text_in_training(text_documents(text, training_dir), _index(training_dir))
        else:
            assert data_dir is not None, "an evaluation scores a file or a data split"
            counted = derive.heldout_in_training(_index(data_dir), _index(training_dir))
        return {"training_data": str(training_dir), **counted}

    return _over_the_chain(one, training, lost)


def overlap_outcome(
    text: bytes | None,
    data_dir: Path | None,
    training: Sequence[Path],
    lost: str | None,
    stated: dict[str, Any],
) -> Outcome:
    """GATE-EVAL-003's check overlap: the overlap stated beside the one derived from the indexes."""
    measured = {"overlap_stated": stated, "overlap_derived": derived_overlap(text, data_dir, training, lost)}
    return measure("GATE-EVAL-003", measured, holds="the overlap stated is the document indexes'")


@gate_ensure(
    "GATE-EVAL-003",
    lambda text, data_dir, training, lost, result: overlap_outcome(text, data_dir, training, lost, result),
)
def overlap_of(
    text: bytes | None, data_dir: Path | None, training: Sequence[Path], lost: str | None = None
) -> dict[str, Any]:
    """What `stack eval` states of its overlap with the training data of the model it scored:
    `training` the DATA_DIRs it learned from, the last first (stack.train.lineage
    .training_chain; empty when unknown), and `lost`, the model the chain goes on to that is not
    there any more: of the file `text` it scored, or of the held-out documents of `data_dir`."""

    def one(training_dir: Path) -> dict[str, Any]:
        if text is not None:
            return text_overlap(text, training_dir)
        assert data_dir is not None, "an evaluation scores a file or a data split"
        return heldout_overlap(data_dir, training_dir)

    return _over_the_chain(one, training, lost)


def _over_the_chain(
    one: Callable[[Path], dict[str, Any]], training: Sequence[Path], lost: str | None
) -> dict[str, Any]:
    """The overlap with the last DATA_DIR the model learned from, and, as `earlier_training_data`,
    with each it learned from before (a fine-tune's base's), each as `one` counts it (its `data`),
    or `gone` where it is no longer there; last, where the chain goes on to a model no longer
    there, that model, `gone` (the list stops there for a reason it states)."""
    if not training:
        return {"training_data": None}
    last, *earlier = training
    stated = one(last)
    rows = [
        _as_earlier(one(training_dir)) if training_dir.is_dir() else {"data": str(training_dir), "gone": True}
        for training_dir in earlier
    ]
    rows += [{"model": lost, "gone": True}] if lost is not None else []
    if rows:
        stated["earlier_training_data"] = rows
    return stated


def _as_earlier(counted: dict[str, Any]) -> dict[str, Any]:
    """One earlier DATA_DIR's counts, its path as `data`."""
    return {"data": counted["training_data"], **{k: v for k, v in counted.items() if k != "training_data"}}
