"""The stack's tokenizers as Hugging Face tokenizer files, and back.

`tokenizer.json` is a `tokenizers` byte-level BPE that transformers' `AutoTokenizer` loads as a
fast tokenizer; it gives the same ids as the stack for every text, with one documented
difference: the end-of-text id (the last one) is an added special token `<|endoftext|>`, so in
transformers that literal string encodes to EOT, where the stack's own tokenizers never
produce EOT from text. The byte tokenizer becomes a BPE with no merges whose 256 symbols are
GPT-2's byte-to-unicode table, so id b is byte b.

`gatestack_tokenizer.json` holds the stack's own record of the tokenizer (name, sha256, vocab,
BPE JSON): `stack import-hf` restores the tokenizer from it, identity-checked by sha256. A model
made elsewhere has no such record; it brings its own tokenizer.json and tokenizer_config.json,
which the import then uses as they are (`stack.data.pretrained.PretrainedTokenizer`) and an
export of such a model writes back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from contracts.errors import BadInput
from stack.data.pretrained import TOKENIZER_CONFIG, TOKENIZER_JSON, PretrainedTokenizer
from stack.data.tokenizer import BpeTokenizer, ByteTokenizer, Tokenizer
from stack.train.trained import tokenizer_from_state, tokenizer_state

if TYPE_CHECKING:
    import tokenizers

EOT_TOKEN = "<|endoftext|>"
STATE_FILE = "gatestack_tokenizer.json"


def byte_symbols() -> list[str]:
    """GPT-2's byte → printable-unicode table, the alphabet of every byte-level BPE (index = byte)."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    shifted = iter(range(256, 512))  # bytes without a printable self get the next free code point
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


def hf_backend(tokenizer: Tokenizer) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like `tokenizer`, with EOT as special token at the last id."""
    from tokenizers import AddedToken, decoders, models, pre_tokenizers
    from tokenizers import Tokenizer as Backend

    if isinstance(tokenizer, ByteTokenizer):
        vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}
        backend = Backend(models.BPE(vocab=vocab, merges=[]))
        backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
        backend.decoder = decoders.ByteLevel()
    elif isinstance(tokenizer, BpeTokenizer):
        backend = Backend.from_str(tokenizer.to_json())
    else:
        raise BadInput(
            f"no Hugging Face form for the {tokenizer.name!r} tokenizer; the stack's are byte and bpe"
        )
    backend.add_special_tokens([AddedToken(EOT_TOKEN, special=True)])
    if backend.token_to_id(EOT_TOKEN) != tokenizer.eot_id:
        raise BadInput(
            f"cannot place {EOT_TOKEN} at id {tokenizer.eot_id} of the {tokenizer.name} tokenizer "
            f"(it landed at {backend.token_to_id(EOT_TOKEN)}); the tokenizer already holds added tokens"
        )
    return backend


def write_tokenizer_files(out: Path, tokenizer: Tokenizer, max_length: int) -> None:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and the stack's own record.

    A pretrained tokenizer (an imported model's, or `--tokenizer hf:DIR`'s) goes out as it came
    in, its tokenizer.json byte for byte and its own end-of-sequence token, so the sha256 that
    names it is unchanged; the stack's own tokenizers are converted by `hf_backend`.
    """
    if isinstance(tokenizer, PretrainedTokenizer):
        (out / TOKENIZER_JSON).write_text(tokenizer.to_json(), encoding="utf-8")
        eos = tokenizer.eot_token
    else:
        hf_backend(tokenizer).save(str(out / TOKENIZER_JSON))
        eos = EOT_TOKEN
    config = {
        "tokenizer_class": "PreTrainedTokenizerFast",
        "eos_token": eos,
        "model_max_length": max_length,
        "clean_up_tokenization_spaces": False,
    }
    (out / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
    (out / "special_tokens_map.json").write_text(json.dumps({"eos_token": eos}, indent=1) + "\n")
    (out / STATE_FILE).write_text(json.dumps(tokenizer_state(tokenizer), indent=1) + "\n")


def read_tokenizer(hf_dir: Path) -> Tokenizer:
    """The tokenizer of an HF directory: the stack's own record where `stack export` left one (it
    restores the stack tokenizer exactly), else the model's own tokenizer.json, used as it is."""
    hf_dir = Path(hf_dir)
    path = hf_dir / STATE_FILE
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            return tokenizer_from_state(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path} is not a tokenizer record written by `stack export` ({exc})") from None
    if (hf_dir / TOKENIZER_JSON).is_file():
        return PretrainedTokenizer.from_dir(hf_dir)
    raise BadInput(
        f"{hf_dir} has no tokenizer: neither {TOKENIZER_JSON} (with {TOKENIZER_CONFIG}) nor {STATE_FILE}; "
        "copy the model's tokenizer files beside its weights"
    )
