"""Hugging Face model directories built offline, as the models people bring would ship them.

Nothing is downloaded: tokenizers are trained here with the `tokenizers` library on a small text,
in the two styles real checkpoints use.
- `llama3_tokenizer`: byte-level BPE (as Llama 3, Qwen2, SmolLM2), special tokens added after
  the trained vocabulary, `<|end_of_text|>` the end-of-sequence token.
- `llama2_tokenizer`: SentencePiece-style BPE (as Llama 2, TinyLlama): "▁" for spaces, a "▁"
  prepended to the text, byte fallback through `<0xNN>` tokens, `</s>` the end-of-sequence
  token at id 2.
Each writes tokenizer.json and tokenizer_config.json into a directory and returns it.
"""

from __future__ import annotations

import json
from pathlib import Path

TEXT = (
    "The gate holds when the run does what the spec says. A tokenizer that drops characters "
    "flatters bits per byte; a reader that returns placeholders hides an empty corpus. "
    "def main():\n    return sum(range(10))\n"
) * 8


def _write_config(directory: Path, eos: str, bos: str) -> None:
    config = {"bos_token": bos, "eos_token": {"content": eos, "special": True}, "model_max_length": 2048}
    (directory / "tokenizer_config.json").write_text(json.dumps(config), encoding="utf-8")


def llama3_tokenizer(directory: Path, vocab_size: int = 400) -> Path:
    """A Llama-3-style byte-level BPE tokenizer in `directory` (created)."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    directory.mkdir(parents=True, exist_ok=True)
    backend = Tokenizer(models.BPE())
    backend.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    backend.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False
    )
    backend.train_from_iterator([TEXT], trainer=trainer)
    backend.add_special_tokens(["<|begin_of_text|>", "<|end_of_text|>"])
    backend.save(str(directory / "tokenizer.json"))
    _write_config(directory, eos="<|end_of_text|>", bos="<|begin_of_text|>")
    return directory


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
