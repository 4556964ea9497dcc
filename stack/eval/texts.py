"""Texts to evaluate on: a prepared DATA_DIR's split, decoded back to the documents it was made of.

Bits per byte needs the real UTF-8 text, not token counts, so the split's tokens are cut at
the end-of-text separators and each document is decoded on its own (the tokenizers are
lossless, GATE-EVAL-003 checks that again when the text is scored).
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np

from contracts.errors import BadInput
from stack.data.manifest import load_manifest
from stack.data.shards import open_split
from stack.data.tokenizer import load_tokenizer


def split_documents(data_dir: Path, split: str, eot_id: int) -> Iterator[np.ndarray]:
    """The token ids of each document of `split`, in shard order, cut at the end-of-text ids."""
    for shard in open_split(data_dir, load_manifest(data_dir), split):
        tokens = np.asarray(shard.tokens)
        bounds = np.flatnonzero(tokens == eot_id)
        start = 0
        for end in [*bounds.tolist(), len(tokens)]:
            if end > start:
                yield tokens[start:end]
            start = end + 1


def split_text(data_dir: Path, split: str, max_bytes: int | None = None) -> str:
    """The documents of `split`, in shard order; with `max_bytes`, whole documents up to that size."""
    data_dir = Path(data_dir)
    tokenizer = load_tokenizer(data_dir)
    documents: list[str] = []
    size = 0
    for tokens in split_documents(data_dir, split, tokenizer.eot_id):
        text = tokenizer.decode(tokens.tolist())
        documents.append(text)
        size += len(text.encode("utf-8"))
        if max_bytes is not None and size >= max_bytes:
            return "".join(documents)
    if not documents:
        raise BadInput(f"the {split} split of {data_dir} holds no text")
    return "".join(documents)
