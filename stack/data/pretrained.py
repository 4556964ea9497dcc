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

Two digests: `sha256`, of the tokenizer.json bytes as copied into DATA_DIR and into checkpoints
(an integrity check of that file), and `identity`, of what the tokenizer does
(stack.data.tokenizer_identity), which is what GATE-DATA-007 compares.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from contracts.errors import BadInput
from stack.artifacts import TOKENIZER_JSON
from stack.data.tokenizer import (
    TOKENIZER_NAMES,
    ByteTokenizer,
    LibraryTokenizer,
    Tokenizer,
    bpe_record_problem,
    library_backend,
)

if TYPE_CHECKING:
    import tokenizers

TOKENIZER_CONFIG = "tokenizer_config.json"
PREFIX = "hf:"


class PretrainedTokenizer(LibraryTokenizer):
    """A Hugging Face tokenizer.json and the token that ends a document."""

    name = "hf"

    def __init__(self, json_text: str, eot_token: str, where: str) -> None:
        super().__init__(_backend(json_text, where), json_text)
        self.eot_token = eot_token
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
    def special_tokens(self) -> dict[str, int]:
        """The added tokens marked special (chat markers, bos, eos), and the end-of-sequence token."""
        added = self._backend.get_added_tokens_decoder()
        specials = {token.content: index for index, token in added.items() if token.special}
        return {**specials, self.eot_token: self._eot}


def directory_of(spec: str) -> Path | None:
    """DIR of a `--tokenizer hf:DIR` value, or None for the stack's own tokenizer names."""
    if not spec.startswith(PREFIX):
        return None
    directory = spec[len(PREFIX) :]
    if not directory:
        raise BadInput("--tokenizer hf: needs a directory, e.g. --tokenizer hf:models/SmolLM2-135M")
    return Path(directory)


def given_tokenizer(spec: str | Tokenizer, vocab_size: int | None = None) -> Tokenizer | None:
    """The tokenizer a `--tokenizer` value hands over ready-made, or None for `byte` and `bpe`.

    `hf:DIR` reads a Hugging Face tokenizer directory; a Tokenizer is one the command line already
    took from a model (`--tokenizer RUN_DIR`, stack.export.hf_tokenizer.model_tokenizer), and is
    used as it is. Anything else is refused, naming what would do, and so is a `--vocab-size`
    (`vocab_size`) for a tokenizer whose vocabulary is already made.
    """
    if isinstance(spec, Tokenizer):
        given: Tokenizer = spec
    elif (directory := directory_of(spec)) is not None:
        given = PretrainedTokenizer.from_dir(directory)
    elif spec in TOKENIZER_NAMES:
        return None
    else:
        raise BadInput(
            f"unknown --tokenizer {spec!r}; use {', '.join(TOKENIZER_NAMES)}, hf:DIR, or the directory of "
            "a run, checkpoint, export or DATA_DIR whose tokenizer to use"
        )
    if vocab_size is not None:
        raise BadInput(f"--vocab-size applies to --tokenizer bpe; {given.name} has {given.vocab_size} ids")
    return given


def writes_tokenizer_file(spec: str | Tokenizer) -> bool:
    """Whether a prepare with this `--tokenizer` keeps a tokenizer.json in DATA_DIR (all but byte do)."""
    return not (spec == "byte" or isinstance(spec, ByteTokenizer))


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
    try:
        record = json.loads(json_text)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where} is not valid JSON ({exc})") from None
    model = record.get("model") if isinstance(record, dict) else None
    if isinstance(model, dict) and model.get("type") == "BPE":
        problem = bpe_record_problem(json_text)  # a hole in the ids panics the library
        if problem is not None:
            raise BadInput(f"{where} is not a usable tokenizer: {problem}")
    backend = library_backend(json_text, where, "")
    backend.encode_special_tokens = True
    return backend
