"""The supervised fine-tuning objective (`train.task = "sft"`): masked next-token loss on packed windows.

Only supervised targets count (the assistant's tokens and its EOS, stack.data.sft_template);
the loss is their mean cross-entropy, on training and held-out batches alike. Attention is
block-diagonal by example (the model's `docs`). GATE-SFT-003 checks that one example of a window
cannot move another: at the start of every run on a held-out window split in two, and then on
the batch the loss just used, through the loss itself, on the loop's probe cadence. Every step,
GATE-TRAIN-007 compares the targets and document ids the loss read with the prepared labels, as
the statement reads them (`Sft.stated`: never a padding position); and once, when the reader
opens, that statement read over every window of both splits names exactly the supervised tokens
the manifest counted (`check_statement`).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from contracts.errors import BadInput
from contracts.gates import Outcome, gate_require, measure
from stack.data.manifest import load_manifest
from stack.data.prefs_rows import PREFS_FORMAT
from stack.data.sft_prepare import most_pack_len
from stack.data.sft_reader import SftBatch, SftReader, pack_len_of, sft_entry, sft_heldout_batches
from stack.data.windows import WindowTable
from stack.model.consumed import Consumed
from stack.train.consumption import check_served
from stack.train.objective import Forward, Objective, StepLoss

# Logits of (idx, docs): the model with document masking, or a planted path without it.
LogitsOf = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def isolation_outcome(logits_of: LogitsOf, tokens: torch.Tensor, vocab: int) -> Outcome:
    """GATE-SFT-003's measurement on one window (T,) split into two examples at its middle.

    The first example's tokens are rewritten (each id moved by one, within the vocabulary) and
    the largest change of the second example's logits is measured. Splitting a real window in
    two makes the check independent of how the data happened to be packed.
    """
    half = tokens.shape[0] // 2
    docs = torch.cat([torch.ones(half, dtype=torch.long), torch.full((tokens.shape[0] - half,), 2)])
    docs = docs.to(tokens.device)[None]
    rewritten = tokens.clone()
    rewritten[:half] = (rewritten[:half] + 1) % vocab
    with torch.no_grad():
        before = logits_of(tokens[None], docs)[0, half:].float()
        after = logits_of(rewritten[None], docs)[0, half:].float()
    measured = {
        "max_abs_logit_diff": float((before - after).abs().max()),
        "positions_compared": int(before.shape[0]),
    }
    return measure("GATE-SFT-003", measured, holds="packed examples do not see each other")


@gate_require("GATE-SFT-003", lambda logits_of, tokens, vocab: isolation_outcome(logits_of, tokens, vocab))
def check_isolation(logits_of: LogitsOf, tokens: torch.Tensor, vocab: int) -> None:
    """Refuse to train when attention crosses the examples of a packed window."""


# Windows per block when the statement is read over a whole split (`stated_split_targets`).
STATED_BLOCK = 1024

Statement = Callable[[SftBatch], list[Consumed]]


def stated_split_targets(stated: Statement, tables: dict[str, WindowTable]) -> int:
    """The targets `stated` names over every window of a split's tables (its token ids and labels),
    a block of windows at a time: what an epoch that read each window once would score. The
    windows of packed data cover every token of a shard after its first, so this is the split's
    supervised tokens as the statement counts them."""
    tokens, labels = tables["tokens"], tables["labels"]
    total = 0
    for start in range(0, tokens.total, STATED_BLOCK):
        ids = np.arange(start, min(start + STATED_BLOCK, tokens.total), dtype=np.int64)
        batch = SftBatch(torch.from_numpy(tokens.gather(ids)), torch.from_numpy(labels.gather(ids)))
        total += sum(int((scoring.targets >= 0).sum()) for scoring in stated(batch))
    return total


def statement_outcome(stated: Statement, reader: SftReader) -> Outcome:
    """GATE-TRAIN-007's check of the statement every step's loss is held to: over every window of
    each split, read afresh from the files the manifest lists, it names as targets the supervised
    tokens prepare counted into the manifest when GATE-SFT-001 judged the labels. A statement that
    took padding, or the first token of an example, for a target names more or fewer."""
    counted = sft_entry(reader.data_dir, reader.manifest).supervised_tokens
    measured = {
        "stated_split_targets": {
            split: stated_split_targets(stated, reader.open_tables(split)) for split in counted
        },
        "split_supervised_tokens": dict(counted),
    }
    return measure("GATE-TRAIN-007", measured, holds="the statement names the manifest's supervised tokens")


@gate_require("GATE-TRAIN-007", lambda stated, reader: statement_outcome(stated, reader))
def check_statement(stated: Statement, reader: SftReader) -> None:
    """Refuse to train when the statement of what a batch supervises is not the manifest's count."""


def example_numbers(labels: torch.Tensor) -> torch.Tensor:
    """The example each token of a window belongs to (0: padding), read from its prepared labels
    (`example * 2 + supervised`, stack.data.sft_prepare)."""
    return labels // 2


def token_losses(loss: Callable[[SftBatch], object], model: torch.nn.Module, batch: SftBatch) -> torch.Tensor:
    """The cross-entropy (B, T) of every position of `batch` against its next token, from the logits
    of the model's last forward while `loss(batch)` ran: the forward the loss itself made."""
    seen: list[torch.Tensor] = []
    handle = model.register_forward_hook(lambda _module, _args, out: seen.append(out[0]))
    try:
        loss(batch)
    finally:
        handle.remove()
    logits = seen[-1].float()
    return F.cross_entropy(logits.flatten(0, 1), batch.tokens[:, 1:].flatten(), reduction="none").view(
        logits.shape[:2]
    )


