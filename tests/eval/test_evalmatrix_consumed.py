"""`stack evalmatrix` and `stack memorization` consume what their records state: each bug planted in this
process through the real command path, beside a benign case just inside.

- A `stack evalmatrix --docs` whose reader skips the .md files: GATE-FT-002's check retrieval
  rescores the folder as contracts.bm25.folder_passages walks it and holds the retriever's list to it.
- An evalmatrix whose item overlap is compared without normalising the prompts' spacing: GATE-FT-002's
  check overlap holds the stated overlap to contracts.overlap.items_in_training, in-run and in the
  checker (from the prompts evalmatrix.json keeps).
- A `stack memorization --examples` tokenizing a prompt-completion record without its prompt:
  GATE-FT-003's check tokens holds the text of the ids measured to the record's text as
  contracts.recall_draw.example_text writes it.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import read_evidence
from contracts.judges import judge
from contracts.spec import load_spec
from stack.cli import main
from stack.data.tokenizer import ByteTokenizer
from stack.eval import memorization, retrieval
from stack.eval import overlap as overlap_module
from tests.support.ft_support import own_continuations, saved, write_jsonl
from tests.support.ledger_support import assert_caught, edited, rederive
from tools.integrity.record_checks import check_record_truth

EOT = (ByteTokenizer().eot_id,)
PREFIX, CONTINUATION = 8, 32


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A base model (seed 1) and a tuned one (seed 0), six held-out items, a pool of four."""
    root = tmp_path_factory.mktemp("evalmatrix-world")
    pairs = own_continuations(0, 8, 8, 10, lead=EOT)
    items = [{"id": f"h{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[:6])]
    pool = [{"id": f"t{i}", "prompt": p, "completion": c} for i, (p, c) in enumerate(pairs[6:])]
    return {"root": root, "base": saved(root, 1), "tuned": saved(root, 0), "items": items, "pool": pool}


def _evalmatrix(world: dict[str, Any], record: Path, pool: list[dict[str, str]], *extra: str) -> int:
    items = write_jsonl(record.parent / "items.jsonl", world["items"])
    train = write_jsonl(record.parent / "train.jsonl", pool)
    argv = ["evalmatrix", str(world["base"]), "--items", str(items), "--train", str(train)]
    return main([*argv, "--record", str(record), *extra])


def _gate(record: Path, gate_id: str) -> Any:
    return next(g for g in read_evidence(record / "metadata.json").gates if g.id == gate_id)


# -- the passages rescored are the statute's walk of --docs ---------------------------------------


def _docs(world: dict[str, Any], folder: Path) -> Path:
    """a.txt with one paragraph naming a word of each prompt; b.md with the prompts themselves, the
    better passages; c.MD written with a byte-order mark and CRLF; notes.rst, no document."""
    folder.mkdir()
    prompts = [item["prompt"] for item in world["items"]]
    (folder / "a.txt").write_text(
        " ".join(p.split()[0] for p in prompts) + " and more words\n\nfiller text\n"
    )
    (folder / "b.md").write_text("\n\n".join(f"{p} is what the item asks" for p in prompts) + "\n")
    (folder / "c.MD").write_bytes(b"\xef\xbb\xbf# heading\r\n\r\nunrelated words here\r\n")
    (folder / "notes.rst").write_text("\n\n".join(prompts) + "\n")
    return folder


@pytest.mark.gate("GATE-FT-002")
def test_a_reader_that_skips_md_documents_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the retriever reads only .txt files; the statute walks b.md too, whose
    passages score above those retrieved, and the passage lists differ."""
    monkeypatch.setattr(retrieval, "SUFFIXES", (".txt",))
    record = tmp_path / "rec"
    assert _evalmatrix(world, record, world["pool"], "--docs", str(_docs(world, tmp_path / "docs"))) == 3
    result = _gate(record, "GATE-FT-002")
    assert result.verdict.value == "FAIL"
    assert "files never read: b.md, c.MD" in str(result.message)
    assert "retrieval did not take the best" in str(result.message)


@pytest.mark.holds("GATE-FT-002")
def test_the_reader_and_the_statute_walk_the_same_passages(world: dict[str, Any], tmp_path: Path) -> None:
    """Every .txt and .md file (any case, a byte-order mark and CRLF read away), nothing else."""
    record = tmp_path / "rec"
    assert _evalmatrix(world, record, world["pool"], "--docs", str(_docs(world, tmp_path / "docs"))) == 0
    result = _gate(record, "GATE-FT-002")
    assert result.verdict.value == "PASS"
    read, walked = result.measured["passages_read"], result.measured["passages_statute"]
    assert read == walked and walked["files"] == {"a.txt": 2, "b.md": 6, "c.MD": 2}
    assert json.loads((record / "evalmatrix.json").read_text())["retrieved"]["h0"][0]["source"] == "b.md"


# -- the item overlap is contracts.overlap's ------------------------------------------------------


def _pool_with_twin(world: dict[str, Any]) -> list[dict[str, str]]:
    """The pool and a training item whose prompt is item h2's with its space doubled, under another id."""
    twin = world["items"][2]["prompt"].replace(" ", "  ", 1)
    return [*world["pool"], {"id": "x9", "prompt": twin, "completion": "other"}]


@pytest.mark.gate("GATE-FT-002")
def test_an_overlap_compared_with_its_spacing_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: prompts compared as written, so h2 is no training item by prompt text."""
    monkeypatch.setattr(overlap_module, "_prompt", lambda text: text)
    record = tmp_path / "rec"
    assert _evalmatrix(world, record, _pool_with_twin(world)) == 3
    result = _gate(record, "GATE-FT-002")
    assert result.verdict.value == "FAIL" and "by prompt text ['h2'], contracts.overlap" in str(
        result.message
    )


@pytest.mark.holds("GATE-FT-002")
def test_a_prompt_twin_by_its_words_is_stated_and_rederived(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """One space more is the same prompt: h2 is stated, warned of, and the checker finds it again."""
    record = tmp_path / "rec"
    assert _evalmatrix(world, record, _pool_with_twin(world)) == 0
    assert "by prompt text: h2" in capsys.readouterr().err
    assert _gate(record, "GATE-FT-002").verdict.value == "PASS"
    assert json.loads((record / "evalmatrix.json").read_text())["overlap"] == {"by_id": [], "by_text": ["h2"]}
    filed = read_evidence(record / "metadata.json")
    assert filed.metrics["overlap"] == {"by_id": [], "by_text": ["h2"]}
    assert check_record_truth(filed, record, load_spec()).violations == []


def _overlap_emptied(data: dict[str, Any], run_dir: Path) -> None:
    """A forger of an unnormalised overlap's result: evalmatrix.json's and the gate's overlap emptied,
    the record re-derived from the files."""
    path = run_dir / "evalmatrix.json"
    report = json.loads(path.read_text())
    report["overlap"] = {"by_id": [], "by_text": []}
    path.write_text(json.dumps(report, indent=2) + "\n")
    data["metrics"]["overlap"] = report["overlap"]
    next(g for g in data["gates"] if g["id"] == "GATE-FT-002")["measured"]["overlap_stated"] = report[
        "overlap"
    ]
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_an_overlap_emptied_in_the_result_is_found_again_from_its_prompts(
    world: dict[str, Any], tmp_path: Path
) -> None:
    record = tmp_path / "rec"
    assert _evalmatrix(world, record, _pool_with_twin(world)) == 0
    assert_caught(edited(record, _overlap_emptied), "evalmatrix.json states the overlap")


# -- each example measured is the start of its record's text --------------------------------------


def _pc_records(n: int) -> list[dict[str, str]]:
    """Prompt-completion records whose completion alone is long enough to measure: a 5-byte prompt
    and accented completions, so the 40-byte cut splits a two-byte character."""
    return [{"prompt": f"Q{i:02d}: ", "completion": "é" * 12 + f" answer {i} " + "ü" * 12} for i in range(n)]


def _memorization(world: dict[str, Any], examples: Path, record: Path, n: int) -> int:
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--examples", str(examples)]
    return main([*argv, "--n", str(n), "--prefix", str(PREFIX), "--record", str(record)])


def _tokens_result(record: Path) -> Any:
    """The GATE-FT-003 result holding check tokens."""
    result = _gate(record, "GATE-FT-003")
    assert "examples_decoded" in result.measured
    return result


@pytest.mark.gate("GATE-FT-003")
def test_examples_measured_without_their_prompt_are_flagged(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: a prompt-completion record tokenized from its completion alone; every
    example is still long enough, so check drawn agrees, but no measured text starts its record."""
    real = memorization._tokens_of

    def completion_only(record: object, tokenizer: Any, template: Any, where: str) -> list[int]:
        if isinstance(record, dict) and "completion" in record:
            return tokenizer.encode(record["completion"])
        return real(record, tokenizer, template, where)

    monkeypatch.setattr(memorization, "_tokens_of", completion_only)
    examples = write_jsonl(tmp_path / "pc.jsonl", _pc_records(6))
    assert _memorization(world, examples, tmp_path / "rec", 6) == 0  # GATE-FT-003 is a warning
    result = _tokens_result(tmp_path / "rec")
    assert result.verdict.value == "WARN"
    assert "6 of 6 examples were measured on ids whose text is not the start" in str(result.message)


@pytest.mark.holds("GATE-FT-003")
def test_prompt_completion_and_chat_examples_start_their_records(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Prompt then completion (a character split by the cut left out), and a chat as its template
    writes it: both pass, and the checker judges the record's texts alike."""
    examples = write_jsonl(tmp_path / "pc.jsonl", _pc_records(6))
    assert _memorization(world, examples, tmp_path / "pc", 6) == 0
    result = _tokens_result(tmp_path / "pc")
    assert result.verdict.value == "PASS"
    assert all(d.startswith("Q") and d.endswith("\ufffd") for d in result.measured["examples_decoded"])
    filed = read_evidence(tmp_path / "pc" / "metadata.json")
    assert check_record_truth(filed, tmp_path / "pc", load_spec()).violations == []
    chats = [
        {
            "messages": [
                {"role": "user", "content": f"What is {a} plus {b}?"},
                {"role": "assistant", "content": f"{a + b}, as asked."},
            ]
        }
        for a, b in ((1, 2), (3, 4), (5, 6))
    ]
    assert _memorization(world, write_jsonl(tmp_path / "chat.jsonl", chats), tmp_path / "chat", 3) == 0
    assert _tokens_result(tmp_path / "chat").verdict.value == "PASS"


def test_the_judge_leaves_out_only_a_split_last_character() -> None:
    """The boundary of check tokens: a text ending in U+FFFD (a cut inside a character) starts its
    record; one differing in its last character does not."""
    thresholds = load_spec().gates["GATE-FT-003"].threshold_values
    held = {"examples_decoded": ["Q1: é\ufffd"], "examples_rendered": ["Q1: éé"]}
    assert judge("GATE-FT-003", held, thresholds) == []
    off = {"examples_decoded": ["Q1: ée"], "examples_rendered": ["Q1: éé"]}
    assert judge("GATE-FT-003", off, thresholds)
