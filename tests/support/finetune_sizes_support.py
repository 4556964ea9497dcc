"""Fine-tuning sets of the sizes people have, for the dataset-size journeys: tiny pretrained models
with the byte and the BPE tokenizer, chat examples and preference pairs by the hundred or thousand.

The models are the smoke preset's, trained two steps at a context of 128 on the generated corpus:
pretrained through `stack train` as a user's would be, each carrying its own tokenizer, which
`stack prepare --tokenizer RUN` then takes. The examples are word salad of a stated size, distinct
by their number; the largest sets use short ones, so ten thousand of them prepare in seconds.
"""

from __future__ import annotations

import json
import random
from pathlib import Path

from stack.cli import main
from tests.support.train_support import WORDS, smoke_args, train, write_corpus

BASE_CTX = 128
# Above this many examples a set is made of short ones: prepare's gates read every token back.
SHORT_FROM = 5_000


def pretrained(root: Path, tokenizer: str) -> Path:
    """A smoke-sized model pretrained two steps on the generated corpus, tokenized by `tokenizer`
    (byte, or bpe of 300 ids), as a run directory under `root`."""
    text, run = root / f"text-{tokenizer}", root / f"base-{tokenizer}"
    vocab = ["--vocab-size", "300"] if tokenizer == "bpe" else []
    corpus = write_corpus(root / f"corpus-{tokenizer}")
    argv = ["prepare", str(corpus), "--out", str(text), "--val-fraction", "0.25", "--tokenizer", tokenizer]
    assert main([*argv, *vocab]) == 0
    sets = (f"model.ctx={BASE_CTX}", "train.steps=2", "train.batch_size=2", "eval.every=2", "ckpt.every=2")
    assert train(smoke_args(text, run, *sets)) == 0
    return run


def _words(rng: random.Random, low: int, high: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(rng.randint(low, high)))


def write_chats(path: Path, count: int) -> Path:
    """`count` distinct chat examples {"messages": [user, assistant]}."""
    rng, short = random.Random(count), count >= SHORT_FROM
    lines = []
    for i in range(count):
        question = f"{i}?" if short else f"{i}: {_words(rng, 2, 4)}?"
        answer = _words(rng, 1, 2) if short else _words(rng, 2, 6)
        turns = [{"role": "user", "content": question}, {"role": "assistant", "content": answer}]
        lines.append(json.dumps({"messages": turns}) + "\n")
    path.write_text("".join(lines))
    return path


def write_preferences(path: Path, count: int) -> Path:
    """`count` distinct preference pairs {prompt, chosen, rejected}, the two answers never alike."""
    rng, short = random.Random(count), count >= SHORT_FROM
    lines = []
    for i in range(count):
        prompt = f"{i}?" if short else f"{i}: {_words(rng, 3, 5)}?"
        answer = _words(rng, 1, 2) if short else _words(rng, 2, 5)
        record = {"prompt": prompt, "chosen": f" {answer}.", "rejected": f" {answer}, maybe not."}
        lines.append(json.dumps(record) + "\n")
    path.write_text("".join(lines))
    return path
