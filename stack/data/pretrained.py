"""The `--tokenizer` a prepare is given: the stack's own (`byte`, `bpe`), or one ready-made.

`hf:DIR` is a Hugging Face tokenizer from a local directory (DIR/tokenizer.json and
DIR/tokenizer_config.json, nothing downloaded), used as it is (stack.data.tokenizer's
`PretrainedTokenizer` says how it differs from the stack's own); a Tokenizer object is one the
command line took from a model. Either way its vocabulary is made already, so `--vocab-size`
does not apply, and a prepare keeps its tokenizer.json in DATA_DIR.
"""

from __future__ import annotations

from pathlib import Path

from contracts.errors import BadInput
from stack.data.tokenizer import TOKENIZER_NAMES, ByteTokenizer, PretrainedTokenizer, Tokenizer

PREFIX = "hf:"


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
