"""Chat templates travel: the stack's template as the Jinja `chat_template` other tools render, from
the data a model was tuned on, through its checkpoints, into its Hugging Face export; and a
model's own Jinja template read by `stack import-hf` and written back by `stack export`; and
`stack sample` telling a bare prompt to a chat-tuned model how the model was asked in tuning.

The Jinja form is checked against transformers' own renderer (the one `apply_chat_template`
uses) on drawn templates and conversations: text with quotes, backslashes, braces, newlines and
characters beyond ASCII, so no escaping slip can pass.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from stack.cli import main
from stack.data.chat_jinja import STATE_KEY, jinja_of, render_text
from stack.data.manifest import load_manifest
from stack.data.sft_template import ROLES, TemplateFile, Turn, load_template, render
from stack.data.tokenizer import ByteTokenizer
from stack.train.trained import load_trained
from tests.support.hf_fixtures import llama_model, tiny_chatml_qwen2
from tests.support.optional import requires
from tests.support.paths import DATA
from tests.support.trace_support import save_run, tiny_model

pytestmark = requires("transformers")

EOS = "<|endoftext|>"
# Text a template or a message may hold, Jinja's and Python's escapes included.
PIECES = st.text(
    alphabet=st.sampled_from(list("ab Z\n\t'\"\\{}%#|é😀<>")) | st.characters(codec="utf-8"), max_size=12
)


def _hf_render(template: str, messages: list[dict[str, str]], generation: bool) -> str:
    from transformers.utils.chat_template_utils import render_jinja_template

    rendered, _ = render_jinja_template(
        [messages], chat_template=template, add_generation_prompt=generation, eos_token=EOS
    )
    return rendered[0]


@settings(max_examples=60)
@given(
    prefixes=st.lists(PIECES, min_size=3, max_size=3),
    suffixes=st.lists(PIECES, min_size=2, max_size=2),
    turns=st.lists(st.tuples(st.sampled_from(ROLES), PIECES), min_size=1, max_size=5),
    generation=st.booleans(),
)
def test_the_jinja_template_renders_every_conversation_as_the_stack_does(
    prefixes: list[str], suffixes: list[str], turns: list[tuple[str, str]], generation: bool
) -> None:
    roles = {
        "system": Turn(prefix=prefixes[0], suffix=suffixes[0]),
        "user": Turn(prefix=prefixes[1], suffix=suffixes[1]),
        "assistant": Turn(prefix=prefixes[2]),
    }
    spec = TemplateFile(name="drawn {{ 'x' }}", roles=roles, assistant_marker="A:")
    messages = [{"role": role, "content": content} for role, content in turns]
    expected = render_text(spec, turns, EOS, add_generation_prompt=generation)
    assert _hf_render(jinja_of(spec), messages, generation) == expected


def test_a_role_the_template_lacks_is_refused_by_the_jinja_form_too() -> None:
    from jinja2.exceptions import TemplateError

    spec = TemplateFile(
        name="no system",
        roles={"user": Turn(prefix="U: "), "assistant": Turn(prefix="A: ")},
        assistant_marker="A:",
    )
    with pytest.raises(TemplateError, match="has no role system"):
        _hf_render(jinja_of(spec), [{"role": "system", "content": "x"}], False)


def test_the_text_form_is_the_text_of_the_ids_the_stack_trains_on() -> None:
    template = load_template(None)
    turns = [
        ("system", "Be brief."),
        ("user", "2 + 3?"),
        ("assistant", "5"),
        ("user", "And 2 + 4?"),
        ("assistant", "6"),
    ]
    ids = render(template, ByteTokenizer(), turns, "example").ids.tolist()
    eot = ByteTokenizer().eot_id
    # the byte tokenizer's ids are the text's bytes, its end-of-text id where the text says EOS
    as_bytes = b"".join(b"\x00" if i == eot else bytes([i]) for i in ids)
    assert as_bytes == render_text(template.spec, turns, "\x00").encode()


# -- the template travels with the data and the model ----------------------------------------


def test_chat_data_carries_its_template_and_concatenated_prompt_completion_none(tmp_path: Path) -> None:
    chat, pc, turns = tmp_path / "chat", tmp_path / "pc", tmp_path / "turns"
    assert main(["prepare", str(DATA / "chat_small.jsonl"), "--format", "chat", "--out", str(chat)]) == 0
    entry = load_manifest(chat).sft
    assert entry is not None and entry.chat_template == jinja_of(load_template(None).spec)
    assert (
        main(
            [
                "prepare",
                str(DATA / "prompt_completion_small.jsonl"),
                "--format",
                "prompt-completion",
                "--out",
                str(pc),
            ]
        )
        == 0
    )
    entry = load_manifest(pc).sft
    assert entry is not None and entry.join == "concatenate" and entry.chat_template is None
    argv = ["prepare", str(DATA / "prompt_completion_small.jsonl"), "--format", "prompt-completion"]
    assert main([*argv, "--join", "chat-turns", "--out", str(turns)]) == 0
    assert load_manifest(turns).sft.chat_template is not None  # type: ignore[union-attr]


def test_an_export_writes_the_checkpoint_template_where_apply_chat_template_reads_it(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    run = tmp_path / "run"
    template = load_template(None)
    record = {"name": template.spec.name, "sha256": template.sha256, "jinja": jinja_of(template.spec)}
    save_run(run, tiny_model(), extra={STATE_KEY: record})
    out = tmp_path / "hf"
    assert main(["export", str(run), "--format", "hf", "--out", str(out)]) == 0
    tokenizer = AutoTokenizer.from_pretrained(str(out))
    messages = [{"role": "user", "content": "What is 2 + 3?"}, {"role": "assistant", "content": "5"}]
    ids = tokenizer.apply_chat_template(messages, tokenize=True, return_dict=False)
    turns = [(m["role"], m["content"]) for m in messages]
    assert list(ids) == render(template, load_trained(run).tokenizer, turns, "x").ids.tolist()


def test_import_hf_keeps_a_models_own_template_and_export_writes_it_back(tmp_path: Path) -> None:
    source = llama_model(
        tmp_path / "llama",
        num_hidden_layers=1,
        hidden_size=24,
        intermediate_size=40,
        num_attention_heads=2,
        num_key_value_heads=1,
    )
    own = "{% for m in messages %}<|{{ m['role'] }}|>{{ m['content'] }}{% endfor %}"
    config = json.loads((source / "tokenizer_config.json").read_text())
    (source / "tokenizer_config.json").write_text(json.dumps({**config, "chat_template": own}))
    imported, exported = tmp_path / "imported", tmp_path / "exported"
    assert main(["import-hf", str(source), "--out", str(imported)]) == 0
    state = load_trained(imported).checkpoint.state
    assert state[STATE_KEY]["jinja"] == own
    assert main(["export", str(imported), "--format", "hf", "--out", str(exported)]) == 0
    assert json.loads((exported / "tokenizer_config.json").read_text())["chat_template"] == own


def test_sample_says_how_a_chat_tuned_model_is_asked_when_the_prompt_is_not_in_its_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A bare question to a model tuned on chats reads to it as text to continue: `stack sample`
    names the template and the prompt written in it; a prompt in the template, or a model tuned on
    no chat, gets no such note."""
    spec = load_template("chat").spec
    chat = tmp_path / "chat"
    save_run(chat, tiny_model(), extra={STATE_KEY: {"name": "chat", "jinja": jinja_of(spec)}})
    save_run(tmp_path / "plain", tiny_model())
    asked = {
        (chat, "What is 2+2?"): "asked as it was tuned, it reads 'User: What is 2+2?\\nAssistant: '",
        (chat, "User: What is 2+2?\nAssistant: "): None,
        (tmp_path / "plain", "What is 2+2?"): None,
    }
    for (run, prompt), note in asked.items():
        capsys.readouterr()
        assert main(["sample", str(run), "--prompt", prompt, "--tokens", "2"]) == 0
        said = [line for line in capsys.readouterr().err.splitlines() if "was tuned on chats" in line]
        if note is None:
            assert said == []
        else:
            (line,) = said
            assert note in line and f"in the template {spec.name}" in line


def test_sample_asks_an_imported_chat_model_in_its_own_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A Qwen2 import ships ChatML: a bare prompt is told the prompt `apply_chat_template` writes with
    its generation prompt; one that holds `<|im_start|>assistant` is not."""
    source = tiny_chatml_qwen2(tmp_path / "qwen2")
    imported = tmp_path / "imported"
    assert main(["import-hf", str(source), "--out", str(imported)]) == 0
    capsys.readouterr()
    assert main(["sample", str(imported), "--prompt", "hi", "--tokens", "2"]) == 0
    (line,) = [ln for ln in capsys.readouterr().err.splitlines() if "was tuned on chats" in ln]
    assert "in the model's own chat template, and this prompt has no '<|im_start|>assistant'" in line
    assert repr("<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n") in line
    asked = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert main(["sample", str(imported), "--prompt", asked, "--tokens", "2"]) == 0
    assert "was tuned on chats" not in capsys.readouterr().err
