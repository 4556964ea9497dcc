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
tokens; a text shorter than one window gives one shorter window. What a source decides (its split,
how much of it is read, how it is cut) is contracts.agreement_sample's: the gates that compare on a
sample hold the windows they consumed to it (check `sample`, `check_sample_*` below).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.agreement_sample import (
    BUILTIN_SOURCE,
    FILE_PREFIX,
    HELDOUT_SPLIT,
    MAX_WINDOW,
    MAX_WINDOWS,
    heldout_dir,
    heldout_source,
    ids_sha256,
    source_facts,
    text_budget,
)
from contracts.errors import BadInput
from contracts.gates import Outcome, gate_require, measure

if TYPE_CHECKING:
    import torch

    from stack.data.tokenizer import Tokenizer

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
        return {
            "source": self.source,
            "windows": int(self.windows.shape[0]),
            "tokens_per_window": int(self.windows.shape[1]),
            "ids_sha256": ids_sha256(self.windows.numpy()),
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
        return split_text(data_dir, HELDOUT_SPLIT, max_bytes=max_bytes), heldout_source(data_dir)
    except BadInput:
        return None


def resolve_sample(
    tokenizer: Tokenizer, ctx: int, sample_file: Path | None, checkpoint: Path | None = None
) -> Sample:
    """The sample for a model of context `ctx`, by the order in the module docstring."""
    found = None
    if sample_file is not None:
        found = read_sample_file(sample_file), f"{FILE_PREFIX}{sample_file}"
    elif checkpoint is not None:
        found = _training_data_text(checkpoint, tokenizer, max_bytes=text_budget(ctx))
    text, source = found if found is not None else (BUILTIN_TEXT, BUILTIN_SOURCE)
    return Sample(source, windows(tokenizer.encode(text), ctx))


def named_text(source: str, ctx: int) -> str:
    """The text a sample's `source` names, read again from the source itself: the fixed text, the
    file, or the held-out split of the DATA_DIR (contracts.agreement_sample). BadInput when it
    cannot be read (a DATA_DIR moved away, a file gone)."""
    from stack.eval.texts import split_text

    if source == BUILTIN_SOURCE:
        return BUILTIN_TEXT
    if source.startswith(FILE_PREFIX):
        return read_sample_file(Path(source.removeprefix(FILE_PREFIX)))
    data_dir = heldout_dir(source)
    if data_dir is None:
        raise BadInput(f"the sample source {source!r} names no text this stack reads")
    return split_text(data_dir, HELDOUT_SPLIT, max_bytes=text_budget(ctx))


def source_sample(source: str, tokenizer: Tokenizer, ctx: int) -> dict[str, Any]:
    """What the named source gives as a sample for a model of context `ctx`: contracts'
    source_facts of its text as `tokenizer` encodes it (the checker derives a record's with it)."""
    return source_facts(tokenizer.encode(named_text(source, ctx)), ctx)


def sample_measured(sample: Sample, tokenizer: Tokenizer, ctx: int) -> dict[str, Any]:
    """The windows a gate compares on, as consumed, beside what their named source gives."""
    consumed = sample.describe()
    derived = source_sample(sample.source, tokenizer, ctx)
    return {
        "sample_source": sample.source,
        **{f"sample_{key}": consumed[key] for key in derived},
        **{f"source_{key}": value for key, value in derived.items()},
    }


def _sample_outcome(gate_id: str) -> Callable[..., Outcome]:
    def outcome(sample: Sample, tokenizer: Tokenizer, ctx: int) -> Outcome:
        return measure(
            gate_id,
            sample_measured(sample, tokenizer, ctx),
            holds=f"the sample is what {sample.source} gives",
        )

    return outcome


def _agreement_sample_outcome(
    sample: Sample, tokenizer: Tokenizer, ctx: int, requested: str | None
) -> Outcome:
    """GATE-HQQ-002's sample values, and the `--sample-text` the request named beside the source the
    sample came from (check requested)."""
    measured = {**sample_measured(sample, tokenizer, ctx), "requested_sample_text": requested}
    return measure("GATE-HQQ-002", measured, holds=f"the sample is what {sample.source} gives, as requested")


@gate_require("GATE-HQQ-002", _agreement_sample_outcome)
def check_sample_agreement(sample: Sample, tokenizer: Tokenizer, ctx: int, requested: str | None) -> None:
    """GATE-HQQ-002's checks sample and requested: the held-out agreement compares on the windows its
    source gives, and that source is the one the request asked for (`requested`: the --sample-text
    FILE as the record's settings state it, or None)."""


@gate_require("GATE-EXPORT-001", _sample_outcome("GATE-EXPORT-001"))
def check_sample_hf(sample: Sample, tokenizer: Tokenizer, ctx: int) -> None:
    """GATE-EXPORT-001's check sample: the HF parity compares on the windows its source gives."""


@gate_require("GATE-EXPORT-002", _sample_outcome("GATE-EXPORT-002"))
def check_sample_onnx(sample: Sample, tokenizer: Tokenizer, ctx: int) -> None:
    """GATE-EXPORT-002's check sample: the ONNX parity compares on the windows its source gives."""
