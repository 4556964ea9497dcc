"""Chat data for a model that ships its own chat template is rendered by it; tool calls are rendered
where that template writes them and dropped, counted, where the template cannot write them; a turn
the template writes otherwise once a later one follows (Qwen3's reasoning dropped from history) is
read as context and counted, and the later turns train as the model generates them.

Chat data prepared with `--tokenizer` of an imported Llama was rendered with the
stack's `User:/Assistant:` template, and `stack sft` then replaced the model's own template unsaid.
One tool call in ten refused a whole chat set with a line cut in the middle of the record.
The models and their templates are built offline (tests/support/hf_fixtures.py).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from stack.cli import main
from stack.data import chat_render, sft_template
from stack.data.chat_jinja import jinja_of
from stack.data.chat_shapes import LeftOut
from stack.data.filters.droplog import DROP_LOG_FILE
from stack.data.manifest import load_manifest
from stack.data.prefs_rows import parse_pair
from stack.data.sft_prepare import chosen_renderer
from stack.data.sft_reader import open_labels
from stack.data.sft_template import load_template
from stack.data.shards import open_split
from stack.data.tokenizer import ByteTokenizer, load_tokenizer
from tests.support.hf_fixtures import (
    CHATML_TOOLS_TEMPLATE,
    REASONING_TEMPLATE,
    chatml_instruct_tokenizer,
    llama3_chat_tokenizer,
    llama_model,
    qwen3_model,
)

GATE = "GATE-SFT-001"
WORDS = ["gate", "holds", "run", "spec", "says", "tokenizer", "drops", "characters", "reader", "corpus"]
TOOL_CALL = {"type": "function", "function": {"name": "lookup", "arguments": '{"q": "x"}'}}
SHORT_RUN = [
    "--set",
    "train.steps=2",
    "--set",
    "eval.every=2",
    "--set",
    "ckpt.every=2",
    "--set",
    "train.batch_size=2",
]


def chat(i: int, tool: bool = False, turns: int = 1) -> dict[str, Any]:
    """Conversation i: `turns` user/assistant exchanges, after a system turn; with `tool`, an OpenAI
    tool call and its answer before the last answer."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "Be brief."}]
    for turn in range(turns):
        messages += [
            {"role": "user", "content": f"What about {WORDS[(i + turn) % len(WORDS)]}?"},
            {"role": "assistant", "content": f"It {WORDS[(i + 3 * turn) % len(WORDS)]} {i}."},
        ]
    if tool:
        answer = messages.pop()
        messages += [
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "content": f"found {WORDS[i % len(WORDS)]}", "tool_call_id": "1"},
            answer,
        ]
    return {"messages": messages}


def preference_pairs(count: int = 30) -> list[dict[str, Any]]:
    """Pairs in the chat form: conversation i's prompt (`chat`), a holding and a dropping answer."""
    return [
        {
            "prompt": chat(i)["messages"][:-1],
            "chosen": [{"role": "assistant", "content": f"It holds {i}."}],
            "rejected": [{"role": "assistant", "content": f"It drops {i}."}],
        }
        for i in range(count)
    ]


