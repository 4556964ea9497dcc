"""The fine-tuning smoke leg: a tiny base model taken through the real fine-tuning commands.

`stack train` (the base) → `stack prepare --format chat` (the small chat set) → `stack sft` with
LoRA → `stack lora merge` → `stack evalmatrix` (the merged model as row C, retrieval as row D)
→ `stack memorization` (the merged model against its base), each through the CLI's entry point
in-process, each leaving an evidence record that judges every gate its run kind requires; the
matrix's adapter row once more from the LoRA run's adapter directory, loaded onto the base.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stack.cli import main
from tests.support.ft_support import write_jsonl
from tests.support.paths import DATA
from tests.support.train_support import smoke_args, train, unjudged, write_corpus

QUICK = ["train.device='cpu'", "train.batch_size=1", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
LORA = ["lora.r=4", "lora.alpha=8", "lora.targets='q,v'"]


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


def test_sft_lora_merge_evalmatrix_memorization(tmp_path: Path) -> None:
    text, chat = tmp_path / "text", tmp_path / "chat"
    assert main(["prepare", str(write_corpus(tmp_path)), "--out", str(text), "--val-fraction", "0.25"]) == 0
    base = tmp_path / "base"
    assert (
        train(smoke_args(text, base, "model.ctx=128", "train.steps=2", "eval.every=2", "ckpt.every=2")) == 0
    )

    prepare = ["prepare", str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "96"]
    assert main([*prepare, "--val-fraction", "0.5", "--out", str(chat)]) == 0
    tuned, merged = tmp_path / "tuned", tmp_path / "merged"
    sft = ["sft", "--data", str(chat), "--init-from", str(base), "--out", str(tuned)]
    assert main([*sft, *_sets(*QUICK, *LORA, "train.steps=2")]) == 0
    assert main(["lora", "merge", str(tuned), "--out", str(merged)]) == 0

    pairs = [json.loads(line) for line in (DATA / "prompt_completion_small.jsonl").read_text().splitlines()]
    records = [{"id": f"pc{i}", **pair} for i, pair in enumerate(pairs)]
    items, pool = (
        write_jsonl(tmp_path / "held.jsonl", records[:6]),
        write_jsonl(tmp_path / "pool.jsonl", records[6:]),
    )
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "tables.md").write_text("2 times 3 is 6\n\n4 times 5 is 20\n")
    matrix = tmp_path / "matrix"
    argv = ["evalmatrix", str(base), "--items", str(items), "--train", str(pool), "--adapter", str(merged)]
    assert main([*argv, "--docs", str(docs), "--exact-match", "--record", str(matrix)]) == 0
    assert unjudged(matrix, "evalmatrix") == {}  # GATE-FT-001 is a warning: WARN counts as judged
    rows = json.loads((matrix / "evalmatrix.json").read_text())["rows"]
    assert [row["row"] for row in rows] == ["A", "B", "C", "D"]
    # The adapter directory on its base scores as the merged model does (the merge is exact to ~1e-6).
    unmerged = tmp_path / "unmerged"
    argv = ["evalmatrix", str(base), "--items", str(items), "--train", str(pool), "--record", str(unmerged)]
    assert main([*argv, "--adapter", str(tuned / "adapter")]) == 0
    again = json.loads((unmerged / "evalmatrix.json").read_text())["rows"]
    assert again[2]["bits_per_byte"] == pytest.approx(rows[2]["bits_per_byte"], rel=1e-4)

    recall = tmp_path / "recall"
    argv = [
        "memorization",
        str(merged),
        "--base",
        str(base),
        "--data",
        str(text),
        "--n",
        "4",
        "--prefix",
        "8",
    ]
    assert main([*argv, "--record", str(recall)]) == 0
    assert unjudged(recall, "memorization") == {}
