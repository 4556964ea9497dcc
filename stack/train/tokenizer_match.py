"""GATE-DATA-007: the data a model is trained or tuned on was tokenized by the model's own tokenizer.

Every command that puts data in front of a trained model asks it here: a fine-tuning run
(`--init-from`), the DPO reference and the distillation teacher (their objectives), and ES.
"""

from __future__ import annotations

from contracts.gates import Outcome, gate_require, measure
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_identity import probe_sha256
from stack.data.tokenizer_record import tokenizer_from_state
from stack.train import checkpoint as ckpt


def _tokenizer_outcome(data_tokenizer: Tokenizer, checkpoint: ckpt.Checkpoint) -> Outcome:
    """GATE-DATA-007's measurement: the data's tokenizer against the one the checkpoint learned with,
    by what each does (its identity, and its ids of a fixed probe text), never by a file's bytes."""
    model_tokenizer = tokenizer_from_state(checkpoint.state["tokenizer"])
    measured = {
        "data_tokenizer": data_tokenizer.name,
        "data_tokenizer_identity": data_tokenizer.identity,
        "data_probe_sha256": probe_sha256(data_tokenizer),
        "data_vocab_size": data_tokenizer.vocab_size,
        "model_tokenizer": model_tokenizer.name,
        "model_tokenizer_identity": model_tokenizer.identity,
        "model_probe_sha256": probe_sha256(model_tokenizer),
        "model_vocab": checkpoint.state["config"]["model"]["vocab"],
    }
    return measure(
        "GATE-DATA-007", measured, holds=f"the data was tokenized by {checkpoint.path}'s own tokenizer"
    )


@gate_require("GATE-DATA-007", _tokenizer_outcome)
def check_data_tokenizer(data_tokenizer: Tokenizer, checkpoint: ckpt.Checkpoint) -> None:
    """Refuse to fine-tune `checkpoint` on data another tokenizer made: its ids would mean other strings.

    Sizes are not enough (Llama 2 and Mistral both have 32000 ids), and neither are a file's
    bytes (the stack's BPE, its Hugging Face export and its re-import are one tokenizer in three
    files): the identity is what the tokenizer does (stack.data.tokenizer_identity).
    """
