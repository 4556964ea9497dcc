"""Hugging Face model directories built offline, as the models people bring would ship them.

Nothing is downloaded: tokenizers are trained here with the `tokenizers` library on a small text,
in the styles real checkpoints use.
- `llama3_tokenizer`: byte-level BPE (as Llama 3, SmolLM2), special tokens added after the
  trained vocabulary, `<|end_of_text|>` the end-of-sequence token.
- `qwen2_tokenizer`: byte-level BPE as Qwen2's, `<|endoftext|>` ending documents, chat markers
  added after it.
- `llama2_tokenizer`: SentencePiece-style BPE (as Llama 2, TinyLlama): "▁" for spaces, a "▁"
  prepended to the text, byte fallback through `<0xNN>` tokens, `</s>` the end-of-sequence
  token at id 2.
Each writes tokenizer.json and tokenizer_config.json into a directory and returns it. Those that
ship a chat template write it there, as the models do: `llama3_chat_tokenizer` Llama 3's (a bos,
every turn ended by <|eot_id|>), `chatml_instruct_tokenizer` ChatML with <|im_end|> the eos_token
(so the user's turns end with the end of sequence too; CHATML_TOOLS_TEMPLATE writes tool calls).

Whole model directories (`llama_model`, `qwen2_model`) add config.json and safetensors weights
written by transformers itself, from its own config classes, at odd sizes (head_dim 12, three
layers, grouped-query attention) with config.json's vocab_size padded past the tokenizer's, as
Qwen2 ships. Norm weights and q/k/v biases are drawn at random rather than left at transformers'
1 and 0, so a converter that drops or misplaces them changes the logits.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import torch

TEXT = (
    "The gate holds when the run does what the spec says. A tokenizer that drops characters "
    "flatters bits per byte; a reader that returns placeholders hides an empty corpus. "
    "def main():\n    return sum(range(10))\n"
) * 8


# The chat templates the models ship, as their tokenizer_config.json holds them: Llama 3's (a bos
# first, every turn ended by <|eot_id|>) and Qwen2's ChatML (no bos, every turn ended by <|im_end|>).
LLAMA3_TEMPLATE = (
    "{{ bos_token }}{% for message in messages %}{{ '<|start_header_id|>' + message['role'] + "
    "'<|end_header_id|>\n\n' + message['content'] | trim + '<|eot_id|>' }}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|start_header_id|>assistant<|end_header_id|>\n\n' }}{% endif %}"
)
CHATML_TEMPLATE = (
    "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + "
    "'<|im_end|>' + '\n'}}{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"
)
# A template written for these tests with what Qwen3's (and DeepSeek-R1's) does with reasoning: an
# answer's `reasoning_content` is its reasoning, else a content that holds a reasoning block
# (`<think>…</think>`, then the answer) is split there;
# the last answer, and one after the last user turn with reasoning, opens with its block (empty when
# it has none, as a model answering without thinking writes it); the earlier answers stand without
# it, so a turn is written otherwise once a later user turn follows.
REASONING_TEMPLATE = (
    "{%- set ns = namespace(last_user=-1) -%}"
    "{%- for m in messages -%}{%- if m.role == 'user' -%}{%- set ns.last_user = loop.index0 -%}"
    "{%- endif -%}{%- endfor -%}"
    "{%- for m in messages -%}"
    "{%- if m.role == 'assistant' -%}"
    "{%- set content = m.content -%}{%- set reasoning = '' -%}"
    "{%- if m.reasoning_content is defined and m.reasoning_content is not none -%}"
    "{%- set reasoning = m.reasoning_content -%}"
    "{%- elif '</think>' in content -%}"
    "{%- set reasoning = content.split('</think>')[0].rstrip('\n').split('<think>')[-1].lstrip('\n') -%}"
    "{%- set content = content.split('</think>')[-1].lstrip('\n') -%}"
    "{%- endif -%}"
    "{%- if loop.index0 > ns.last_user and (loop.last or reasoning) -%}"
    "{{- '<|im_start|>assistant\n<think>\n' + reasoning.strip('\n') + '\n</think>\n\n' -}}"
    "{{- content + '<|im_end|>\n' -}}"
    "{%- else -%}{{- '<|im_start|>assistant\n' + content + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- else -%}{{- '<|im_start|>' + m.role + '\n' + m.content + '<|im_end|>\n' -}}{%- endif -%}"
    "{%- endfor -%}"
    "{%- if add_generation_prompt -%}{{- '<|im_start|>assistant\n' -}}{%- endif -%}"
)
LLAMA3_CHAT_MARKERS = ["<|start_header_id|>", "<|end_header_id|>", "<|eot_id|>"]
# Qwen2.5's way with OpenAI tool calls: the tools offered as JSON in a system turn of their own, an
# assistant's call as <tool_call> JSON in its turn, a tool's answer as <tool_response> in a user turn.
CHATML_TOOLS_TEMPLATE = (
    "{%- if tools %}{{- '<|im_start|>system\n# Tools\n<tools>' }}"
    "{%- for tool in tools %}{{- '\n' + tool | tojson }}{%- endfor %}"
    "{{- '\n</tools><|im_end|>\n' }}{%- endif %}"
    "{%- for message in messages %}"
    "{%- if message.role in ['system', 'user'] or (message.role == 'assistant' and not message.tool_calls) %}"
    "{{- '<|im_start|>' + message.role + '\n' + message.content + '<|im_end|>\n' }}"
    "{%- elif message.role == 'assistant' %}{{- '<|im_start|>assistant' }}"
    "{%- if message.content %}{{- '\n' + message.content }}{%- endif %}"
    "{%- for call in message.tool_calls %}{%- set call = call.function %}"
    '{{- \'\n<tool_call>\n{"name": "\' + call.name + \'", "arguments": \' + call.arguments }}'
    "{{- '}\n</tool_call>' }}"
    "{%- endfor %}{{- '<|im_end|>\n' }}"
    "{%- elif message.role == 'tool' %}"
    "{%- if loop.index0 == 0 or messages[loop.index0 - 1].role != 'tool' %}"
    "{{- '<|im_start|>user' }}{%- endif %}"
    "{{- '\n<tool_response>\n' + message.content + '\n</tool_response>' }}"
    "{%- if loop.last or messages[loop.index0 + 1].role != 'tool' %}{{- '<|im_end|>\n' }}{%- endif %}"
    "{%- endif %}{%- endfor %}"
    "{%- if add_generation_prompt %}{{- '<|im_start|>assistant\n' }}{%- endif %}"
)


def _write_config(directory: Path, eos: str, bos: str | None, chat_template: str | None = None) -> None:
    added = {"__type": "AddedToken", "content": eos, "special": True}  # the older layout's AddedToken form
    config = {"bos_token": bos, "eos_token": added, "model_max_length": 2048}
    if chat_template is not None:
        config["chat_template"] = chat_template
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def _byte_level_bpe(
    directory: Path,
    vocab_size: int,
    specials: list[str],
    eos: str,
    bos: str | None,
    lowercase: bool = False,
    chat_template: str | None = None,
) -> Path:
    """A byte-level BPE trained on TEXT, `specials` added after its vocabulary, in `directory`
    (created); with `lowercase`, its normaliser lower-cases every text it encodes."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    if lowercase:
        backend.normalizer = normalizers.Lowercase()
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer=trainer)
    backend.add_special_tokens(specials)
    backend.save(str(directory / "tokenizer.json"))
    _write_config(directory, eos=eos, bos=bos, chat_template=chat_template)
    return directory


