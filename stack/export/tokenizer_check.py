"""GATE-EXPORT-001's check `tokenizer`: transformers reads a model's tokenizer from a directory as
the model's own, its special tokens, chat template and the ids it gives.

A reading (`hf_reading`) is what a user's transformers gets from a directory: AutoTokenizer's
named special tokens (bos, eos, unk, pad) and their ids, every added token, the chat template,
the ids of `encode(READING_TEXT)` (with whatever special tokens the tokenizer adds to a text: a
bos, where it adds one) and the ids of `apply_chat_template(CONVERSATION)` with the generation
prompt, where there is a template.

What a reading is held to (`expected_reading`) is the same reading of a reference directory that
holds the model's own tokenizer and nothing the exporter wrote: its tokenizer.json, the files that
named its special tokens as they came (stack.data.hf_specials, kept since the import of a model
made elsewhere) or, for the stack's own tokenizers, a config naming their end of text alone, and
the chat template its checkpoint carries. `stack import-hf` holds the source directory's reading
to it (what it kept is what the model ships), `stack export --format hf` the exported directory's
(what it wrote is what it kept): a writer that drops the bos, the pad or an added token, or the
chat template, shows here, where the logits cannot show it.
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from stack.artifacts import TOKENIZER_JSON
from stack.data.hf_specials import GENERATION_CONFIG, MODEL_CONFIG
from stack.data.tokenizer import TOKENIZER_CONFIG, PretrainedTokenizer, Tokenizer
from stack.data.tokenizer_identity import EOT_TOKEN
from stack.export import runtimes
from stack.export.hf_tokenizer import CHAT_TEMPLATE_FILE

# A text every reading encodes: prose, code, whitespace, accents, CJK and an emoji; no string that
# looks like a special token (transformers would read one as the token, the stack as text).
READING_TEXT = (
    "The gate holds when the run does what the spec says.\ndef main():\n\treturn 45  # naïve 中文 🙂\n"
)
# A fixed conversation every reading renders: a system turn, a user's, the assistant's and a user's.
CONVERSATION = (
    {"role": "system", "content": "You answer in one line."},
    {"role": "user", "content": "What does the gate hold?"},
    {"role": "assistant", "content": "What the run did."},
    {"role": "user", "content": "And the spec?"},
)
NAMED = ("bos_token", "eos_token", "unk_token", "pad_token")


def _sha(text: str | None) -> str | None:
    return None if text is None else hashlib.sha256(text.encode("utf-8")).hexdigest()


def _ids(found: Any) -> list[int]:
    """Token ids from what apply_chat_template returns (a list, or a mapping with input_ids)."""
    ids = found["input_ids"] if isinstance(found, Mapping) else found
    return [int(i) for i in ids]


UNREADABLE = "unreadable"


def hf_reading(directory: Path) -> dict[str, Any]:
    """What transformers' AutoTokenizer reads from `directory` (the module docstring); a directory
    it cannot read reads as {UNREADABLE: why}."""
    try:
        with runtimes.quiet_transformers():  # a text past a small model_max_length is only read, never run
            return _reading(directory)
    except (OSError, ValueError, TypeError, KeyError, AttributeError) as exc:
        return {UNREADABLE: f"{type(exc).__name__}: {' '.join(str(exc).split())[:200]}"}


def _reading(directory: Path) -> dict[str, Any]:
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(str(directory), local_files_only=True)
    reading: dict[str, Any] = {}
    for name in NAMED:
        token = getattr(tokenizer, name, None)
        reading[name] = None if token is None else str(token)
        reading[f"{name}_id"] = getattr(tokenizer, f"{name}_id", None)
    decoder = tokenizer.added_tokens_decoder
    reading["added_tokens"] = {str(i): [str(t.content), bool(t.special)] for i, t in sorted(decoder.items())}
    template = tokenizer.chat_template
    if isinstance(template, Mapping):
        template = template.get("default")
    reading["chat_template_sha256"] = _sha(template)
    reading["encode"] = [int(i) for i in tokenizer.encode(READING_TEXT)]
    chat = None
    if template is not None:
        found = tokenizer.apply_chat_template(list(CONVERSATION), tokenize=True, add_generation_prompt=True)
        chat = _ids(found)
    reading["chat"] = chat
    return reading


def _stated_config(tokenizer: Tokenizer) -> dict[str, str]:
    """The tokenizer_config.json the stack states for a tokenizer with no files of its own: a fast
    tokenizer whose only named token is the end of text (`<|endoftext|>` for the stack's own)."""
    eos = tokenizer.eot_token if isinstance(tokenizer, PretrainedTokenizer) else EOT_TOKEN
    return {"tokenizer_class": "PreTrainedTokenizerFast", "eos_token": eos}


def expected_reading(tokenizer: Tokenizer, chat_template: str | None, model_type: str) -> dict[str, Any]:
    """What a directory holding `tokenizer` with `chat_template` must read as: the reading of a
    reference directory holding only its tokenizer.json, the files that name its special tokens as
    they came (for a model made elsewhere) or the end of text it ends documents with (the stack's
    own tokenizers), `chat_template` and a config.json naming `model_type`, the family from which
    transformers picks a tokenizer class."""
    settings = tokenizer.settings
    files = (
        {name: text for name, text in settings.files.items() if name != GENERATION_CONFIG}
        if settings is not None
        else {TOKENIZER_CONFIG: json.dumps(_stated_config(tokenizer))}
    )
    with tempfile.TemporaryDirectory(prefix="gatestack-tokenizer-") as scratch:
        reference = Path(scratch)
        (reference / TOKENIZER_JSON).write_text(tokenizer.hf_json(), encoding="utf-8")
        for name, text in files.items():
            (reference / name).write_text(text, encoding="utf-8")
        if chat_template is not None:  # the file transformers prefers to any config's template
            (reference / CHAT_TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
        (reference / MODEL_CONFIG).write_text(json.dumps({"model_type": model_type}), encoding="utf-8")
        return hf_reading(reference)


def read_back(expected: Mapping[str, Any], found: Mapping[str, Any]) -> dict[str, Any]:
    """GATE-EXPORT-001's check `tokenizer`: the keys of the readings, and those whose values differ
    (each with the model's and the directory's)."""
    differing = {
        key: {"model": expected.get(key), "exported": found.get(key)}
        for key in sorted(set(expected) | set(found))
        if expected.get(key) != found.get(key)
    }
    return {"tokenizer_keys": len(expected), "tokenizer_differing": differing}
