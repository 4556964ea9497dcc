"""The chain a peft / TRL user walks, through the real commands, at smoke size, as one test:

    stack train (a base) → stack sft with LoRA (chat data) → stack dpo on that LoRA run, training
    its adapter on → stack lora export → peft loads the adapter onto the Hugging Face export of the
    base → its logits are the stack's → the exported tokenizer's apply_chat_template renders a
    conversation exactly as the stack renders it.

Each command runs in-process through the CLI's entry point; peft and transformers load the files
the way their users do (no code of ours between the files and them).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from contracts.spec import load_spec
from stack.cli import main
from stack.data.chat_jinja import render_text
from stack.data.sft_template import load_template, render
from stack.data.tokenizer_identity import EOT_TOKEN
from stack.export.runtimes import stack_logits
from stack.train.trained import load_trained
from tests.support.paths import DATA
from tests.support.prefs_support import write_pairs
from tests.support.train_support import evidence, smoke_args, train, write_corpus

QUICK = ["train.device='cpu'", "train.batch_size=1", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
CONVERSATION = [
    {"role": "system", "content": "Answer in one word."},
    {"role": "user", "content": "What is the capital of France?"},
    {"role": "assistant", "content": "Paris."},
    {"role": "user", "content": "And of Italy?"},
]


def _sets(*items: str) -> list[str]:
    return [word for item in items for word in ("--set", item)]


@pytest.mark.holds("GATE-LORA-007")
def test_sft_lora_then_dpo_then_peft_on_the_hf_export(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    pytest.importorskip("peft")
    from peft import PeftModel
    from transformers import AutoModelForCausalLM, AutoTokenizer

    text, chat, pairs = tmp_path / "text", tmp_path / "chat", tmp_path / "pairs"
    base, sft, dpo, adapter = tmp_path / "base", tmp_path / "sft", tmp_path / "dpo", tmp_path / "adapter"
    assert main(["prepare", str(write_corpus(tmp_path)), "--out", str(text), "--val-fraction", "0.25"]) == 0
    short = ("model.ctx=128", "train.steps=2", "eval.every=2", "ckpt.every=2")
    assert train(smoke_args(text, base, *short)) == 0

    prepare = ["prepare", str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "96"]
    assert main([*prepare, "--val-fraction", "0.5", "--tokenizer", str(base), "--out", str(chat)]) == 0
    lora = ["lora.r=4", "lora.alpha=8", "lora.targets='q,v'"]
    argv = ["sft", "--data", str(chat), "--init-from", str(base), "--out", str(sft)]
    assert main([*argv, *_sets(*QUICK, *lora, "train.steps=2")]) == 0

    prefs = ["prepare", str(write_pairs(tmp_path / "pairs.jsonl")), "--format", "prefs", "--pack-len", "48"]
    assert main([*prefs, "--val-fraction", "0.5", "--tokenizer", str(sft), "--out", str(pairs)]) == 0
    capsys.readouterr()
    # The same adapter trains on, named the Hugging Face way this time.
    same = ["lora.r=4", "lora.alpha=8", "lora.targets='q_proj,v_proj'", "lora.continue_adapter=true"]
    argv = ["dpo", str(sft), "--data", str(pairs), "--out", str(dpo), "--steps", "4", "--batch-size", "1"]
    assert main([*argv, "--lr", "0.01", "--device", "cpu", *_sets(*same)]) == 0
    assert "trains on over the same base" in capsys.readouterr().err
    started = evidence(dpo)["metrics"]["init_from"]["adapter"]
    assert started["lora"] == "continued" and len(started["adapter_sha256"]) == 64

    assert main(["lora", "export", str(dpo), "--out", str(adapter)]) == 0
    hf_base = AutoModelForCausalLM.from_pretrained(str(adapter / "base"), dtype=torch.float32)
    peft_model = PeftModel.from_pretrained(hf_base, str(adapter)).eval()
    stack = load_trained(dpo, attention="sdpa")
    ids = torch.tensor([stack.tokenizer.encode("User: What is 2 + 3?\nAssistant: 5")])
    with torch.no_grad():
        theirs = peft_model(input_ids=ids).logits.float()
    assert (theirs - stack_logits(stack.model, ids)).abs().max() <= load_spec().threshold(
        "GATE-LORA-007", "logits_atol"
    )

    tokenizer = AutoTokenizer.from_pretrained(str(adapter / "base"))
    template = load_template(None)  # the template the chat data was prepared with
    turns = [(m["role"], m["content"]) for m in CONVERSATION]
    rendered = tokenizer.apply_chat_template(CONVERSATION, tokenize=False, add_generation_prompt=True)
    assert rendered == render_text(template.spec, turns, EOT_TOKEN, add_generation_prompt=True)
    trained_on = CONVERSATION[:3]
    ids = tokenizer.apply_chat_template(trained_on, tokenize=True, return_dict=False)
    assert list(ids) == render(template, stack.tokenizer, turns[:3], "chain").ids.tolist()
