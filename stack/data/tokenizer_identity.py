"""Every tokenizer in one common language, and an identity that says what it does, not how it is saved.

The common language is a Hugging Face `tokenizers` tokenizer (`hf_form`), the form a
`tokenizer.json` holds, which each tokenizer writes itself (its `hf_json`, with the builders
here): the stack's byte tokenizer becomes a BPE with no merges over GPT-2's byte alphabet, the
stack's BPE gains its end-of-text id as the special token `<|endoftext|>`, and a pretrained
tokenizer is itself. That form is what travels with a model as `tokenizer.json`
(checkpoints, surgery and merge outputs, exports).

A tokenizer's **identity** (`identity`) is the sha256 of that form made canonical: the
normalizer, the pre-tokenizer, the model (its vocabulary as (token, id) in id order, its merges
as pairs in rank order, its options), the added and special tokens with their ids and flags,
the post-processor, the decoder, and the id that ends a document. What a serialization adds on
top (the library's version field, truncation and padding settings, key order, whitespace, merges
written as "a b" or as ["a", "b"], the stack's own record format) is left out. So the stack's
BPE, its Hugging Face export and that export imported again have one identity, and two
tokenizers that differ in one merge, one special token's id or their normalizer do not.

The encodings of `PROBE_TEXT` are a second witness (`probe_sha256`): GATE-DATA-007 compares
both, so even a difference the canonical form could miss shows in the ids.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any, Protocol

from contracts.errors import BadInput
from contracts.evidence import canonical_sha256

if TYPE_CHECKING:
    import tokenizers

EOT_TOKEN = "<|endoftext|>"
# What a tokenizer.json says about behaviour. Left out: "version", "truncation", "padding".
BEHAVIOUR_KEYS = ("normalizer", "pre_tokenizer", "model", "added_tokens", "post_processor", "decoder")
# A fixed text every tokenizer encodes for GATE-DATA-007's second witness: prose, code, digits,
# whitespace runs, accents, CJK, an emoji, a byte-order mark, and strings that look like special
# tokens (which the stack always encodes as text).
PROBE_TEXT = (
    "The gate holds when the run does what the spec says.\n"
    "def main():\n\treturn sum(range(10))  # 45\n"
    "  Héllo wörld — naïve café, ﬁ, Ω≈ç√.  中文 日本語 한국어 🙂 \ufeff\r\n"
    "<|endoftext|> </s> <s> [INST] <|im_start|>user\n"
    "3.14159 1,000,000 0x1F ___ ... !!!?"
)


def byte_symbols() -> list[str]:
    """GPT-2's byte → printable-unicode table, the alphabet of every byte-level BPE (index = byte)."""
    printable = {
        *range(ord("!"), ord("~") + 1),
        *range(ord("¡"), ord("¬") + 1),
        *range(ord("®"), ord("ÿ") + 1),
    }
    shifted = iter(range(256, 512))  # bytes without a printable self get the next free code point
    return [chr(b) if b in printable else chr(next(shifted)) for b in range(256)]


class Described(Protocol):
    """What the identity reads of a tokenizer (every class of stack.data.tokenizer is one)."""

    name: str

    @property
    def eot_id(self) -> int: ...

    def hf_json(self) -> str: ...

    def encode(self, text: str) -> list[int]: ...


def byte_level_form() -> tokenizers.Tokenizer:
    """The stack's byte tokenizer in the common language: a BPE with no merges over GPT-2's bytes."""
    from tokenizers import Tokenizer as Backend
    from tokenizers import decoders, models, pre_tokenizers

    vocab = {symbol: byte for byte, symbol in enumerate(byte_symbols())}
    backend = Backend(models.BPE(vocab=vocab, merges=[]))
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    backend.decoder = decoders.ByteLevel()
    return backend


def with_eot(backend: tokenizers.Tokenizer, eot_id: int, name: str) -> tokenizers.Tokenizer:
    """`backend` with the stack's end-of-text id as the special token EOT_TOKEN (module docstring)."""
    from tokenizers import AddedToken

    backend.add_special_tokens([AddedToken(EOT_TOKEN, special=True)])
    if backend.token_to_id(EOT_TOKEN) != eot_id:
        raise BadInput(
            f"cannot place {EOT_TOKEN} at id {eot_id} of the {name} tokenizer "
            f"(it landed at {backend.token_to_id(EOT_TOKEN)}); the tokenizer already holds added tokens"
        )
    return backend


def hf_form(tokenizer: Described) -> tokenizers.Tokenizer:
    """A `tokenizers.Tokenizer` that encodes like `tokenizer` (module docstring)."""
    from tokenizers import Tokenizer as Backend

    return Backend.from_str(tokenizer.hf_json())


def _canonical_model(model: dict[str, Any]) -> dict[str, Any]:
    """The model section with its vocabulary in id order and its merges as pairs."""
    out = dict(model)
    vocab = out.get("vocab")
    if isinstance(vocab, dict):  # BPE, WordPiece, WordLevel: token → id (Unigram's is a list already)
        out["vocab"] = sorted(([token, index] for token, index in vocab.items()), key=lambda p: (p[1], p[0]))
    merges = out.get("merges")
    if isinstance(merges, list):
        out["merges"] = [m.split(" ", 1) if isinstance(m, str) else list(m) for m in merges]
    return out


def canonical_form(tokenizer: Described) -> dict[str, Any]:
    """What `tokenizer` does, as JSON data with nothing of one serialization in it (module docstring).

    The tokenizer.json is read back by the library first, so that a file written by an older
    version (fields missing, merges as strings) is described as the library runs it.
    """
    from tokenizers import Tokenizer as Backend

    record = json.loads(Backend.from_str(tokenizer.hf_json()).to_str())
    form = {key: record.get(key) for key in BEHAVIOUR_KEYS}
    form["model"] = _canonical_model(form["model"] or {})
    form["added_tokens"] = sorted(form["added_tokens"] or [], key=lambda t: t["id"])
    form["eot_id"] = tokenizer.eot_id
    return form


def identity(tokenizer: Described) -> str:
    """The sha256 of `canonical_form`: equal for the same tokenizer in any file format."""
    return canonical_sha256(canonical_form(tokenizer))


def probe_sha256(tokenizer: Described) -> str:
    """The sha256 of `tokenizer`'s ids of PROBE_TEXT: GATE-DATA-007's second witness."""
    return canonical_sha256(tokenizer.encode(PROBE_TEXT))