def llama3_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A Llama-3-style byte-level BPE tokenizer in `directory` (created)."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>"]
    return _byte_level_bpe(directory, vocab_size, specials, eos="<|end_of_text|>", bos="<|begin_of_text|>")


def llama3_chat_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A Llama-3-style tokenizer with its chat markers and its chat template (LLAMA3_TEMPLATE)."""
    specials = ["<|begin_of_text|>", "<|end_of_text|>", *LLAMA3_CHAT_MARKERS]
    return _byte_level_bpe(
        directory, vocab_size, specials, "<|end_of_text|>", "<|begin_of_text|>", chat_template=LLAMA3_TEMPLATE
    )


def qwen2_tokenizer(directory: Path, vocab_size: int = 400, chat_template: str | None = None) -> Path:
    """A Qwen2-style byte-level BPE tokenizer in `directory` (created); it has no bos token."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return _byte_level_bpe(
        directory, vocab_size, specials, eos="<|endoftext|>", bos=None, chat_template=chat_template
    )


def chatml_instruct_tokenizer(
    directory: Path, vocab_size: int = 400, chat_template: str = CHATML_TEMPLATE
) -> Path:
    """A Qwen2-Instruct-style tokenizer: ChatML (or `chat_template`), and <|im_end|> its eos_token, so
    every turn of the template, the user's too, ends with the end-of-sequence id."""
    specials = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
    return _byte_level_bpe(
        directory, vocab_size, specials, eos="<|im_end|>", bos=None, chat_template=chat_template
    )