def batch_isolation(
    loss: Callable[[SftBatch], object], model: torch.nn.Module, batch: SftBatch, vocab: int
) -> dict[str, float | int]:
    """GATE-SFT-003's measurement on a batch the loss used: the first example of every row is
    rewritten (each id moved by one, within the vocabulary) and the per-token losses of every other
    position of that row, computed through `loss`, are compared with the unrewritten batch's."""
    examples = example_numbers(batch.labels)
    first = examples[:, :1]
    rewritten_at = (examples == first) & (first != 0)
    tokens = torch.where(rewritten_at, (batch.tokens + 1) % vocab, batch.tokens)
    compared = (examples[:, :-1] != first) & (first != 0)
    before = token_losses(loss, model, batch)
    after = token_losses(loss, model, SftBatch(tokens, batch.labels))
    diff = (before - after).abs()[compared]
    return {
        "max_abs_token_loss_diff": float(diff.max()) if diff.numel() else 0.0,
        "probe_positions": int(compared.sum()),
    }


def _batch_outcome(measured: dict[str, float | int], step: int) -> Outcome:
    return measure("GATE-SFT-003", measured, step=step, holds="packed examples do not see each other")


@gate_require("GATE-SFT-003", _batch_outcome)
def check_batch_isolation(measured: dict[str, float | int], step: int) -> None:
    """Refuse to go on when rewriting one example of the batch the loss used moved another's loss."""


class Sft(Objective):
    """Masked next-token loss on packed SFT windows (see the module docstring)."""

    name = "sft"
    data = "data-sft"
    document_masks = True
    metric_names = ("supervised_tokens",)

    def window(self, data_dir: Path, ctx: int) -> int:
        if sft_entry(data_dir, load_manifest(data_dir)).format == PREFS_FORMAT:
            raise BadInput(
                f"{data_dir} holds preference pairs: supervised fine-tuning on them would teach the "
                "rejected completions too; tune on them with `stack dpo --data`"
            )
        pack_len = pack_len_of(data_dir)
        if pack_len > most_pack_len("chat", ctx):
            raise BadInput(
                f"{data_dir} was packed into windows of {pack_len} tokens, longer than the model's ctx "
                f"{ctx}; prepare again with --pack-len {ctx} or less"
            )
        return pack_len

    def open_reader(self, data_dir: Path, **options: Any) -> SftReader:
        """The train split's reader, once the statement read over every window of both splits
        names the supervised tokens the manifest counted (GATE-TRAIN-007's manifest check)."""
        reader = SftReader(data_dir, split="train", **options)
        check_statement(self.stated, reader)
        return reader

    def heldout(self, data_dir: Path, batch_size: int, seq_len: int, n_batches: int | None) -> list[Any]:
        return sft_heldout_batches(data_dir, batch_size, seq_len, n_batches)

    def tokens(self, batch: SftBatch) -> torch.Tensor:
        return batch.tokens

    def to_device(self, batch: SftBatch, device: torch.device) -> SftBatch:
        return batch.to(device)

    def loss(self, forward: Forward, model: torch.nn.Module, batch: SftBatch) -> StepLoss:
        targets = batch.targets
        _, loss = forward(batch.inputs, targets, docs=batch.docs)
        assert loss is not None
        return StepLoss(backprop=loss, logged=loss, metrics={"supervised_tokens": (targets >= 0).sum()})

    def stated(self, batch: SftBatch) -> list[Consumed]:
        """Read from the labels prepare wrote: a position's target is the next token when that token
        is supervised and of the same example, which is never padding (example 0, whatever its
        label says); attention keeps to each token's example."""
        examples = example_numbers(batch.labels)
        follows = (examples[:, 1:] == examples[:, :-1]) & (examples[:, 1:] > 0)
        supervised = (batch.labels[:, 1:] % 2 == 1) & follows
        targets = torch.where(supervised, batch.tokens[:, 1:], torch.full_like(batch.tokens[:, 1:], -1))
        return [Consumed(inputs=batch.tokens[:, :-1], targets=targets, docs=examples[:, :-1])]

    def probe(self, model: torch.nn.Module, batch: SftBatch, step: int) -> None:
        """GATE-TRAIN-007 at the loss (the supervised targets its gradient shows it scored, as a mean
        over them, and the logits it read and its value against the model's plain inference forward),
        then GATE-SFT-003 on the batch the loss just used, when a row of it packs a second example."""
        check_served(self.probe_parts(model, batch), model, self.stated(batch), step)
        measured = batch_isolation(lambda b: self.loss(model, model, b), model, batch, model.config.vocab)
        if measured["probe_positions"]:
            check_batch_isolation(measured, step)

    def start(self, model: torch.nn.Module, heldout: list[Any]) -> None:
        """GATE-SFT-003 on the model as training starts, over the first held-out window."""
        was_training = model.training
        model.eval()
        tokens = heldout[0].inputs[0].to(next(model.parameters()).device)  # T tokens: at most ctx
        try:
            check_isolation(lambda idx, docs: model(idx, docs=docs)[0], tokens, model.config.vocab)
        finally:
            model.train(was_training)
