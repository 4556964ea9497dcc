"""A Hugging Face model's special tokens, read as transformers reads them, and the files that say so.

Which token ends a document, starts one or pads a batch is not in tokenizer.json: it is in the
files beside it, and transformers resolves it in a fixed order (`PreTrainedTokenizerBase.
_from_pretrained`, transformers 4.34 and later, 5 included):

1. tokenizer_config.json's `bos_token`, `eos_token`, ... (a string, or an AddedToken object whose
   `content` is the token);
2. special_tokens_map.json's, which replace those, but only in the older layout that
   special_tokens_map.json belongs to: a tokenizer_config.json without `added_tokens_decoder`
   (transformers reads the map only then).

`special_tokens` follows that order exactly. For the end-of-sequence token, where neither file
names one, `eos_token` goes on where transformers stops: generation_config.json's
`eos_token_id`, then config.json's (the first of a list), by that id's token in the vocabulary.
So a model whose tokenizer files name no eos, but whose config does, is read as its generation
is; a refusal names the file and the key that would fix it.

`HfSettings` keeps those files as they came (their text, byte for byte) with config.json's
special ids, so that the model's bos, eos, pad, unk, added tokens and add-bos behaviour travel
with its tokenizer through every run and come out of `stack export` unchanged.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from contracts.errors import BadInput

TOKENIZER_CONFIG = "tokenizer_config.json"
SPECIAL_TOKENS_MAP = "special_tokens_map.json"
GENERATION_CONFIG = "generation_config.json"
MODEL_CONFIG = "config.json"
# transformers' SPECIAL_TOKENS_ATTRIBUTES: the named special tokens a tokenizer has.
SPECIAL_NAMES = ("bos_token", "eos_token", "unk_token", "sep_token", "pad_token", "cls_token", "mask_token")
# The files beside tokenizer.json that say what its tokens are for (added_tokens.json: a slow
# tokenizer's added tokens), kept as they came; generation_config.json holds the stop ids.
KEPT_FILES = (TOKENIZER_CONFIG, SPECIAL_TOKENS_MAP, "added_tokens.json", GENERATION_CONFIG)
# config.json's special ids, which generation reads to start, stop and pad.
MODEL_ID_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")
EOS = "eos_token"


def _json(file: Path) -> dict[str, Any] | None:
    """A JSON object file, None when absent; one that is not a JSON object is refused by name."""
    if not file.is_file():
        return None
    try:
        found = json.loads(file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BadInput(f"cannot read {file} ({' '.join(str(exc).split())[:160]}); copy it again") from None
    if not isinstance(found, dict):
        raise BadInput(f"{file} is not a JSON object; copy it again from the model's repository")
    return found


def token_text(value: Any) -> str | None:
    """A special token as a config writes it: a string, or an AddedToken object's `content`."""
    if isinstance(value, dict):
        value = value.get("content")
    return value if isinstance(value, str) and value else None


def resolved(config: Mapping[str, Any], mapped: Mapping[str, Any] | None) -> dict[str, str]:
    """The named special tokens of a tokenizer_config.json (`config`) and special_tokens_map.json
    (`mapped`, None when absent), resolved as transformers resolves them (the module docstring):
    the config's, replaced by the map's where the config has no `added_tokens_decoder`."""
    found = {name: text for name in SPECIAL_NAMES if (text := token_text(config.get(name))) is not None}
    if "added_tokens_decoder" not in config and mapped is not None:
        found |= {name: text for name in SPECIAL_NAMES if (text := token_text(mapped.get(name))) is not None}
    return found


def special_tokens(directory: Path) -> dict[str, str]:
    """The named special tokens of a tokenizer directory (`resolved`)."""
    directory = Path(directory)
    return resolved(_json(directory / TOKENIZER_CONFIG) or {}, _json(directory / SPECIAL_TOKENS_MAP))


def _first_id(value: Any) -> int | None:
    """An id as a config writes it: an int, or a list whose first is the one a document ends with."""
    if isinstance(value, list):
        value = value[0] if value else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def eos_token(directory: Path, id_to_token: Callable[[int], str | None]) -> str:
    """The token that ends a document: the tokenizer files' eos_token, else the token of
    generation_config.json's, then config.json's, eos_token_id (`id_to_token` looks it up).

    None of them naming one is refused, saying which key in which file would fix it.
    """
    directory = Path(directory)
    named = special_tokens(directory).get(EOS)
    if named is not None:
        return named
    for name in (GENERATION_CONFIG, MODEL_CONFIG):
        index = _first_id((_json(directory / name) or {}).get("eos_token_id"))
        token = None if index is None else id_to_token(index)
        if token is not None:
            return token
    config = directory / TOKENIZER_CONFIG
    where = f'add "eos_token": "<the model\'s end-of-text token>" to {config}'
    if not config.is_file():
        where = (
            f"copy {TOKENIZER_CONFIG} from the model's repository (it names eos_token), or create {config} "
        )
        where += 'holding {"eos_token": "<the model\'s end-of-text token>"}'
    raise BadInput(
        f"{directory} names no end-of-sequence token (no eos_token in {TOKENIZER_CONFIG} or "
        f"{SPECIAL_TOKENS_MAP}, no eos_token_id in {GENERATION_CONFIG} or {MODEL_CONFIG}), and the "
        f"documents need a separator the model knows: {where}"
    )


@dataclass(frozen=True)
class HfSettings:
    """What a Hugging Face model says of its tokens beyond tokenizer.json: the text of its
    KEPT_FILES as they came, and config.json's special ids (MODEL_ID_KEYS) as written."""

    files: dict[str, str] = field(default_factory=dict)
    model_ids: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def read(cls, directory: Path) -> HfSettings:
        """The settings of a model (or tokenizer) directory: whichever of the files it has."""
        directory = Path(directory)
        files = {}
        for name in KEPT_FILES:
            if _json(directory / name) is not None:  # a file that is no JSON object is refused here
                files[name] = (directory / name).read_text(encoding="utf-8")
        config = _json(directory / MODEL_CONFIG) or {}
        return cls(files, {key: config[key] for key in MODEL_ID_KEYS if key in config})

    def as_dict(self) -> dict[str, Any]:
        """JSON-safe, for a checkpoint's tokenizer record and a manifest's."""
        return {"files": dict(self.files), "model_ids": dict(self.model_ids)}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> HfSettings | None:
        """The settings a record keeps, or None where it keeps none (a record made before them)."""
        if not isinstance(data, Mapping):
            return None
        files, ids = data.get("files"), data.get("model_ids")
        if not isinstance(files, Mapping) or not all(isinstance(v, str) for v in files.values()):
            raise BadInput("a tokenizer record's hf_settings.files must map file names to their text")
        return cls(dict(files), dict(ids) if isinstance(ids, Mapping) else {})

    def config(self, name: str) -> dict[str, Any] | None:
        """One kept file as a JSON object, or None."""
        text = self.files.get(name)
        return None if text is None else json.loads(text)

    def special_tokens(self) -> dict[str, str]:
        """The named special tokens the kept files give, as transformers resolves them."""
        return resolved(self.config(TOKENIZER_CONFIG) or {}, self.config(SPECIAL_TOKENS_MAP))
