"""The text an export is checked on, as (windows, ctx) token ids.

Where it comes from, first match wins:

1. `--sample-text FILE`, the user's own text;
2. the held-out split of the data the checkpoint was trained on, when the records name a DATA_DIR
   that is still there with the same tokenizer (stack.train.lineage.trained_on: the run's, or for a
   surgery's or merge's output its source's; held-out, so the int8 agreement is not measured
   on text the model memorised);
3. `BUILTIN_TEXT` below, fixed, so a checkpoint copied away from its data still gets a
   deterministic check.

The ids are cut into at most `MAX_WINDOWS` consecutive windows of min(ctx, `MAX_WINDOW`)
tokens; a text shorter than one window gives one shorter window.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput

if TYPE_CHECKING:
    import torch

    from stack.data.tokenizer import Tokenizer

MAX_WINDOWS = 8
# What a sample of BUILTIN_TEXT is called in the records (tools/checkpoint_reads.py rebuilds it).
BUILTIN_SOURCE = "builtin"
# RoPE positions up to this length are covered; longer contexts are checked on their first part.
MAX_WINDOW = 256

BUILTIN_TEXT = """\
The model reads a sequence of tokens and, at every position, scores each token of the
vocabulary as the next one. An export is only as good as the agreement of those scores:
a graph that loads and runs but rotates its queries the wrong way still answers, only
wrongly. So every export is loaded back in the runtime it was made for, and its scores are
compared with the stack's on this text, position by position.

def moving_average(values, width):
    \"\"\"The mean of each run of `width` consecutive values.\"\"\"
    if width < 1:
        raise ValueError(f"width must be positive, got {width}")
    total = sum(values[:width])
    out = [total / width]
    for i in range(width, len(values)):
        total += values[i] - values[i - width]
        out.append(total / width)
    return out


class Counter:
    def __init__(self):
        self.counts = {}

    def add(self, key, n=1):
        self.counts[key] = self.counts.get(key, 0) + n
        return self.counts[key]

Numbers: 3.14159, 2.71828, 1.41421, 42, 1024, 65536. Punctuation: (a, b); [c]; {d: e}!
A second paragraph talks about weather, rivers and mountains, about the slow work of
water on stone and the quick work of wind on sand, so that the sample is not all code.
Quantisation rounds every weight to one of 256 levels; the question is whether the most
likely next token survives the rounding, which it should on most positions of real text.
"""


@dataclass(frozen=True)
class Sample:
    """Token windows to compare logits on, and where they came from (recorded in the evidence)."""

    source: str
    windows: torch.Tensor

    def describe(self) -> dict[str, Any]:
        """What export.json records about the sample."""
        ids = self.windows.numpy().astype("<i8").tobytes()
        return {
            "source": self.source,
            "windows": int(self.windows.shape[0]),
            "tokens_per_window": int(self.windows.shape[1]),
            "ids_sha256": hashlib.sha256(ids).hexdigest(),
        }


def windows(ids: list[int], ctx: int) -> torch.Tensor:
    """At most MAX_WINDOWS consecutive windows of min(ctx, MAX_WINDOW) ids, as a (N, T) LongTensor."""
    import torch

    length = min(ctx, MAX_WINDOW)
    if len(ids) < 2:
        raise BadInput("the sample text encodes to fewer than 2 tokens; pass a longer --sample-text FILE")
    count = min(MAX_WINDOWS, len(ids) // length)
    if count == 0:
        return torch.tensor([ids], dtype=torch.long)
    return torch.tensor(ids[: count * length], dtype=torch.long).view(count, length)


def read_sample_file(path: Path) -> str:
    """The user's sample text; unreadable or empty files are bad input."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read --sample-text {path}: {exc}; pass a UTF-8 text file") from None
    if not text.strip():
        raise BadInput(f"--sample-text {path} holds no text; pass a file with a few paragraphs")
    return text


def _training_data_text(checkpoint: Path, tokenizer: Tokenizer, max_bytes: int) -> tuple[str, str] | None:
    """Held-out text of the checkpoint's DATA_DIR, or None when it can't be reached or doesn't match."""
    from stack.data.tokenizer import load_tokenizer
    from stack.eval.texts import split_text
    from stack.train.lineage import trained_on

    data_dir = trained_on(checkpoint)
    try:
        if data_dir is None or load_tokenizer(data_dir).identity != tokenizer.identity:
            return None
        return split_text(data_dir, "heldout", max_bytes=max_bytes), f"data:{data_dir} (heldout split)"
    except BadInput:
        return None


def resolve_sample(
    tokenizer: Tokenizer, ctx: int, sample_file: Path | None, checkpoint: Path | None = None
) -> Sample:
    """The sample for a model of context `ctx`, by the order in the module docstring."""
    found = None
    if sample_file is not None:
        found = read_sample_file(sample_file), f"file:{sample_file}"
    elif checkpoint is not None:
        # A token is at least one byte, and BPE tokens of real text average a few.
        found = _training_data_text(checkpoint, tokenizer, max_bytes=8 * MAX_WINDOWS * min(ctx, MAX_WINDOW))
    text, source = found if found is not None else (BUILTIN_TEXT, BUILTIN_SOURCE)
    return Sample(source, windows(tokenizer.encode(text), ctx))