def write(path: Path, records: list[dict[str, Any]]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def prepare(inputs: Path, out: Path, tokenizer: str, *extra: str) -> int:
    argv = ["prepare", str(inputs), "--format", "chat", "--tokenizer", tokenizer, "--out", str(out)]
    return main([*argv, "--val-fraction", "0.4", *extra])


@pytest.fixture(scope="module")
def llama(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Llama that ships Llama 3's chat template, and its import."""
    root = tmp_path_factory.mktemp("llama")
    source = llama_model(root / "src", llama3_chat_tokenizer)
    assert main(["import-hf", str(source), "--out", str(root / "imported")]) == 0
    return source, root / "imported"


@pytest.fixture(scope="module")
def chats(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("chats")
    return write(root / "chats.jsonl", [chat(i, turns=1 + i % 2) for i in range(300)])


def first_example(data: Path) -> tuple[list[int], list[int]]:
    """The ids and supervision of the first example of the train split."""
    manifest = load_manifest(data)
    tokens = np.asarray(next(iter(open_split(data, manifest, "train"))).tokens)
    labels = np.asarray(next(iter(open_labels(data, manifest, "train"))).tokens)
    first = (labels >> 1) == 1
    return tokens[first].tolist(), (labels[first] & 1).tolist()


# -- the model's own template renders its data, and stays its template -----------------------


@pytest.mark.holds(GATE)
def test_chat_data_for_a_model_that_ships_a_template_is_rendered_as_its_users_render_it(
    llama: tuple[Path, Path], chats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every id of an example is transformers' rendering of the conversation with the model's
    template; the prompt is what apply_chat_template gives for generation, every completion through
    its <|eot_id|> is supervised, and the end of text the stack separates examples with follows."""
    from transformers import AutoTokenizer

    source, imported = llama
    assert prepare(chats, tmp_path / "d", str(imported)) == 0
    assert "chat template: the model's own chat template (sha256 " in capsys.readouterr().out
    sft = load_manifest(tmp_path / "d").sft
    template = json.loads((source / "tokenizer_config.json").read_text())["chat_template"]
    assert sft is not None and sft.renderer == "model" and sft.chat_template == template
    ids, supervised = first_example(tmp_path / "d")
    users = AutoTokenizer.from_pretrained(str(source))
    record = json.loads(chats.read_text().splitlines()[0])[
        "messages"
    ]  # one exchange: system, user, assistant
    prompt = users.apply_chat_template(record[:-1], add_generation_prompt=True, return_dict=False)
    completion = users.encode(record[-1]["content"], add_special_tokens=False)
    eot, eos = users.convert_tokens_to_ids("<|eot_id|>"), users.eos_token_id
    assert ids == [*prompt, *completion, eot, eos]
    assert supervised == [0] * len(prompt) + [1] * (len(completion) + 2)
    # The same data from the model's own directory (hf:DIR) is the same data.
    assert prepare(chats, tmp_path / "e", f"hf:{source}") == 0
    assert first_example(tmp_path / "e") == (ids, supervised)


@pytest.mark.holds(GATE)
def test_an_instruct_template_ending_every_turn_with_the_eos_prepares(tmp_path: Path) -> None:
    """Qwen2-Instruct's ChatML ends the user's turns with <|im_end|>, its eos_token: those EOS ids
    are the prompt's, unsupervised, and only a model's own template may write them (prompt_eos)."""
    directory = chatml_instruct_tokenizer(tmp_path / "tok")
    chats = write(tmp_path / "in.jsonl", [chat(i, turns=2) for i in range(30)])
    assert prepare(chats, tmp_path / "d", f"hf:{directory}") == 0
    ids, supervised = first_example(tmp_path / "d")
    eos = load_tokenizer(tmp_path / "d").eot_id
    eos_at = [i for i, token in enumerate(ids) if token == eos]
    assert [supervised[i] for i in eos_at] == [0, 0, 1, 0, 1]  # system, user, answer, user, answer
    assert ids[-1] != eos  # the template's turn ends "<|im_end|>\n": no EOS is added after it


@pytest.mark.holds(GATE)
def test_preference_pairs_for_an_instruct_template_ending_every_turn_with_the_eos_prepare(
    tmp_path: Path,
) -> None:
    """The same template renders a pair's prompt: its <|im_end|> ids decode to nothing, as the EOS
    does, so the pair reads back as its prompt and answers (each pair was misrendered, exit 3, while
    the expected text kept <|im_end|> as written); each row is transformers' generation prompt, the
    answer and the EOS, which alone is scored."""
    from transformers import AutoTokenizer

    directory = chatml_instruct_tokenizer(tmp_path / "tok")
    pairs = preference_pairs()
    argv = ["prepare", str(write(tmp_path / "prefs.jsonl", pairs)), "--format", "prefs"]
    assert main([*argv, "--tokenizer", f"hf:{directory}", "--out", str(tmp_path / "d")]) == 0
    ids, supervised = first_example(tmp_path / "d")
    users = AutoTokenizer.from_pretrained(str(directory))
    prompts = {
        tuple(users.apply_chat_template(p["prompt"], add_generation_prompt=True, return_dict=False))
        for p in pairs
    }
    (prompt,) = [list(p) for p in prompts if ids[: len(p)] == list(p)]
    first_scored = supervised.index(1)
    second = supervised.index(0, first_scored)  # the rejected row starts where the chosen one's run ends
    assert first_scored == len(prompt) and ids[second : second + len(prompt)] == prompt
    chosen, rejected = ids[first_scored:second], ids[second + len(prompt) :]
    assert chosen[-1] == rejected[-1] == users.eos_token_id and all(supervised[first_scored:second])
    assert users.decode(chosen[:-1]).startswith("It holds ") and users.decode(rejected[:-1]).startswith(
        "It drops "
    )


def test_another_template_is_said_and_training_the_model_on_it_is_refused_unless_accepted(
    llama: tuple[Path, Path], chats: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """--template chat over a model's own: prepare says so; sft refuses at set-up, in one line naming
    both templates and the setting that accepts the change, which then goes into the run's config
    and its template into the export."""
    _, imported = llama
    assert prepare(chats, tmp_path / "d", str(imported), "--template", "chat") == 0
    out = capsys.readouterr().out
    assert "chat template: gatestack-chat (sha256 " in out and "ships its own chat template" in out
    run = ["sft", "--data", str(tmp_path / "d"), "--init-from", str(imported), "--out", str(tmp_path / "r")]
    run += SHORT_RUN
    assert main(run) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and not (tmp_path / "r").exists()
    assert "rendered with gatestack-chat (sha256 " in err and "ships its own chat template (sha256 " in err
    assert '--set data.chat_template_change="why"' in err
    assert main([*run, "--set", 'data.chat_template_change="our server speaks it"']) == 0
    assert 'chat_template_change = "our server speaks it"' in (tmp_path / "r" / "config.toml").read_text()
    assert main(["export", str(tmp_path / "r"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    exported = json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["chat_template"]
    assert exported.startswith("{%- for message in messages -%}")  # the stack's template, as accepted


def test_fine_tuning_on_data_rendered_by_the_model_s_template_keeps_it(
    llama: tuple[Path, Path], chats: Path, tmp_path: Path
) -> None:
    """The chain: import → prepare → sft → export; the export's template is the model's."""
    source, imported = llama
    assert prepare(chats, tmp_path / "d", str(imported)) == 0
    run = ["sft", "--data", str(tmp_path / "d"), "--init-from", str(imported), "--out", str(tmp_path / "r")]
    assert main([*run, *SHORT_RUN]) == 0
    assert main(["export", str(tmp_path / "r"), "--format", "hf", "--out", str(tmp_path / "hf")]) == 0
    shipped = json.loads((source / "tokenizer_config.json").read_text())["chat_template"]
    assert json.loads((tmp_path / "hf" / "tokenizer_config.json").read_text())["chat_template"] == shipped


# -- what the template cannot write is dropped and counted, what it can is rendered ----------


def test_tool_calls_the_template_cannot_write_are_dropped_and_counted_not_the_file_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One conversation in ten with an OpenAI tool call, for the stack's template: the others are
    kept; each dropped one is a drop log line and a count in the source's report, and the output
    names the first with a short excerpt of it and the fix."""
    records = [chat(i, tool=i % 10 == 0) for i in range(60)]
    assert prepare(write(tmp_path / "tools.jsonl", records), tmp_path / "d", "byte") == 0
    out = capsys.readouterr().out
    report = load_manifest(tmp_path / "d").filters["main"]
    assert report.dropped == {"unrenderable": 6} and report.documents_out == 54
    # GATE-DATA-014 check bytes: a dropped record's bytes are read and booked as dropped, so they balance
    books = load_manifest(tmp_path / "d").accounting["main"]
    assert books.dropped_bytes["unrenderable"] > 0
    assert sum(books.input_bytes.values()) == books.kept_bytes + sum(books.dropped_bytes.values())
    logged = [json.loads(line) for line in (tmp_path / "d" / DROP_LOG_FILE).read_text().splitlines()]
    assert [row["where"] for row in logged] == [f"tools.jsonl:{i + 1}" for i in range(0, 60, 10)]
    warning = next(line for line in out.splitlines() if "the chat template cannot write" in line)
    assert "the first: tools.jsonl:1: a tool call" in warning and '"tool_calls": [1 item]' in warning
    assert "leave such records out of the file" in warning and len(warning) < 600


def test_a_set_the_template_can_write_nothing_of_is_refused_in_one_line_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    records = [chat(i, tool=True) for i in range(5)]
    assert prepare(write(tmp_path / "tools.jsonl", records), tmp_path / "d", "byte") == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and "unrenderable 5" in err
    assert "render with a chat template that writes them" in err and not (tmp_path / "d").exists()


def test_most_of_a_set_dropped_as_unrenderable_warns_gate_data_015(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Past GATE-DATA-015's max_source_drop_share the drops are the source's warning, with the fix."""
    records = [chat(i, tool=i % 4 != 0) for i in range(40)]
    assert prepare(write(tmp_path / "tools.jsonl", records), tmp_path / "d", "byte") == 0
    out = capsys.readouterr().out
    assert "warning GATE-DATA-015" in out and "unrenderable 30" in out and "the template filter" in out


def test_tool_calls_a_model_s_template_writes_are_rendered_and_learnt(tmp_path: Path) -> None:
    """Qwen2.5's template writes a call as <tool_call> JSON in the assistant's turn: kept, the call
    supervised, the tool's answer not."""
    directory = chatml_instruct_tokenizer(tmp_path / "tok", chat_template=CHATML_TOOLS_TEMPLATE)
    records = [chat(i, tool=True) for i in range(40)]
    path = write(tmp_path / "tools.jsonl", records)
    assert prepare(path, tmp_path / "d", f"hf:{directory}", "--pack-len", "256") == 0
    manifest = load_manifest(tmp_path / "d")
    assert manifest.filters["main"].dropped == {} and sum(manifest.sft.examples.values()) == 40
    ids, supervised = first_example(tmp_path / "d")
    tokenizer = load_tokenizer(tmp_path / "d")
    learnt = tokenizer.decode([i for i, s in zip(ids, supervised, strict=True) if s])
    assert '<tool_call>\n{"name": "lookup", "arguments": {"q": "x"}}\n</tool_call>' in learnt
    assert "found" not in learnt and "<tool_response>" in tokenizer.decode(ids)


LOOKUP_TOOL = {
    "type": "function",
    "function": {"name": "lookup", "description": "Look a word up.", "parameters": {"type": "object"}},
}


def test_the_tools_a_conversation_offers_are_written_where_the_template_writes_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A record's OpenAI `tools` reach the model's template as `apply_chat_template(..., tools=...)`
    hands them: each example's ids are transformers' rendering with the tool list in its system turn,
    where they were trained as if no tool were offered. The stack's template has no place for them:
    such records are left out as unrenderable there, counted, not trained without them."""
    from transformers import AutoTokenizer

    directory = chatml_instruct_tokenizer(tmp_path / "tok", chat_template=CHATML_TOOLS_TEMPLATE)
    records = [{**chat(i, tool=True), "tools": [LOOKUP_TOOL]} for i in range(20)]
    path = write(tmp_path / "tools.jsonl", records)
    assert prepare(path, tmp_path / "d", f"hf:{directory}", "--pack-len", "512") == 0
    ids, _ = first_example(tmp_path / "d")
    users = AutoTokenizer.from_pretrained(str(directory))
    rendered = [users.apply_chat_template(r["messages"], tools=r["tools"], tokenize=False) for r in records]
    (whole,) = [text for text in rendered if users.decode(ids) == text]
    assert ids == users(whole)["input_ids"] and '<tools>\n{"type": "function"' in whole
    assert prepare(path, tmp_path / "stack", f"hf:{directory}", "--template", "chat") == 2
    assert "offers tools (1), which the chat template has no place for" in capsys.readouterr().err
    # An OpenAI preference line's input tools reach its prompt the same way.
    line = {
        "input": {"messages": records[0]["messages"][1:2], "tools": [LOOKUP_TOOL]},
        "preferred_output": [{"role": "assistant", "content": "It holds."}],
        "non_preferred_output": [{"role": "assistant", "content": "It drops."}],
    }
    template = chosen_renderer(None, CHATML_TOOLS_TEMPLATE, load_tokenizer(tmp_path / "d"))
    asked = users.apply_chat_template(
        line["input"]["messages"], tools=[LOOKUP_TOOL], add_generation_prompt=True, tokenize=False
    )
    assert parse_pair(line, "x", template).prompt == asked


# -- GATE-SFT-001 rev 7 ------------------------------------------------------------------------


def unsupervised_turn_ends(monkeypatch: pytest.MonkeyPatch) -> None:
    """A renderer that masks the EOS of every assistant turn but the last (as a collator masking
    the pad id, the EOS, would, had it spared the last)."""
    render = sft_template.render

    def planted(*args: Any) -> sft_template.Rendered:
        rendered = render(*args)
        ends = np.flatnonzero(rendered.ids == args[1].eot_id)[:-1]
        rendered.mask[ends] = 0
        return rendered

    monkeypatch.setattr("stack.data.sft_prepare.render", planted)


@pytest.mark.gate(GATE)
def test_an_eos_left_inside_an_example_by_the_stack_s_template_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Only a model's own template writes an EOS into a prompt; the stack's, after an assistant's
    turn, is to be supervised: masked, the earlier turns never learn to stop."""
    unsupervised_turn_ends(monkeypatch)
    records = [chat(i, turns=2) for i in range(30)]
    assert prepare(write(tmp_path / "in.jsonl", records), tmp_path / "d", "byte") == 3
    err = capsys.readouterr().err
    assert f"gate fired: {GATE}" in err and "EOS token(s) inside examples are masked" in err


def late_completion(monkeypatch: pytest.MonkeyPatch) -> None:
    """A model-template renderer whose supervision starts one token into each completion."""
    render = chat_render.render_model

    def planted(turns: list[chat_render.ModelTurn], tokenizer: Any) -> sft_template.Rendered:
        rendered = render(turns, tokenizer)
        starts = np.flatnonzero(np.diff(rendered.mask.astype(np.int8), prepend=0) == 1)
        rendered.mask[starts] = 0
        return rendered

    monkeypatch.setattr("stack.data.sft_prepare.render_model", planted)


@pytest.mark.gate(GATE)
def test_a_model_template_turn_supervised_one_token_late_is_refused(
    llama: tuple[Path, Path],
    chats: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    late_completion(monkeypatch)
    assert prepare(chats, tmp_path / "d", f"hf:{llama[0]}") == 3
    err = capsys.readouterr().err
    assert f"gate fired: {GATE}" in err and "assistant turn(s) supervise other tokens" in err


def test_a_stack_model_s_own_template_is_rendered_the_stack_s_way() -> None:
    """A stack model tuned on chats ships gatestack-chat's Jinja: its data is rendered by the shipped
    template itself, the same text tokenized as the model was tuned, and is no change of template."""
    shipped = load_template(None)
    chosen = chosen_renderer(None, jinja_of(shipped.spec), ByteTokenizer())
    assert isinstance(chosen, sft_template.ChatTemplate) and chosen.sha256 == shipped.sha256
    other = chosen_renderer(None, CHATML_TOOLS_TEMPLATE, ByteTokenizer())
    assert isinstance(other, chat_render.ModelTemplate) and other.special_tokens == {
        "eos_token": "<|endoftext|>"
    }


# -- a template that rewrites the history: Qwen3's reasoning block --------------------------------


@pytest.fixture(scope="module")
def reasoning(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A Qwen3 whose template drops an earlier turn's reasoning block (REASONING_TEMPLATE), and its
    import; a context of 256, so that two exchanges fit a window."""
    root = tmp_path_factory.mktemp("qwen3")
    tokenizer = lambda d: chatml_instruct_tokenizer(d, chat_template=REASONING_TEMPLATE)  # noqa: E731
    source = qwen3_model(root / "src", tokenizer, max_position_embeddings=256)
    assert main(["import-hf", str(source), "--out", str(root / "imported")]) == 0
    return source, root / "imported"


@pytest.mark.holds(GATE)
def test_turns_a_template_rewrites_once_the_next_follows_are_context_and_the_last_trains_as_generated(
    reasoning: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every conversation of two exchanges is kept (each was left out whole as unrenderable): its
    ids are transformers' rendering of the whole conversation, the first answer there without its
    reasoning block and unsupervised, and the supervised text is the last answer exactly as the
    model writes it after apply_chat_template's generation prompt. The manifest and the report
    count the first answers as history."""
    from transformers import AutoTokenizer

    source, imported = reasoning
    records = [chat(i, turns=2) for i in range(40)]
    assert prepare(write(tmp_path / "chats.jsonl", records), tmp_path / "d", str(imported)) == 0
    assert "note: 40 of 80 assistant turns read as context, not trained" in capsys.readouterr().out
    sft = load_manifest(tmp_path / "d").sft
    assert sft is not None and (sft.assistant_turns, sft.history_turns) == (40, 40)
    assert sum(sft.examples.values()) == 40 and not sft.dropped
    users = AutoTokenizer.from_pretrained(str(source))
    ids, supervised = first_example(tmp_path / "d")
    shown = [i for i, record in enumerate(records) if users.decode(ids).startswith(_rendered(users, record))]
    (messages,) = (records[i]["messages"] for i in shown)
    prompt = users.apply_chat_template(messages[:-1], add_generation_prompt=True, tokenize=False)
    assert users.decode(ids) == _rendered(users, {"messages": messages})
    assert messages[1]["content"] in prompt and "<think>" not in prompt  # the first answer, as history
    written = users.decode([t for t, s in zip(ids, supervised, strict=True) if s])
    assert written == f"<think>\n\n</think>\n\n{messages[-1]['content']}<|im_end|>\n"
    assert users.decode([t for t, s in zip(ids, supervised, strict=True) if not s]) == prompt
    # GATE-SFT-001 holds it again as a run reads it.
    assert (
        main(
            [
                "sft",
                "--data",
                str(tmp_path / "d"),
                "--init-from",
                str(imported),
                "--out",
                str(tmp_path / "run"),
                *SHORT_RUN,
            ]
        )
        == 0
    )


def thinking(i: int, turns: int = 1, first_thinks: bool = False) -> dict[str, Any]:
    """Conversation i (`chat`) whose last answer holds its reasoning as reasoning traces ship it,
    `<think>…</think>` before the answer in the content (and the first answer too, `first_thinks`)."""
    record = chat(i, turns=turns)
    answers = [m for m in record["messages"] if m["role"] == "assistant"]
    for answer in answers[:1] if first_thinks else answers[-1:]:
        answer["content"] = f"<think>\nweighing {WORDS[i % len(WORDS)]}\n</think>\n\n{answer['content']}"
    return record


@pytest.mark.holds(GATE)
def test_an_answer_holding_its_reasoning_trains_as_the_template_writes_it(
    reasoning: tuple[Path, Path], tmp_path: Path
) -> None:
    """Reasoning traces for a Qwen3 (each last answer's content `<think>\n…\n</think>\n\n` then
    the answer) prepare, every one (each was left out as unrenderable: the template writes the
    block its content holds where a stand-in gets an empty one), and train: the example's ids are
    transformers' rendering of the conversation, the supervised text the answer with its reasoning
    as the model writes it after the generation prompt. A conversation whose earlier answer holds
    reasoning, which the template drops from the history, is still left out: that text is trained
    nowhere."""
    from transformers import AutoTokenizer

    source, imported = reasoning
    records = [thinking(i, turns=1 + i % 2) for i in range(40)]
    assert prepare(write(tmp_path / "chats.jsonl", records), tmp_path / "d", str(imported)) == 0
    sft = load_manifest(tmp_path / "d").sft
    assert sft is not None and sum(sft.examples.values()) == 40 and not sft.dropped
    users = AutoTokenizer.from_pretrained(str(source))
    ids, supervised = first_example(tmp_path / "d")
    (record,) = [r for r in records if users.decode(ids) == _rendered(users, r)]
    assert ids == users(_rendered(users, record))["input_ids"]
    last = record["messages"][-1]["content"]
    written = users.decode([t for t, s in zip(ids, supervised, strict=True) if s])
    assert written.endswith(f"{last}<|im_end|>\n") and written.startswith("<think>\nweighing ")
    template = chosen_renderer(None, REASONING_TEMPLATE, load_tokenizer(tmp_path / "d"))
    assert isinstance(template, chat_render.ModelTemplate)
    with pytest.raises(LeftOut, match="writes a message's text otherwise"):
        chat_render.model_turns(template, thinking(0, turns=2, first_thinks=True)["messages"], "x")
    special = thinking(1)  # found by its text, a special token's string could be taken for the template's
    special["messages"][-1]["content"] += " <|im_start|>"
    with pytest.raises(LeftOut, match="writes a message's text otherwise"):
        chat_render.model_turns(template, special["messages"], "x")
    run = ["sft", "--data", str(tmp_path / "d"), "--init-from", str(imported), "--out", str(tmp_path / "run")]
    assert main([*run, *SHORT_RUN]) == 0


def _rendered(users: Any, record: dict[str, Any]) -> str:
    """A record's whole conversation as transformers renders it."""
    return users.apply_chat_template(record["messages"], tokenize=False)


@pytest.mark.holds(GATE)
def test_preference_completions_are_the_answers_as_the_template_writes_them_after_its_prompt(
    reasoning: tuple[Path, Path], tmp_path: Path
) -> None:
    """A pair's rows for a model whose template opens every answer with an empty reasoning block: each
    row is transformers' rendering of the prompt and that answer, through the <|im_end|> that ends it
    (the block was left out, so DPO scored answers the model never writes), only the answer scored;
    and `stack dpo` reads the pairs back at their masks as it trains."""
    from transformers import AutoTokenizer

    source, imported = reasoning
    pairs = preference_pairs()
    argv = ["prepare", str(write(tmp_path / "prefs.jsonl", pairs)), "--format", "prefs"]
    assert main([*argv, "--tokenizer", str(imported), "--out", str(tmp_path / "d")]) == 0
    ids, supervised = first_example(tmp_path / "d")
    users = AutoTokenizer.from_pretrained(str(source))
    first_scored = supervised.index(1)
    second = supervised.index(0, first_scored)
    chosen_row = users.decode(ids[:second])
    (pair,) = [p for p in pairs if chosen_row.startswith(_through_answer(users, p, "chosen"))]
    assert ids[:second] == users(_through_answer(users, pair, "chosen"))["input_ids"]
    rejected = users(_through_answer(users, pair, "rejected"))["input_ids"]
    assert ids[second : second + len(rejected)] == rejected
    written = users.decode(ids[first_scored:second])
    assert written == f"<think>\n\n</think>\n\n{pair['chosen'][0]['content']}<|im_end|>"
    assert all(supervised[first_scored:second]) and not any(supervised[:first_scored])
    run = ["dpo", str(imported), "--data", str(tmp_path / "d"), "--out", str(tmp_path / "run")]
    assert main([*run, "--steps", "2", "--batch-size", "2", "--device", "cpu"]) == 0


def reasoned(i: int) -> dict[str, Any]:
    """Conversation i (`chat`) whose answer states its reasoning apart, as `reasoning_content`."""
    record = chat(i)
    record["messages"][-1]["reasoning_content"] = f"weighing {WORDS[i % len(WORDS)]} against {i}"
    return record


@pytest.mark.holds(GATE)
def test_reasoning_stated_apart_trains_where_the_template_writes_it_and_is_never_dropped_unsaid(
    reasoning: tuple[Path, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """An answer's `reasoning_content`: Qwen3's template writes it as the answer's reasoning block, and
    the example trains on it as transformers renders the conversation. The stack's template writes a
    message's content alone: such a record is left out as unrenderable, counted and said, where it
    trained on the answer alone with its reasoning dropped unsaid."""
    from transformers import AutoTokenizer

    source, imported = reasoning
    records = [reasoned(i) if i % 3 == 0 else chat(i) for i in range(30)]
    chats = write(tmp_path / "chats.jsonl", records)
    assert prepare(chats, tmp_path / "d", str(imported)) == 0
    users = AutoTokenizer.from_pretrained(str(source))
    ids, supervised = first_example(tmp_path / "d")
    (record,) = [r for r in records if users.decode(ids) == _rendered(users, r)]
    assert ids == users(_rendered(users, record))["input_ids"]
    message = record["messages"][-1]
    thought = message.get("reasoning_content", "")
    written = users.decode([t for t, s in zip(ids, supervised, strict=True) if s])
    assert written == f"<think>\n{thought}\n</think>\n\n{message['content']}<|im_end|>\n"
    assert sum(load_manifest(tmp_path / "d").sft.examples.values()) == 30
    capsys.readouterr()
    assert prepare(chats, tmp_path / "stack", str(imported), "--template", "chat") == 0
    report = load_manifest(tmp_path / "stack").filters["main"]
    assert report.dropped == {"unrenderable": 10} and report.documents_out == 20
    assert "reasoning stated apart from the answer" in capsys.readouterr().out
    # TRL's conversational prompt-completion form hands the template its messages as they are too.
    asked = [{"prompt": r["messages"][:-1], "completion": r["messages"][-1:]} for r in records]
    argv = ["prepare", str(write(tmp_path / "pc.jsonl", asked)), "--format", "prompt-completion"]
    assert (
        main([*argv, "--tokenizer", str(imported), "--out", str(tmp_path / "pc"), "--val-fraction", "0.4"])
        == 0
    )
    assert load_manifest(tmp_path / "pc").shards == load_manifest(tmp_path / "d").shards


def _through_answer(users: Any, pair: dict[str, Any], side: str) -> str:
    """A pair's prompt and one answer as transformers renders them, through the <|im_end|> ending it."""
    whole = users.apply_chat_template(pair["prompt"] + pair[side], tokenize=False)
    return whole[: whole.rindex("<|im_end|>") + len("<|im_end|>")]