def uncased_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A byte-level BPE that lower-cases what it encodes, as uncased models' tokenizers do, in
    `directory` (created): it never decodes a text with capitals back to itself."""
    return _byte_level_bpe(
        directory, vocab_size, ["<|endoftext|>"], eos="<|endoftext|>", bos=None, lowercase=True
    )


def llama2_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A Llama-2-style SentencePiece BPE with byte fallback in `directory` (created)."""
    from tokenizers import Tokenizer, decoders, models, normalizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE(unk_token="<unk>", byte_fallback=True, fuse_unk=True))
    backend.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    backend.decoder = decoders.Sequence(
        [decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(), decoders.Strip(" ", 1, 0)]
    )
    specials = ["<unk>", "<s>", "</s>"]
    byte_tokens = [f"<0x{b:02X}>" for b in range(256)]
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=specials + byte_tokens, show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer=trainer)
    backend.save(str(directory / "tokenizer.json"))
    _write_config(directory, eos="</s>", bos="<s>")
    return directory


# Odd on purpose: head_dim 12, three layers, three query heads per key/value head.
SHAPE = {
    "hidden_size": 72,
    "intermediate_size": 100,
    "num_hidden_layers": 3,
    "num_attention_heads": 6,
    "num_key_value_heads": 2,
    "max_position_embeddings": 64,
    "initializer_range": 0.08,  # logits of order one, as a trained model's, not transformers' near-zero
}
# config.json's vocab_size exceeds the tokenizer's by this many rows, as Qwen2's 151936 over 151646.
VOCAB_PADDING = 13


def _tokenizer_ids(directory: Path) -> tuple[int, int]:
    """(vocabulary size with added tokens, id of the end-of-sequence token) of a tokenizer directory."""
    from tokenizers import Tokenizer

    backend = Tokenizer.from_file(str(directory / "tokenizer.json"))
    eos = json.loads((directory / "tokenizer_config.json").read_text(encoding="utf-8"))["eos_token"]
    return backend.get_vocab_size(with_added_tokens=True), backend.token_to_id(eos["content"])


