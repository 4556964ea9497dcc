"""Pretrained tokenizers: a Hugging Face `tokenizer.json` from a local directory, used as it is.

`stack prepare --tokenizer hf:DIR` and `stack import-hf DIR` read DIR/tokenizer.json (any model
the `tokenizers` library loads: byte-level BPE as in Llama 3 and Qwen2, SentencePiece-style BPE
with byte fallback as in Llama 2) and DIR/tokenizer_config.json for the end-of-sequence token.
Nothing is downloaded.

Three differences from the stack's own tokenizers, each deliberate:
- The separator prepare writes after every document is the model's own end-of-sequence token
  (`eos_token` in tokenizer_config.json), wherever its id is, so the data reads as the model
  was trained to read it.
- Special tokens in the *text* are encoded as text (`encode_special_tokens`): a document that
  happens to contain "</s>" or "<|endoftext|>" cannot smuggle a separator into the shards.
- Such a tokenizer may normalise text (Llama 2's prepends "▁", some lower-case): it is not
  guaranteed lossless. GATE-EVAL-003's round trip is what finds out, and bits per byte are always
  counted over the original bytes.

Identity: the sha256 of the tokenizer.json bytes, as copied into DATA_DIR and into checkpoints.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from contracts.errors import BadInput
from stack.data.tokenizer import Tokenizer, bpe_record_problem

if TYPE_CHECKING:
    import tokenizers

TOKENIZER_JSON = "tokenizer.json"
TOKENIZER_CONFIG = "tokenizer_config.json"
PREFIX = "hf:"


class PretrainedTokenizer(Tokenizer):
    """A Hugging Face tokenizer.json and the token that ends a document."""

    name = "hf"

    def __init__(self, json_text: str, eot_token: str, where: str) -> None:
        self._json = json_text
        self.eot_token = eot_token
        self._backend = _backend(json_text, where)
        eot = self._backend.token_to_id(eot_token)
        if eot is None:
            raise BadInput(f"{where}: its end-of-sequence token {eot_token!r} is not in the vocabulary")
        self._eot = eot

    @classmethod
    def from_dir(cls, directory: Path) -> PretrainedTokenizer:
        """The tokenizer of a local model directory (tokenizer.json + tokenizer_config.json)."""
        directory = Path(directory)
        file = directory / TOKENIZER_JSON
        if not file.is_file():
            raise BadInput(
                f"{directory} has no {TOKENIZER_JSON}; give the directory of a Hugging Face model or "
                "tokenizer (it is read locally, nothing is downloaded)"
            )
        return cls(_read_text(file), eos_token(directory), str(file))

    @property
    def vocab_size(self) -> int:
        return self._backend.get_vocab_size(with_added_tokens=True)

    @property
    def eot_id(self) -> int:
        return self._eot

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self._json.encode("utf-8")).hexdigest()

    def to_json(self) -> str:
        """The tokenizer.json text, byte for byte as read: its sha256 is this tokenizer's identity."""
        return self._json

    def encode(self, text: str) -> list[int]:
        return self._backend.encode(text, add_special_tokens=False).ids

    def decode(self, ids: Sequence[int]) -> str:
        return self._backend.decode([int(i) for i in ids if i != self._eot], skip_special_tokens=False)

    def encode_documents(self, documents: Sequence[bytes]) -> list[np.ndarray]:
        texts = [doc.decode("utf-8") for doc in documents]
        encodings = self._backend.encode_batch(texts, add_special_tokens=False)
        return [np.asarray(enc.ids, dtype=np.uint32) for enc in encodings]


def directory_of(spec: str) -> Path | None:
    """DIR of a `--tokenizer hf:DIR` value, or None for the stack's own tokenizer names."""
    if not spec.startswith(PREFIX):
        return None
    directory = spec[len(PREFIX) :]
    if not directory:
        raise BadInput("--tokenizer hf: needs a directory, e.g. --tokenizer hf:models/SmolLM2-135M")
    return Path(directory)


def eos_token(directory: Path) -> str:
    """The end-of-sequence token tokenizer_config.json names (a string, or {"content": ...})."""
    file = Path(directory) / TOKENIZER_CONFIG
    if not file.is_file():
        raise BadInput(
            f"{directory} has no {TOKENIZER_CONFIG}; it names the end-of-sequence token that separates "
            "documents: copy it from the model's repository"
        )
    try:
        config: Any = json.loads(_read_text(file))
    except json.JSONDecodeError as exc:
        raise BadInput(f"{file} is not valid JSON ({exc})") from None
    token = config.get("eos_token") if isinstance(config, dict) else None
    if isinstance(token, dict):
        token = token.get("content")
    if not isinstance(token, str) or not token:
        raise BadInput(f"{file} names no eos_token; the documents need a separator the model knows")
    return token


def _read_text(file: Path) -> str:
    try:
        return file.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"cannot read {file} ({exc})") from None


def _backend(json_text: str, where: str) -> tokenizers.Tokenizer:
    """The library's tokenizer, special tokens in text encoded as text; a bad file is one line."""
    from tokenizers import Tokenizer as Backend

    try:
        record = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where} is not valid JSON ({exc})") from None
    model = record.get("model") if isinstance(record, dict) else None
    if isinstance(model, dict) and model.get("type") == "BPE":
        problem = bpe_record_problem(json_text)  # a hole in the ids panics the library
        if problem is not None:
            raise BadInput(f"{where} is not a usable tokenizer: {problem}")
    try:
        backend = Backend.from_str(json_text)
    except Exception as exc:  # the library raises nothing narrower
        detail = " ".join(str(exc).split())[:200]
        raise BadInput(f"{where} is not a tokenizer the tokenizers library can load ({detail})") from None
    backend.encode_special_tokens = True
    return backend
