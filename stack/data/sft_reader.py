"""The reader of supervised fine-tuning data: the token stream of TokenReader, with its labels.

SFT data (stack.data.sft_prepare) is laid out so that pretraining's windows are the packed
windows: `seq_len` must be the manifest's `pack_len`. The order, the resume and the checks of
GATE-DATA-001/002 are TokenReader's own; this class only gathers the label windows with the
same ids, from label files verified against the manifest, and judges GATE-SFT-001 on the
split's tokens and labels, and GATE-SFT-002 on prepare's marker counts, when it opens.

A batch is an `SftBatch`: tokens and labels, both (B, T+1). `inputs`, `docs` and `targets`
are what the model sees: the first T tokens, their example numbers, and the next tokens where
they are supervised and belong to the same example as their input (-1 elsewhere, ignored by the
loss), so no target crosses from one example into the next.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from contracts.device_copy import sent
from contracts.errors import BadInput
from contracts.evidence import sha256_file
from stack.data.damage import Damaged
from stack.data.heldout import heldout_batches, spread_ids
from stack.data.manifest import Manifest, SftEntry, load_manifest
from stack.data.reader import TokenReader
from stack.data.sft_gates import check_markers, check_supervision
from stack.data.sft_prepare import LABEL_DTYPE, labels_header
from stack.data.shards import HEADER, MappedShard, open_split
from stack.data.tokenizer import tokenizer_from_entry
from stack.data.windows import WindowTable


@dataclass(frozen=True)
class SftBatch:
    """Token ids and labels (`example * 2 + supervised`) of B windows of T+1 tokens."""

    tokens: torch.Tensor
    labels: torch.Tensor

    def to(self, device: torch.device) -> SftBatch:
        """Both tensors on `device`, copied without waiting for the work queued there."""
        return SftBatch(sent(self.tokens, device), sent(self.labels, device))

    def __getitem__(self, rows: slice) -> SftBatch:
        """The windows `rows` of the batch, as a batch (what a probe reads a part at a time)."""
        return SftBatch(self.tokens[rows], self.labels[rows])

    @property
    def inputs(self) -> torch.Tensor:
        return self.tokens[:, :-1]

    @property
    def docs(self) -> torch.Tensor:
        """The example number of each input token (0: padding)."""
        return self.labels[:, :-1] >> 1

    @property
    def targets(self) -> torch.Tensor:
        """Next tokens where supervised within the same example, else -1."""
        follows = (self.labels[:, 1:] >> 1) == self.docs
        supervised = (self.labels[:, 1:] & 1).bool() & follows
        return torch.where(supervised, self.tokens[:, 1:], torch.full_like(self.tokens[:, 1:], -1))


def sft_entry(data_dir: Path, manifest: Manifest) -> SftEntry:
    """The manifest's fine-tuning entry; data prepared for pretraining is refused in one line."""
    if manifest.sft is None:
        raise BadInput(
            f"{data_dir} holds pretraining text, not fine-tuning examples; prepare them with "
            "`stack prepare FILE.jsonl --format chat|prompt-completion --out DATA_DIR` (sft) or "
            "`--format prefs` (dpo)"
        )
    return manifest.sft


def open_labels(data_dir: Path, manifest: Manifest, split: str) -> list[MappedShard]:
    """The label files of a split's shards, in the shards' order, verified against the manifest."""
    entry = sft_entry(data_dir, manifest)
    by_shard = {labels.shard: labels for labels in entry.labels}
    mapped = []
    for shard in manifest.shards_of(split):
        labels = by_shard.get(shard.path)
        if labels is None or labels.tokens != shard.tokens:
            raise Damaged(data_dir, f"the manifest of {data_dir} lists no labels for {shard.path}")
        path = data_dir / labels.path
        if not path.is_file() or path.stat().st_size != labels.bytes or sha256_file(path) != labels.sha256:
            raise Damaged(data_dir, f"{labels.path} is missing or does not match its sha256 in the manifest")
        with open(path, "rb") as handle:
            head = handle.read(HEADER.size)
        if head[:24] != labels_header(labels.tokens, 0)[:24]:  # magic, version, width, tokens
            raise Damaged(
                data_dir, f"{labels.path} does not start with a label header for {labels.tokens} tokens"
            )
        tokens = np.memmap(path, dtype=LABEL_DTYPE, mode="r", offset=HEADER.size, shape=(labels.tokens,))
        mapped.append(MappedShard(shard, tokens))
    return mapped


