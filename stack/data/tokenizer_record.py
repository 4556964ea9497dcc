"""A tokenizer as a checkpoint and a DATA_DIR keep it: a record, and a tokenizer.json beside it.

The record (`tokenizer_state`) holds the file the tokenizer is kept in (the stack's BPE record,
or a pretrained tokenizer.json as it came), its sha256, its vocabulary size and its identity
(stack.data.tokenizer_identity); `tokenizer_from_state` rebuilds the tokenizer from it. The
Hugging Face `tokenizer.json` (`write_tokenizer_file`) is the same tokenizer in the common
language, so that whoever holds a checkpoint, a surgery's or a merge's output can read its
tokenizer with any Hugging Face tool, and `stack prepare --tokenizer RUN_DIR` can use it.

A DATA_DIR keeps the tokenizer's own file (`data_tokenizer_entry`), named in its manifest with
its sha256 and its identity.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from stack.data.hf_specials import HfSettings
from stack.data.manifest import TokenizerEntry
from stack.data.shards import naming
from stack.data.tokenizer import TOKENIZER_FILE, BpeTokenizer, ByteTokenizer, PretrainedTokenizer, Tokenizer

RESTORE = "restore the checkpoint from a good copy"
# The record's key for a pretrained tokenizer's own special-token files (stack.data.hf_specials).
HF_SETTINGS = "hf_settings"


def tokenizer_state(tokenizer: Tokenizer) -> dict[str, Any]:
    """The tokenizer as JSON-safe data for state.json (an hf one with the token ending documents)."""
    text = tokenizer.to_json() if isinstance(tokenizer, BpeTokenizer | PretrainedTokenizer) else None
    state: dict[str, Any] = {
        "name": tokenizer.name,
        "sha256": tokenizer.sha256,
        "identity": tokenizer.identity,
        "vocab_size": tokenizer.vocab_size,
        "json": text,
    }
    if isinstance(tokenizer, PretrainedTokenizer):
        state["eot_token"] = tokenizer.eot_token
    if tokenizer.settings is not None:
        state[HF_SETTINGS] = tokenizer.settings.as_dict()
    return state


def tokenizer_summary(tokenizer: Tokenizer) -> dict[str, Any]:
    """The tokenizer's record without the files it is kept in (its sha256 stays): what an import's
    or an export's own record says of it."""
    return {k: v for k, v in tokenizer_state(tokenizer).items() if k not in ("json", HF_SETTINGS)}


def tokenizer_from_state(state: dict[str, Any]) -> Tokenizer:
    """Rebuild the tokenizer saved by `tokenizer_state`, refusing one whose file changed.

    The recorded identity is not trusted: whoever compares tokenizers computes it again from
    the tokenizer rebuilt here.
    """
    where = f"the checkpoint's {state['name']} tokenizer record"
    tokenizer: Tokenizer
    if state["name"] == "byte":
        tokenizer = ByteTokenizer()
    elif state["name"] == "hf":
        if not isinstance(state.get("eot_token"), str):
            raise BadInput(f"{where} names no eot_token; {RESTORE}")
        settings = HfSettings.from_dict(state.get(HF_SETTINGS))
        tokenizer = PretrainedTokenizer(str(state["json"]), state["eot_token"], where, settings)
    elif state["name"] == "bpe":
        tokenizer = BpeTokenizer.from_json(str(state["json"]), where, RESTORE)
    else:
        raise BadInput(f"{where} names a tokenizer kind this stack does not know (byte, bpe, hf); {RESTORE}")
    if tokenizer.sha256 != state["sha256"]:
        raise BadInput(f"the checkpoint's {state['name']} tokenizer does not match its recorded sha256")
    return tokenizer


def write_tokenizer_file(directory: Path, state: dict[str, Any]) -> Path:
    """directory/tokenizer.json: the tokenizer of a state.json record in Hugging Face form."""
    path = Path(directory) / TOKENIZER_FILE
    path.write_text(tokenizer_from_state(state).hf_json(), encoding="utf-8")
    return path


def data_tokenizer_entry(
    staging: Path, tokenizer: Tokenizer, sample_sha256: str | None = None
) -> TokenizerEntry:
    """The manifest's tokenizer entry of a DATA_DIR being built in `staging`, its file written there
    (a bpe or hf tokenizer's own tokenizer.json; the byte tokenizer has none); `sample_sha256` the
    digest of the sample a bpe trained here read (contracts.bpe_sample.sample_digest)."""
    path = None
    if isinstance(tokenizer, BpeTokenizer | PretrainedTokenizer):
        path = TOKENIZER_FILE
        with naming(staging / TOKENIZER_FILE):
            (staging / TOKENIZER_FILE).write_text(tokenizer.to_json(), encoding="utf-8")
    return TokenizerEntry(
        name=tokenizer.name,  # type: ignore[arg-type]
        vocab_size=tokenizer.vocab_size,
        sha256=tokenizer.sha256,
        identity=tokenizer.identity,
        path=path,
        eot_token=tokenizer.eot_token if isinstance(tokenizer, PretrainedTokenizer) else None,
        hf_settings=None if tokenizer.settings is None else tokenizer.settings.as_dict(),
        sample_sha256=sample_sha256,
    )
