"""How much of what `stack eval` scored the run trained on, derived from the document indexes.

A document index (stack.data.split, `documents.npy`) holds each document's 64-bit content id and
whether it was held out (1) or trained on (0). The overlap an evaluation states, how many of the
held-out documents of the data it scored are training documents of the run, or how many of the
documents the file it scored reads as are, counts membership in those indexes; GATE-EVAL-003's
check overlap holds the stated numbers to these, computed from the indexes themselves, apart from
the code that states them (a count of the held-out documents as training ones reports 20 of 20
in training, and nothing else reads the field). `items_in_training` is the same for `stack
evalmatrix`'s held-out items and its training pool, by id and by prompt text (GATE-FT-002's check
overlap).
"""

from __future__ import annotations

import numpy as np


def training_ids(index: np.ndarray) -> np.ndarray:
    """The content ids of an index's training documents: those not held out."""
    return index["doc"][index["heldout"] == 0]


def heldout_in_training(data: np.ndarray, training: np.ndarray) -> dict[str, int]:
    """The held-out documents of the index `data`, and how many are training documents of `training`."""
    heldout = data["doc"][data["heldout"] == 1]
    return {
        "heldout_documents": int(heldout.size),
        "heldout_documents_in_training": int(np.isin(heldout, training_ids(training)).sum()),
    }


def text_in_training(documents: np.ndarray, training: np.ndarray) -> dict[str, int]:
    """The documents of a text, by content id, and how many are training documents of `training`."""
    return {
        "text_documents": int(documents.size),
        "text_documents_in_training": int(np.isin(documents, training_ids(training)).sum()),
    }


def prompt_words(prompt: str) -> str:
    """A prompt as two prompts are compared: its words, whatever the spacing between them."""
    return " ".join(prompt.split())


def items_in_training(items: list[tuple[str, str]], pool: list[tuple[str, str]]) -> dict[str, list[str]]:
    """The held-out items, as (id, prompt), that are also training items of `pool`: by id, and
    (under another id) by prompt text compared word for word (`prompt_words`), in the items' order.
    GATE-FT-002's check overlap holds what `stack evalmatrix` states to this (a comparison without
    the spacing normalised lost an item whose training twin had two spaces)."""
    ids, prompts = {i for i, _ in pool}, {prompt_words(p) for _, p in pool}
    by_id = [i for i, _ in items if i in ids]
    by_text = [i for i, p in items if i not in ids and prompt_words(p) in prompts]
    return {"by_id": by_id, "by_text": by_text}
