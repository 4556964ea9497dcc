"""Check a whole prepared DATA_DIR against its manifest, as `stack prepare --verify` does."""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.data.damage import Damaged
from stack.data.manifest import SPLITS, Manifest, load_manifest
from stack.data.shards import open_split
from stack.data.split import read_index
from stack.data.tokenizer import tokenizer_from_entry


def verify_data_dir(data_dir: Path | str, batch_size: int = 1, seq_len: int | None = None) -> Manifest:
    """Manifest, tokenizer, every shard (GATE-DATA-003), split disjointness (GATE-DATA-005), and the
    filters' drop counts against the drop log and the byte accounts (GATE-DATA-014).

    With `seq_len`, also a pre-flight of training: a train reader of (batch_size, seq_len) can be
    built and the held-out set a run draws (the whole split, where it is smaller than the set) holds
    no window twice, as GATE-EVAL-001 judges it before a run's first step, so a long run does not
    find out at its start that the data cannot feed it. Returns the manifest; the first problem is
    raised as the reader would raise it, and a set the gate would halt on as bad input naming the
    gate.
    """
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    tokenizer_from_entry(data_dir, manifest.tokenizer)
    for split in SPLITS:
        open_split(data_dir, manifest, split)
    read_index(data_dir / manifest.documents.path)
    if manifest.drop_log is not None:
        _check_drop_log(data_dir, manifest)
    if manifest.sft is not None:  # fine-tuning data: its label files, and GATE-SFT-001/002 on them
        from stack.data.sft_reader import check_split

        for split in SPLITS:
            check_split(data_dir, manifest, split)
    if seq_len is not None:
        from stack.data.heldout import heldout_set_outcome, repeated_windows_remedy
        from stack.data.reader import TokenReader

        TokenReader(data_dir, batch_size=batch_size, seq_len=seq_len, seed=0)
        held = heldout_set_outcome(data_dir, batch_size, seq_len)
        if not held.ok:
            remedy = repeated_windows_remedy(data_dir, batch_size, seq_len)
            raise BadInput(f"{held.message} [GATE-EVAL-001], and a run would halt on the gate: {remedy}")
    return manifest


def _check_drop_log(data_dir: Path, manifest: Manifest) -> None:
    """The drop log is the one the manifest lists, and its lines are the drops the manifest reports."""
    from stack.data.filters.droplog import recount
    from stack.data.filters.gates import check_recorded

    assert manifest.drop_log is not None
    path = data_dir / manifest.drop_log.path
    found = sha256_file(path) if path.is_file() else None
    if found != manifest.drop_log.sha256:
        raise Damaged(
            data_dir, f"{path} is {'missing' if found is None else 'not the drop log the manifest lists'}"
        )
    reports = {name: report.model_dump() for name, report in manifest.filters.items()}
    written = {name: stats.documents for name, stats in manifest.sources.items()}
    accounts = {name: account.model_dump() for name, account in manifest.accounting.items()}
    check_recorded(reports, written, recount(path), accounts)