def check_split(data_dir: Path, manifest: Manifest, split: str) -> None:
    """GATE-SFT-001 on what the run will read of `split`, and GATE-SFT-002 on prepare's counts."""
    entry = sft_entry(data_dir, manifest)
    eos_id = tokenizer_from_entry(data_dir, manifest.tokenizer).eot_id
    for shard, labels in zip(
        open_split(data_dir, manifest, split), open_labels(data_dir, manifest, split), strict=True
    ):
        by_model = entry.renderer == "model"  # the model's own template may end a prompt's turn with its EOS
        check_supervision(np.asarray(shard.tokens), np.asarray(labels.tokens), eos_id, by_model)
    check_markers(entry.assistant_turns, entry.markers_missing)


def pack_len_of(data_dir: Path) -> int:
    """The window length SFT data was packed for."""
    data_dir = Path(data_dir)
    return sft_entry(data_dir, load_manifest(data_dir)).pack_len


class SftReader(TokenReader):
    """TokenReader over packed SFT windows; `next_batch` returns an SftBatch."""

    def __init__(self, data_dir: Path | str, split: str = "train", **options: Any) -> None:
        data_dir = Path(data_dir)
        manifest = load_manifest(data_dir)
        entry = sft_entry(data_dir, manifest)
        if options.get("seq_len") != entry.pack_len:
            raise BadInput(
                f"{data_dir} was packed into windows of {entry.pack_len} tokens; read it with seq_len "
                f"{entry.pack_len}, not {options.get('seq_len')}"
            )
        super().__init__(data_dir, split, **options)
        check_split(data_dir, self.manifest, split)
        self._labels = self._tables["labels"]

    def split_tables(self, split: str, shards: list[MappedShard]) -> dict[str, WindowTable]:
        """The token ids of `shards` and, by the same window ids, their labels."""
        paths = {shard.entry.path for shard in shards}
        labels = [m for m in open_labels(self.data_dir, self.manifest, split) if m.entry.path in paths]
        return {**super().split_tables(split, shards), "labels": WindowTable(labels, self.seq_len)}

    def tables_of(self, batch: SftBatch) -> dict[str, torch.Tensor]:  # type: ignore[override]
        """A batch's tokens and labels."""
        return {"tokens": batch.tokens, "labels": batch.labels}

    def next_batch(self) -> SftBatch:  # type: ignore[override]
        """The next batch of this rank, with the labels of the same windows."""
        tokens = super().next_batch()
        ids = self._rank_ids(self.epoch, self._index - 1, 1)  # the step just served
        labels = torch.from_numpy(self._labels.gather(ids).reshape(tokens.shape))
        return SftBatch(tokens, labels)


def sft_heldout_batches(
    data_dir: Path, batch_size: int, seq_len: int, n_batches: int | None
) -> list[SftBatch]:
    """The held-out batches of heldout_batches, with their labels: masked exactly as training is."""
    data_dir = Path(data_dir)
    manifest = load_manifest(data_dir)
    check_split(data_dir, manifest, "heldout")
    tokens = heldout_batches(data_dir, batch_size, seq_len, n_batches=n_batches)
    table = WindowTable(open_labels(data_dir, manifest, "heldout"), seq_len)
    size = int(tokens[0].shape[0])  # batch_size, or 1 for a split evaluated whole
    ids = spread_ids(table.total, len(tokens) * size)
    labels = torch.from_numpy(table.gather(ids).reshape(len(tokens), size, seq_len + 1))
    return [SftBatch(t, lab) for t, lab in zip(tokens, labels.unbind(0), strict=True)]
