"""The stack's tokenizers as Hugging Face tokenizer files, and back.

`tokenizer.json` is a `tokenizers` byte-level BPE that transformers' `AutoTokenizer` loads as a
fast tokenizer; it gives the same ids as the stack for every text, with one documented
difference: the end-of-text id (the last one) is an added special token `<|endoftext|>`, so in
transformers that literal string encodes to EOT, where the stack's own tokenizers never
produce EOT from text. The byte tokenizer becomes a BPE with no merges whose 256 symbols are
GPT-2's byte-to-unicode table, so id b is byte b.

`gatestack_tokenizer.json` holds the stack's own record of the tokenizer (name, sha256, identity,
vocab, BPE JSON): `stack import-hf` restores the tokenizer from it, checked by sha256, and the
tokenizer.json beside it must have the same identity (stack.data.tokenizer_identity): the stack's
BPE, its export and its re-import are one tokenizer. A model
made elsewhere has no such record; it brings its own tokenizer.json and tokenizer_config.json,
which the import then uses as they are (`stack.data.pretrained.PretrainedTokenizer`) and an
export of such a model writes back unchanged.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from stack.artifacts import HF_CONFIG, TOKENIZER_JSON, require
from stack.data.chat_jinja import chat_template_of
from stack.data.hf_specials import GENERATION_CONFIG, MODEL_ID_KEYS, SPECIAL_TOKENS_MAP
from stack.data.tokenizer import (
    TOKENIZER_CONFIG,
    PretrainedTokenizer,
    Tokenizer,
    load_tokenizer,
    older_tokenizer_way,
)
from stack.data.tokenizer_identity import EOT_TOKEN
from stack.data.tokenizer_record import tokenizer_from_state, tokenizer_state

STATE_FILE = "gatestack_tokenizer.json"
CHAT_TEMPLATE = "chat_template"  # tokenizer_config.json's key
CHAT_TEMPLATE_FILE = "chat_template.jinja"


def write_tokenizer_files(
    out: Path, tokenizer: Tokenizer, max_length: int, chat_template: str | None = None
) -> None:
    """tokenizer.json, tokenizer_config.json, special_tokens_map.json and the stack's own record.

    A pretrained tokenizer (an imported model's, or `--tokenizer hf:DIR`'s) goes out as it came
    in: its tokenizer.json byte for byte, and the files that name its special tokens as they came
    (`settings`, stack.data.hf_specials: its bos, eos, pad and unk, its added tokens, whether it
    adds a bos), so transformers reads the export as it read the model. The stack's own tokenizers
    are converted (stack.data.tokenizer_identity.hf_form) with `<|endoftext|>` their end of text.
    Either way the identity is the tokenizer's own. A model with a chat template
    (stack.data.chat_jinja) gets it as tokenizer_config.json's `chat_template`, where
    `apply_chat_template` reads it; one without has none.
    """
    (out / TOKENIZER_JSON).write_text(tokenizer.hf_json(), encoding="utf-8")
    settings = tokenizer.settings
    if settings is not None:
        # generation_config.json is the model's, written beside config.json (`write_generation_config`)
        for name, text in settings.files.items():
            if name != GENERATION_CONFIG:
                (out / name).write_text(text, encoding="utf-8")
        if TOKENIZER_CONFIG in settings.files:
            config_text = _with_template(settings.files[TOKENIZER_CONFIG], chat_template)
            (out / TOKENIZER_CONFIG).write_text(config_text, encoding="utf-8")
        elif chat_template is not None:  # transformers 5's own place for it
            (out / CHAT_TEMPLATE_FILE).write_text(chat_template, encoding="utf-8")
    else:
        eos = tokenizer.eot_token if isinstance(tokenizer, PretrainedTokenizer) else EOT_TOKEN
        config = {
            "tokenizer_class": "PreTrainedTokenizerFast",
            "eos_token": eos,
            "model_max_length": max_length,
            "clean_up_tokenization_spaces": False,
            **({CHAT_TEMPLATE: chat_template} if chat_template is not None else {}),
        }
        (out / TOKENIZER_CONFIG).write_text(json.dumps(config, indent=1) + "\n")
        (out / SPECIAL_TOKENS_MAP).write_text(json.dumps({"eos_token": eos}, indent=1) + "\n")
    (out / STATE_FILE).write_text(json.dumps(tokenizer_state(tokenizer), indent=1) + "\n")


def _with_template(config_text: str, chat_template: str | None) -> str:
    """A model's tokenizer_config.json carrying `chat_template` (or none): the text as it came when
    it already does, else the same settings with the template put in (or taken out)."""
    config = json.loads(config_text)
    found = config.get(CHAT_TEMPLATE)
    named = {t.get("name"): t for t in found if isinstance(t, dict)} if isinstance(found, list) else {}
    current = named["default"].get("template") if "default" in named else found
    if current == chat_template or (chat_template is None and found is None):
        return config_text
    if chat_template is None:
        config.pop(CHAT_TEMPLATE)
    elif "default" in named:
        named["default"]["template"] = chat_template
    else:
        config[CHAT_TEMPLATE] = chat_template
    return json.dumps(config, indent=2, ensure_ascii=False) + "\n"


def write_generation_config(out: Path, tokenizer: Tokenizer) -> None:
    """generation_config.json as the model shipped it (its stop ids), where it shipped one."""
    settings = tokenizer.settings
    if settings is not None and GENERATION_CONFIG in settings.files:
        (out / GENERATION_CONFIG).write_text(settings.files[GENERATION_CONFIG], encoding="utf-8")


def model_ids(tokenizer: Tokenizer) -> dict[str, Any]:
    """config.json's special ids of an export: a model made elsewhere keeps its own, as its
    config.json wrote them (an import's bos_token_id, a list of eos ids); else bos and eos are the
    end of text, which the stack's documents end with and its samples start from."""
    settings = tokenizer.settings
    if settings is not None and settings.model_ids:
        return dict(settings.model_ids)
    return {"bos_token_id": tokenizer.eot_id, "eos_token_id": tokenizer.eot_id}


def expected_special_ids(tokenizer: Tokenizer) -> dict[str, Any]:
    """What transformers must read from an export's special ids (GATE-EXPORT-001, check special),
    by where `stack.export.runtimes.hf_special_ids` reads them: config.json's are `model_ids`; the
    generation config's are generation_config.json's where the model shipped one, else config.json's
    (transformers derives them so); the tokenizer's eos is the eos_token its files name (the end of
    text for the stack's own tokenizers)."""
    ids = model_ids(tokenizer)
    settings = tokenizer.settings
    generation = (settings.config(GENERATION_CONFIG) if settings is not None else None) or ids
    expected = {f"config.json {key}": ids[key] for key in MODEL_ID_KEYS if key in ids}
    expected |= {f"generation {key}": generation[key] for key in MODEL_ID_KEYS if key in generation}
    eos: int | None = tokenizer.eot_id
    if settings is not None:
        named = settings.special_tokens().get("eos_token")
        eos = None if named is None else tokenizer.special_tokens.get(named)
    return expected | {"tokenizer eos_token_id": eos}


def read_tokenizer(hf_dir: Path) -> Tokenizer:
    """The tokenizer of an HF directory: the stack's own record where `stack export` left one (it
    restores the stack tokenizer exactly), else the model's own tokenizer.json, used as it is.

    Where both are present they must be one tokenizer (one identity): a tokenizer.json replaced
    by hand beside a stale record is refused, not silently overruled by the record.
    """
    hf_dir = Path(hf_dir)
    path = hf_dir / STATE_FILE
    if path.is_file():
        try:
            state = json.loads(path.read_text(encoding="utf-8"))
            tokenizer = tokenizer_from_state(state)
        except (ValueError, KeyError, TypeError) as exc:
            raise BadInput(f"{path} is not a tokenizer record written by `stack export` ({exc})") from None
        if (hf_dir / TOKENIZER_JSON).is_file() and (hf_dir / TOKENIZER_CONFIG).is_file():
            beside = PretrainedTokenizer.from_dir(hf_dir)
            if beside.identity != tokenizer.identity:
                raise BadInput(
                    f"{hf_dir / TOKENIZER_JSON} (identity {beside.identity[:12]}) is not the tokenizer "
                    f"{STATE_FILE} records (identity {tokenizer.identity[:12]}): one was replaced; "
                    f"delete {STATE_FILE} to use the tokenizer.json, or restore the export"
                )
        return tokenizer
    if (hf_dir / TOKENIZER_JSON).is_file():
        return PretrainedTokenizer.from_dir(hf_dir)
    way = older_tokenizer_way(hf_dir) or "copy the model's tokenizer files beside its weights"
    raise BadInput(
        f"{hf_dir} has no tokenizer: neither {TOKENIZER_JSON} (with {TOKENIZER_CONFIG}) nor {STATE_FILE}; "
        f"{way}"
    )


def read_chat_template(hf_dir: Path) -> str | None:
    """The Jinja chat template of an HF directory: chat_template.jinja (transformers 5 writes it
    there), else tokenizer_config.json's `chat_template` (a string, or a list of named templates of
    which `default` is the one used); None when the model has none."""
    hf_dir = Path(hf_dir)
    if (hf_dir / CHAT_TEMPLATE_FILE).is_file():
        return (hf_dir / CHAT_TEMPLATE_FILE).read_text(encoding="utf-8")
    try:
        config = json.loads((hf_dir / TOKENIZER_CONFIG).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    found = config.get(CHAT_TEMPLATE) if isinstance(config, dict) else None
    if isinstance(found, list):
        named = {t.get("name"): t.get("template") for t in found if isinstance(t, dict)}
        found = named.get("default")
    return found if isinstance(found, str) and found else None


def model_tokenizer(path: Path) -> Tokenizer:
    """The tokenizer a model carries, whatever directory holds it (`--tokenizer RUN_DIR`).

    A run, a checkpoint, a surgery's, merge's or import's output: the tokenizer of its (newest
    valid) checkpoint, verified against the checkpoint's manifest (GATE-CKPT-002). A Hugging
    Face directory (an export, or a model made elsewhere): `read_tokenizer`. A prepared DATA_DIR:
    the tokenizer its manifest names. Anything else is refused for what it is (stack.artifacts).
    """
    identity = require(path, "tokenizer-source")
    if identity.kind.family == "model":
        # Imported here: they bring torch, which a DATA_DIR's or hf:DIR's tokenizer has no need of.
        from stack.train import checkpoint as ckpt
        from stack.train.trained import resolve_checkpoint

        checkpoint = ckpt.load_checkpoint(resolve_checkpoint(path))
        return tokenizer_from_state(checkpoint.state["tokenizer"])
    if identity.kind.family == "data":  # a DATA_DIR's tokenizer.json is the stack's own record
        return load_tokenizer(path)
    return read_tokenizer(path)


def model_chat_template(path: Path) -> str | None:
    """The chat template the model whose tokenizer `--tokenizer RUN_DIR` takes ships, which renders
    the fine-tuning data prepared for it (stack.data.chat_render): a stack model's checkpoint's
    (stack.data.chat_jinja), a Hugging Face directory's own (`read_chat_template`); None for a
    DATA_DIR, a tokenizer alone, or a model that ships none."""
    identity = require(path, "tokenizer-source")
    if identity.kind.family == "model":
        from stack.train import checkpoint as ckpt
        from stack.train.trained import resolve_checkpoint

        return chat_template_of(ckpt.read_state(resolve_checkpoint(path)))
    return None if identity.kind.family == "data" else read_chat_template(path)


def model_context(path: Path) -> int | None:
    """The context of the model whose tokenizer `--tokenizer RUN_DIR` takes, so what is prepared
    for it can be checked against it before any work: a stack model's `model.ctx`, a Hugging Face
    model's `max_position_embeddings`; None for a DATA_DIR or a tokenizer alone."""
    identity = require(path, "tokenizer-source")
    if identity.kind.family == "model":
        from stack.train import checkpoint as ckpt
        from stack.train.trained import resolve_checkpoint

        return int(ckpt.read_state(resolve_checkpoint(path))["config"]["model"]["ctx"])
    config = Path(path) / HF_CONFIG
    if identity.kind.family in ("export", "hf") and config.is_file():
        found = json.loads(config.read_text(encoding="utf-8")).get("max_position_embeddings")
        return found if isinstance(found, int) else None
    return None
