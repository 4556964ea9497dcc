"""A model whose vocabulary is padded past its tokenizer (an imported Qwen2, a student given its
teacher's padded vocabulary) can produce a padding row's id: every command that shows what a model
produced leaves such an id out of the text (Tokenizer.text_of), where `stack sample`, `stack lens`
and `stack trace --ablate --sample` ended in an internal error.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from tests.support.trace_support import save_run, tiny_model

PADDED = 300  # the byte tokenizer has 257 ids


@pytest.fixture(scope="module")
def padded(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A model of 300 ids whose final norm is zero: every logit is 0, so draws are uniform over all
    300, padding rows included (43 of them)."""
    model = tiny_model(vocab=PADDED, tie_embeddings=False)
    with torch.no_grad():
        model.final_norm.weight.zero_()
    return save_run(tmp_path_factory.mktemp("padded") / "run", model)


def test_text_of_leaves_a_padding_rows_id_out() -> None:
    tokenizer = ByteTokenizer()
    assert tokenizer.text_of([ord("a"), PADDED - 1, ord("b"), tokenizer.eot_id]) == "ab"
    with pytest.raises(ValueError, match="byte tokenizer ids are"):
        tokenizer.decode([PADDED - 1])  # decoding ids is strict: a tokenizer's own ids only


@pytest.mark.parametrize(
    "argv",
    [
        ["sample", "{run}", "--prompt", "gate", "--tokens", "60", "--seed", "3"],
        ["lens", "{run}", "--prompt", "gate model"],
        ["trace", "{run}", "--prompt", "gate model", "--ablate", "layers.0.attn_out", "--sample", "8"],
    ],
    ids=["sample", "lens", "trace-ablate-sample"],
)
def test_a_command_showing_what_a_padded_model_produced_runs(padded: Path, argv: list[str]) -> None:
    assert main([arg.format(run=padded) for arg in argv]) == 0
