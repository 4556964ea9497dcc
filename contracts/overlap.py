"""How much of what `stack eval` scored the run trained on, derived from the document indexes.

A document index (stack.data.split, `documents.npy`) holds each document's 64-bit content id and
whether it was held out (1) or trained on (0). The overlap an evaluation states, how many of the
held-out documents of the data it scored are training documents of the run, or whether the file
it scored is one, counts membership in those indexes; GATE-EVAL-003's check overlap holds the
stated numbers to these, computed from the indexes themselves, apart from the code that states
them (a count of the held-out documents as training ones reported 20 of 20 in training, and
nothing read the field).
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


def text_in_training(doc: int, training: np.ndarray) -> dict[str, bool]:
    """Whether the document of content id `doc` is a training document of `training`."""
    return {"text_is_training_document": bool(np.isin(doc, training_ids(training)))}
