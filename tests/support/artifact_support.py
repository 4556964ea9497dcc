"""One artifact of every kind stack.artifacts knows, each made by the command that makes it, at smoke size.

`build_kinds(root)` returns kind name → path: a prepared DATA_DIR of each format, a run trained
for two steps (its record filed in a scratch repository's ledger, so it can be released), its
checkpoint, a LoRA run and its adapter, a laser output, an ES run, an HF and an ONNX export, the
HF export imported again, a synth output, a tuned lens, a trace dump, a Hugging Face model and a
tokenizer directory made elsewhere, a filed evidence record, a plain directory, a plain file, and
a path with nothing there.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import pytest

import contracts.evidence
from contracts.evidence import REPO_ROOT, CodeInfo, sha256_file
from contracts.registry import REGISTRY_FILE
from stack.cli import main
from tests.support.hf_fixtures import llama3_tokenizer, llama_model
from tests.support.paths import DATA
from tests.support.prefs_support import write_pairs
from tests.support.train_support import write_corpus

QUICK = ["train.device='cpu'", "train.batch_size=1", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
STEPS = ["train.steps=2", "model.ctx=128"]


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


def _run(*argv: str) -> None:
    """One command that must succeed."""
    code = main(list(argv))
    assert code == 0, f"`stack {' '.join(argv)}` exited {code}"


def _clean_head() -> CodeInfo:
    """The code a released run must come from: HEAD, clean (the working tree under test may be dirty)."""
    head = subprocess.run(
        ["git", "-C", str(REPO_ROOT), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()
    return CodeInfo(git_sha=head, git_dirty=False)


def build_kinds(root: Path) -> dict[str, Path]:
    """kind name → an artifact of that kind under root (module docstring)."""
    k: dict[str, Path] = {}
    repo = root / "repo"
    (repo / "evidence").mkdir(parents=True)
    shutil.copy(REPO_ROOT / REGISTRY_FILE, repo / REGISTRY_FILE)
    k["data-pretrain"] = root / "data"
    _run("prepare", str(write_corpus(root)), "--val-fraction", "0.25", "--out", str(k["data-pretrain"]))
    k["data-sft"] = root / "chat"
    halves = ["--val-fraction", "0.5"]
    chat = ["prepare", str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "96", *halves]
    _run(*chat, "--out", str(k["data-sft"]))
    k["data-prefs"] = root / "prefs"
    pairs = write_pairs(root / "pairs.jsonl")
    _run(
        "prepare", str(pairs), "--format", "prefs", "--pack-len", "48", *halves, "--out", str(k["data-prefs"])
    )
    k["run"] = repo / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(contracts.evidence, "collect_code", lambda _repo: _clean_head())
        train = ["train", "--data", str(k["data-pretrain"]), "--out", str(k["run"]), "--preset", "smoke"]
        _run(*train, *_sets(*QUICK, *STEPS), "--evidence-dir", str(repo / "evidence/runs"))
    k["evidence"] = repo / "evidence/runs" / k["run"].name
    k["checkpoint"] = sorted((k["run"] / "checkpoints").iterdir())[-1]
    k["release"] = repo / "evidence/models/tiny-0.1.0"
    release = ["release", str(k["run"]), "--ledger-record", str(k["evidence"]), "--name", "tiny"]
    models = ["--models-dir", str(repo / "evidence/models"), "--registry", str(repo / REGISTRY_FILE)]
    _run(*release, "--version", "0.1.0", *models)
    k["lora-run"] = root / "lora"
    lora = ["lora.r=4", "lora.alpha=8", "lora.targets='q,v'"]
    sft = ["sft", "--data", str(k["data-sft"]), "--init-from", str(k["run"]), "--out", str(k["lora-run"])]
    _run(*sft, *_sets(*QUICK, "train.steps=2", *lora))
    k["adapter"] = k["lora-run"] / "adapter"
    k["peft-adapter"] = root / "peft"
    _run("lora", "export", str(k["lora-run"]), "--out", str(k["peft-adapter"]))
    k["surgery"] = root / "laser"
    _run("laser", str(k["run"]), "--targets", "ffn_up", "--rho", "0.5", "--out", str(k["surgery"]))
    k["es-run"] = root / "es"
    es = ["es", str(k["run"]), "--data", str(k["data-pretrain"]), "--out", str(k["es-run"])]
    _run(*es, "--steps", "1", "--population", "2", "--batch-size", "1", "--seq-len", "16")
    k["hf-export"], k["onnx-export"] = root / "hf", root / "onnx"
    _run("export", str(k["run"]), "--format", "hf", "--out", str(k["hf-export"]))
    _run("export", str(k["run"]), "--format", "onnx", "--out", str(k["onnx-export"]))
    k["import"] = root / "imported"
    _run("import-hf", str(k["hf-export"]), "--out", str(k["import"]))
    k["synth"] = root / "synth"
    synth = ["synth", str(k["run"]), "--out", str(k["synth"]), "--samples", "2", "--min-chars", "0"]
    _run(*synth, "--max-instruction-tokens", "4", "--max-response-tokens", "4", "--min-coherence", "0.001")
    k["lens"] = root / "lens.safetensors"
    lens = ["lens", str(k["run"]), "--train", "--data", str(k["data-pretrain"]), "--save", str(k["lens"])]
    _run(*lens, "--steps", "1", "--batch-size", "1", "--seq-len", "16", "--heldout-batches", "1")
    k["trace-dump"] = root / "dump.json"
    _run("trace", str(k["run"]), "--prompt", "def", "--dump", str(k["trace-dump"]))
    k["hf-model"] = llama_model(root / "llama")
    k["hf-tokenizer"] = llama3_tokenizer(root / "tokenizer")
    k["plain-dir"] = root / "corpus"
    k["file"] = root / "notes.txt"
    k["file"].write_text("a plain note\n")
    k["missing"] = root / "nothing-here"
    return k


def write_items(path: Path, count: int = 4) -> Path:
    """A JSONL file of {id, prompt, completion} items, for the evaluation commands."""
    items = [{"id": str(i), "prompt": f"Q{i}:", "completion": f" {i}"} for i in range(count)]
    path.write_text("".join(json.dumps(item) + "\n" for item in items))
    return path


def reseal(checkpoint: Path, name: str) -> None:
    """Record `name`'s current sha256 and size in the checkpoint's manifest, as if it were written so."""
    manifest_path = checkpoint / "manifest.json"
    manifest = json.loads(manifest_path.read_text())
    target = checkpoint / name
    manifest["files"][name] = {"sha256": sha256_file(target), "bytes": target.stat().st_size}
    manifest_path.write_text(json.dumps(manifest, indent=1))