def _draw_small_parameters(model: torch.nn.Module, seed: int) -> None:
    """Norm weights around 1 and biases around 0, drawn, so that every one of them shows in the logits."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("norm.weight"):
                param.copy_(1 + 0.2 * torch.randn(param.shape, generator=generator))
            elif name.endswith(".bias"):
                param.copy_(0.5 * torch.randn(param.shape, generator=generator))


def _save_model(
    directory: Path,
    config_class: Callable[..., Any],
    model_class: Callable[[Any], torch.nn.Module],
    config: dict[str, Any],
    dtype: str,
    max_shard_size: str | None,
    seed: int,
) -> Path:
    """config.json and weights, written by transformers' own save_pretrained beside the tokenizer
    files already in `directory`; `config` overrides SHAPE and the vocabulary the tokenizer sets."""
    import torch

    vocab, eos = _tokenizer_ids(directory)
    hf_config = config_class(**{**SHAPE, "vocab_size": vocab + VOCAB_PADDING, "eos_token_id": eos, **config})
    torch.manual_seed(seed)
    model = model_class(hf_config)
    _draw_small_parameters(model, seed)
    shards = {} if max_shard_size is None else {"max_shard_size": max_shard_size}
    model.to(getattr(torch, dtype)).save_pretrained(str(directory), **shards)
    return directory


@dataclass(frozen=True)
class Family:
    """A model family the fixtures write: transformers' config and model classes (by name, imported
    where a checkpoint is written), the tokenizer it ships, and the config.json settings it takes
    beyond SHAPE."""

    config_class: str
    model_class: str
    tokenizer: Callable[[Path], Path]
    settings: dict[str, Any]


def _rope(theta: float) -> dict[str, Any]:
    return {"rope_type": "default", "rope_theta": theta}


FAMILIES = {
    "llama": Family(
        "LlamaConfig",
        "LlamaForCausalLM",
        llama3_tokenizer,
        {"rms_norm_eps": 1e-5, "rope_parameters": _rope(500000.0), "tie_word_embeddings": False},
    ),
    # q/k/v biases
    "qwen2": Family(
        "Qwen2Config",
        "Qwen2ForCausalLM",
        qwen2_tokenizer,
        {"rms_norm_eps": 1e-6, "rope_parameters": _rope(1000000.0), "tie_word_embeddings": True},
    ),
    # q/k head norms, and heads of their own width: 16 where SHAPE's hidden_size /
    # num_attention_heads is 12, as Qwen3-0.6B's 128 is not its 1,024 / 16
    "qwen3": Family(
        "Qwen3Config",
        "Qwen3ForCausalLM",
        qwen2_tokenizer,
        {
            "rms_norm_eps": 1e-6,
            "rope_parameters": _rope(1000000.0),
            "tie_word_embeddings": True,
            "head_dim": 16,
        },
    ),
}


def hf_model(
    directory: Path,
    tokenizer: Callable[[Path], Path] | None = None,
    *,
    family: str,
    tie: bool | None = None,
    dtype: str = "float32",
    max_shard_size: str | None = None,
    seed: int = 0,
    **config: Any,
) -> Path:
    """A checkpoint directory of `family` (FAMILIES) with its own tokenizer (`tokenizer`, else the
    family's), written by transformers; `tie` and `config` override the family's settings."""
    import transformers

    made = FAMILIES[family]
    (tokenizer or made.tokenizer)(directory)
    tied = {} if tie is None else {"tie_word_embeddings": tie}
    config_class, model_class = (
        getattr(transformers, name) for name in (made.config_class, made.model_class)
    )
    settings = {**made.settings, **tied, **config}
    return _save_model(directory, config_class, model_class, settings, dtype, max_shard_size, seed)


llama_model = partial(hf_model, family="llama")
qwen2_model = partial(hf_model, family="qwen2")
qwen3_model = partial(hf_model, family="qwen3")


def tiny_chatml_qwen2(directory: Path) -> Path:
    """A one-layer Qwen2 whose tokenizer writes ChatML (<|im_start|>, <|im_end|> special tokens): a
    chat model small enough to import, sample and trace in a test."""
    return qwen2_model(
        directory,
        lambda d: qwen2_tokenizer(d, chat_template=CHATML_TEMPLATE),
        num_hidden_layers=1,
        hidden_size=24,
        intermediate_size=40,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
