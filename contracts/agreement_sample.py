"""The sample an agreement or parity check compares logits on, as its named source gives it.

An export's parity (GATE-EXPORT-001, GATE-EXPORT-002) and a quantisation's held-out agreement
(GATE-HQQ-002) compare two models on a sample whose record names its source: `builtin` (a fixed
text), `file:PATH` (--sample-text) or `data:DIR (heldout split)` (the held-out split of the
checkpoint's DATA_DIR). What the source decides is written here once, apart from the stack's own
cutting (stack.export.sample.windows): which split a `data:` source means, how much of it is read,
and how its ids are cut into at most `MAX_WINDOWS` windows of min(ctx, `MAX_WINDOW`) tokens. The
gates hold the windows each run consumed to `source_facts` of the ids its source encodes to (check
`sample`), and the checker derives the same facts again from the source a record names.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

# The most windows a sample holds, and the longest window (RoPE positions up to it are covered).
MAX_WINDOWS = 8
MAX_WINDOW = 256
# The split a `data:` source reads: held out, so an agreement is not measured on memorised text.
HELDOUT_SPLIT = "heldout"
BUILTIN_SOURCE = "builtin"
# How a `--sample-text FILE` source is named in the records.
FILE_PREFIX = "file:"
_HELDOUT = re.compile(r"^data:(?P<dir>.+) \(heldout split\)$")


def heldout_source(data_dir: Path) -> str:
    """What a sample of `data_dir`'s held-out split is called in the records."""
    return f"data:{data_dir} (heldout split)"


def requested_problem(source: str, sample_text: str | None) -> str | None:
    """Why a sample named `source` is not the one its request asked for, or None: a request naming
    `--sample-text FILE` (`sample_text`, as the record's settings state it) is answered by
    `file:FILE` alone, and a request naming none by the default (the held-out split or the
    built-in text), never by a file (a sampler that ignored the file and said so passed every gate)."""
    if sample_text is not None and source != f"{FILE_PREFIX}{sample_text}":
        return f"--sample-text {sample_text} was asked for, but the sample compared on is {source}"
    if sample_text is None and source.startswith(FILE_PREFIX):
        return f"no --sample-text was asked for, but the sample compared on is {source}"
    return None


def heldout_dir(source: str) -> Path | None:
    """The DATA_DIR a `data:… (heldout split)` source names; None for any other source."""
    found = _HELDOUT.match(source)
    return None if found is None else Path(found["dir"])


def window_length(ctx: int) -> int:
    """The tokens of one window for a model of context `ctx`."""
    return min(ctx, MAX_WINDOW)


def text_budget(ctx: int) -> int:
    """The bytes of a data source read (whole documents up to it): a token is at least one byte, and
    BPE tokens of real text average a few, so MAX_WINDOWS windows fit."""
    return 8 * MAX_WINDOWS * window_length(ctx)


def ids_sha256(windows: np.ndarray) -> str:
    """The digest of a sample's (N, T) ids as little-endian int64, as the records state it."""
    return hashlib.sha256(np.asarray(windows).astype("<i8").tobytes()).hexdigest()


def source_facts(ids: Sequence[int], ctx: int) -> dict[str, Any]:
    """The windows, tokens per window and ids' digest of the sample `ids` (the source's text as the
    model's tokenizer encodes it) give: min(MAX_WINDOWS, len(ids) // length) consecutive windows of
    length = window_length(ctx) tokens from the first id; a text shorter than one window is one
    shorter window."""
    length = window_length(ctx)
    count = min(MAX_WINDOWS, len(ids) // length)
    rows = np.asarray([list(ids)]) if count == 0 else np.asarray(ids[: count * length]).reshape(count, length)
    return {
        "windows": int(rows.shape[0]),
        "tokens_per_window": int(rows.shape[1]),
        "ids_sha256": ids_sha256(rows),
    }
