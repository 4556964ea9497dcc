"""`stack memorization`: verbatim recall of training examples by a fine-tuned model and its base.

The falsifiers plant memorisation without training: the "fine-tuned" model is a tiny random
model, and the planted training examples are its own greedy continuations, so it reproduces them
by construction while the base (another seed) does not. Planting 2 of 20 (rate 0.10) must fire
GATE-FT-003; 1 of 20 (rate 0.05) beside one example reproduced for 31 tokens must not.
"""

from __future__ import annotations

import json
import random
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contracts.derive.memorization import memorization_summary
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from contracts.verbatim import longest_common_run as statute_run
from stack.cli import main
from stack.data.sft_template import load_template, render
from stack.data.tokenizer import ByteTokenizer
from stack.eval import memorization
from stack.eval.memorization import jsonl_examples, longest_common_run
from tests.support.ft_support import filler, own_continuations, saved, write_jsonl
from tests.support.ledger_support import assert_caught, edited, rederive
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.record_checks import check_record_truth
from tools.site.finetune import finetune_section

PREFIX, CONTINUATION, N = 8, 32, 20


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The tuned model (seed 0), the base (seed 1), and texts the tuned one recites."""
    root = tmp_path_factory.mktemp("memorization")
    recited = own_continuations(0, PREFIX, CONTINUATION, 2)
    return {"tuned": saved(root, 0), "base": saved(root, 1), "recited": recited}


def _examples(path: Path, texts: list[str]) -> Path:
    return write_jsonl(path, [{"text": t} for t in texts])


def _run(world: dict[str, Any], examples: Path, record: Path, *extra: str) -> int:
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--examples", str(examples)]
    argv += ["--n", str(N), "--prefix", str(PREFIX), "--batch-size", str(N), "--record", str(record), *extra]
    return main(argv)


def _verdicts(record: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(record / "metadata.json").gates}


@pytest.mark.holds("GATE-FT-003")
def test_a_model_that_recites_nothing_passes(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    examples = _examples(tmp_path / "train.jsonl", filler(N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec") == 0
    assert "verbatim recall of 20 training examples" in capsys.readouterr().out
    assert _verdicts(tmp_path / "rec") == dict.fromkeys(load_spec().required_gates("memorization"), "PASS")
    result = json.loads((tmp_path / "rec" / "memorization.json").read_text())
    assert result["models"]["fine-tuned"]["reproduced"] == 0 and result["continuation"] == CONTINUATION
    filed = read_evidence(tmp_path / "rec" / "metadata.json")
    assert check_record_truth(filed, tmp_path / "rec", load_spec()).violations == []
    section = "\n".join(finetune_section(filed))  # the run page
    assert "## Verbatim recall" in section and "fine-tuned" in section


@pytest.mark.gate("GATE-FT-003")
def test_two_of_twenty_recited_fire_the_gate_and_name_the_remedies(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    texts = [p + c for p, c in world["recited"]] + filler(N - 2, PREFIX + CONTINUATION)
    assert _run(world, _examples(tmp_path / "train.jsonl", texts), tmp_path / "rec") == 0  # a warning
    assert _verdicts(tmp_path / "rec")["GATE-FT-003"] == "WARN"
    warning = capsys.readouterr().err
    assert "reproduces 2 of 20" in warning and "fewer steps" in warning and "deduplicate" in warning
    result = json.loads((tmp_path / "rec" / "memorization.json").read_text())
    assert result["models"]["fine-tuned"]["reproduced"] == 2 and result["models"]["base"]["reproduced"] == 0


@pytest.mark.holds("GATE-FT-003")
def test_one_recited_and_one_of_31_tokens_stay_inside(world: dict[str, Any], tmp_path: Path) -> None:
    (prompt, whole), (other, almost) = world["recited"]
    swapped = "!" if almost[CONTINUATION - 1] != "!" else "?"
    near_miss = other + almost[: CONTINUATION - 1] + swapped  # the last token differs: a run of 31
    texts = [prompt + whole, near_miss, *filler(N - 2, PREFIX + CONTINUATION)]
    assert _run(world, _examples(tmp_path / "train.jsonl", texts), tmp_path / "rec") == 0
    assert _verdicts(tmp_path / "rec")["GATE-FT-003"] == "PASS"
    result = json.loads((tmp_path / "rec" / "memorization.json").read_text())
    assert sorted(result["tuned_runs"])[-2:] == [31, 32]
    # check runs: every run stated is the one contracts.verbatim finds in the continuations kept
    kept = result["continuations"]
    assert [len(kept[row]) for row in ("true", "fine-tuned", "base")] == [N, N, N]
    assert all(len(c) == CONTINUATION for row in kept.values() for c in row)
    measured = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-FT-003"
    )
    assert measured.measured["tuned_runs_recomputed"] == result["tuned_runs"]
    assert measured.measured["base_runs_recomputed"] == result["base_runs"]


def test_a_continuation_too_short_to_count_is_refused(world: dict[str, Any], tmp_path: Path) -> None:
    examples = _examples(tmp_path / "train.jsonl", filler(N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec", "--continuation", "31") == 2
    assert not (tmp_path / "rec").exists()


@pytest.mark.parametrize(("prefix", "longest"), [(16, 45), (8, 30)], ids=["prefix-can-shrink", "too-short"])
def test_examples_too_short_for_the_prefix_and_continuation_name_what_can_move(
    world: dict[str, Any], tmp_path: Path, capsys: pytest.CaptureFixture[str], prefix: int, longest: int
) -> None:
    """No example long enough: advising a shorter --continuation would advise one refused below
    GATE-FT-003's min_verbatim_tokens, so the refusal names the longest example and the
    sum that fits, or, where no prefix fits before the minimum continuation, longer examples; the
    sum it names runs."""
    examples = write_jsonl(tmp_path / "train.jsonl", [{"text": t[:longest]} for t in filler(N, longest)])
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--examples", str(examples)]
    assert main([*argv, "--prefix", str(prefix)]) == 2
    err = capsys.readouterr().err
    assert f"the longest has {longest}" in err, err
    least = int(load_spec().threshold("GATE-FT-003", "min_verbatim_tokens"))
    if longest > least:
        assert f"--prefix + --continuation at most {longest}" in err and "shorter" not in err, err
        assert main([*argv, "--prefix", str(longest - least), "--n", "2"]) == 0
    else:
        assert "give examples longer than the" in err and "--prefix +" not in err, err


@pytest.mark.holds("GATE-FT-003")
def test_examples_from_a_prepared_data_dir(world: dict[str, Any], tmp_path: Path) -> None:
    data = prepared(tmp_path)
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--data", str(data)]
    assert main([*argv, "--n", "3", "--prefix", "4", "--json", "--record", str(tmp_path / "rec")]) == 0
    result = json.loads((tmp_path / "rec" / "memorization.json").read_text())
    assert len(result["examples"]) == 3 and all(e.startswith("train document") for e in result["examples"])
    assert _verdicts(tmp_path / "rec")["GATE-FT-003"] == "PASS"
    examples = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-DATA-005"
    )
    assert examples.verdict.value == "PASS" and examples.measured["train_examples"] == 3


@pytest.mark.gate("GATE-DATA-005")
def test_examples_drawn_from_the_heldout_split_are_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the examples drawn from the held-out split and labelled train documents,
    so recall is measured on text the model never trained on; refused before any is continued."""
    real = memorization.split_documents
    monkeypatch.setattr(memorization, "split_documents", lambda data, split, eot: real(data, "heldout", eot))
    data = prepared(tmp_path)
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--data", str(data)]
    assert main([*argv, "--n", "3", "--prefix", "4", "--record", str(tmp_path / "rec")]) == 3
    result = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-DATA-005"
    )
    assert result.verdict.value == "FAIL" and result.measured["train_examples_elsewhere"] == 3


def test_chat_records_are_the_ids_sft_trained_on(world: dict[str, Any], tmp_path: Path) -> None:
    """`stack prepare --format chat` renders a chat with its template and EOS ids; so do these."""
    chats = [
        [("user", f"What is {a} plus {b}, please?"), ("assistant", f"It is {a + b}, as you asked.")]
        for a, b in ((1, 2), (3, 4), (5, 6))
    ]
    records = [{"messages": [{"role": r, "content": c} for r, c in turns]} for turns in chats]
    path = write_jsonl(tmp_path / "chat.jsonl", records)
    examples = jsonl_examples(path, ByteTokenizer(), 3, PREFIX + CONTINUATION, 0).examples
    template = load_template(None)
    rendered = [render(template, ByteTokenizer(), turns, "x").ids.tolist() for turns in chats]
    assert [e.tokens for e in examples] == [ids[: PREFIX + CONTINUATION] for ids in rendered]
    argv = ["memorization", str(world["tuned"]), "--base", str(world["base"]), "--examples", str(path)]
    assert main([*argv, "--n", "3", "--prefix", str(PREFIX), "--record", str(tmp_path / "rec")]) == 0


# -- the longest verbatim run ---------------------------------------------------------------

TOKENS = st.lists(st.integers(0, 9), max_size=24)


@given(TOKENS)
def test_a_sequence_shares_all_of_itself(a: list[int]) -> None:
    assert longest_common_run(a, a) == len(a)


@given(TOKENS, TOKENS)
def test_the_run_is_symmetric_and_no_longer_than_either(a: list[int], b: list[int]) -> None:
    run = longest_common_run(a, b)
    assert run == longest_common_run(b, a) <= min(len(a), len(b))


@given(TOKENS, TOKENS)
def test_the_stack_finds_the_run_the_statute_finds(a: list[int], b: list[int]) -> None:
    """The stack's dynamic programme and contracts.verbatim's rule, written apart, agree."""
    assert longest_common_run(a, b) == statute_run(a, b)


@given(TOKENS, st.lists(st.integers(10, 19), max_size=8), st.lists(st.integers(20, 29), max_size=8))
def test_a_planted_run_between_disjoint_texts_is_found_exactly(
    shared: list[int], left: list[int], right: list[int]
) -> None:
    assert longest_common_run(left + shared + left, right + shared + right) == len(shared)


def test_a_tuned_model_its_records_show_was_made_from_another_base_is_refused(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A fine-tune of run A compared with run B (another model) would measure nothing about its
    tuning: the fine-tune's record names A's weights as its start,
    so B is refused in one line, and A is taken."""
    data = prepared(tmp_path)
    quick = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
    a, b, tuned = tmp_path / "a", tmp_path / "b", tmp_path / "tuned"
    assert train(smoke_args(data, a, *quick, "model.ctx=64")) == 0
    assert train(smoke_args(data, b, *quick, "model.ctx=64", "train.seed=1")) == 0
    argv = ["train", "--init-from", str(a), "--data", str(data), "--out", str(tuned)]
    assert train([*argv, *(f"--set={s}" for s in [*quick, "train.device='cpu'", "train.batch_size=4"])]) == 0
    capsys.readouterr()
    asked = ["memorization", str(tuned), "--data", str(data), "--n", "2", "--prefix", "4"]
    assert main([*asked, "--base", str(b)]) == 2
    err = capsys.readouterr().err
    assert f"{tuned} was not made from {b}" in err and len(err.strip().splitlines()) == 1
    assert main([*asked, "--base", str(a)]) in (0, 3)  # judged, whatever its verdict
    # A trains on after the tune; A's run is named with the step it was at.
    assert train(["train", "--resume", str(a), "--set", "train.steps=4"]) == 0
    capsys.readouterr()
    assert main([*asked, "--base", str(a)]) == 2
    err = capsys.readouterr().err
    earlier = a / "checkpoints" / "step-0000002"
    assert f"{tuned} was tuned from {a} as it was at step-0000002" in err and f"--base {earlier}" in err
    assert main([*asked, "--base", str(earlier)]) in (0, 3)


@pytest.mark.gate("GATE-FT-003")
def test_a_control_row_generated_by_the_fine_tuned_model_is_flagged(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug: the base row generated by the fine-tuned model, so the control recites
    what the tuned one does and hides the gap. The weights each row generated with are not the base's."""
    monkeypatch.setattr(memorization, "rows", lambda tuned, base: (("fine-tuned", tuned), ("base", tuned)))
    examples = _examples(tmp_path / "train.jsonl", filler(N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec") == 0  # GATE-FT-003 is a warning
    result = next(g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-FT-003")
    assert result.verdict.value == "WARN" and "the base row was generated by a model" in str(result.message)


def _drawn_result(record: Path) -> Any:
    """The GATE-FT-003 result of check drawn (the examples measured against the stated seed's draw)."""
    gates = read_evidence(record / "metadata.json").gates
    return next(g for g in gates if g.id == "GATE-FT-003" and "examples_seed" in g.measured)


@pytest.mark.gate("GATE-FT-003")
def test_examples_drawn_with_another_seed_than_stated_are_flagged(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: `--seed 4` recorded while the examples are drawn with seed 0, so the recall is
    measured on another set than the record names. The draw, made again from the stated seed and the
    pool's lengths (contracts.recall_draw), picks other examples."""
    real = memorization.jsonl_examples
    monkeypatch.setattr(
        memorization,
        "jsonl_examples",
        lambda path, tok, n, length, seed, template: real(path, tok, n, length, 0, template),
    )
    examples = _examples(tmp_path / "train.jsonl", filler(2 * N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec", "--seed", "4") == 0  # GATE-FT-003 is a warning
    result = _drawn_result(tmp_path / "rec")
    assert result.verdict.value == "WARN" and result.measured["examples_seed"] == 4
    assert "not the 20 the stated seed 4 draws" in str(result.message)
    assert "warning: GATE-FT-003" in capsys.readouterr().err
    filed = read_evidence(tmp_path / "rec" / "metadata.json")
    # the run warns; the record, whose statement its own check contradicts, is not one the ledger
    # accepts (tools/record_checks.contradictions)
    violations = check_record_truth(filed, tmp_path / "rec", load_spec()).violations
    assert violations and all("its check drawn finds without reading a threshold" in v for v in violations)


def _seed_planted(data: dict[str, Any], _run_dir: Path) -> None:
    """The drawn-seed record's gate seed made the one its examples were drawn with, so the draw agrees."""
    next(g for g in data["gates"] if g["id"] == "GATE-FT-003")["measured"]["examples_seed"] = 0


def _seed_restated(data: dict[str, Any], run_dir: Path) -> None:
    """A forger of the drawn-seed record: the seed planted, every derived field re-derived."""
    _seed_planted(data, run_dir)
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_a_drawn_seed_restated_in_the_gate_is_held_to_the_config(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Forged: the examples drawn with seed 0 under --seed 4, and GATE-FT-003's examples_seed made
    0 so the draw agrees. The checker draws again with config.seed."""
    real = memorization.jsonl_examples
    monkeypatch.setattr(
        memorization,
        "jsonl_examples",
        lambda path, tok, n, length, seed, template: real(path, tok, n, length, 0, template),
    )
    examples = _examples(tmp_path / "train.jsonl", filler(2 * N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec", "--seed", "4") == 0
    shutil.copytree(tmp_path / "rec", tmp_path / "plain")
    assert_caught(edited(tmp_path / "plain", _seed_planted), "examples_seed is 0, but its artifacts derive 4")
    forged = read_evidence(edited(tmp_path / "rec", _seed_restated) / "metadata.json")
    assert next(g for g in forged.gates if g.id == "GATE-FT-003").measured["examples_seed"] == 4  # put back


@pytest.mark.holds("GATE-FT-003")
def test_examples_drawn_with_the_stated_seed_hold(world: dict[str, Any], tmp_path: Path) -> None:
    examples = _examples(tmp_path / "train.jsonl", filler(2 * N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec", "--seed", "4") == 0
    result = _drawn_result(tmp_path / "rec")
    assert result.verdict.value == "PASS" and len(result.measured["examples_drawn"]) == N


def _continuing(**planted: Any) -> Any:
    """The stack's `generate_long` with `planted` changes: sampling at temperature 1 and a
    continuation made after a prefix cut by its first token."""
    real = memorization.generate_long

    def continued(model: Any, idx: Any, length: int, **sampling: Any) -> Any:
        cut = planted.get("cut", 0) if idx.shape[1] > 1 else 0  # the probe's one-token prompt stays
        grown = real(model, idx[:, cut:], length, **{**sampling, **planted.get("sampling", {})})
        return torch.cat((idx[:, :cut], grown), dim=1)

    return continued


@pytest.mark.gate("GATE-TRAIN-005")
@pytest.mark.parametrize(
    "planted",
    [
        pytest.param({"sampling": {"temperature": 1.0}}, id="sampled"),
        pytest.param({"sampling": {"temperature": 0.5, "top_k": 2}}, id="sampled-top-2"),
        pytest.param({"cut": 1}, id="prefix-cut"),
    ],
)
def test_a_recall_of_continuations_not_greedy_from_the_prefix_is_refused(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: dict[str, Any]
) -> None:
    """A memorization that continues by sampling and reports it as greedy recall; here also a sampler
    held to its two likeliest tokens, and greedy continuations of a prefix cut by one token. Each
    draw is replayed as greedy from the logits of the text so far: exit 3 naming GATE-TRAIN-005."""
    monkeypatch.setattr(memorization, "generate_long", _continuing(**planted))
    texts = [p + c for p, c in world["recited"]] + filler(N - 2, PREFIX + CONTINUATION)
    assert _run(world, _examples(tmp_path / "train.jsonl", texts), tmp_path / "rec") == 3
    result = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-TRAIN-005"
    )
    assert result.verdict.value == "FAIL" and result.measured["temperature"] == 0.0


@pytest.mark.holds("GATE-TRAIN-005")
def test_greedy_continuations_are_replayed_draw_for_draw(world: dict[str, Any], tmp_path: Path) -> None:
    """Nothing planted: every continuation's draws and the probe's replay as greedy, and the record
    counts them (two rows of N examples of CONTINUATION tokens each)."""
    texts = [p + c for p, c in world["recited"]] + filler(N - 2, PREFIX + CONTINUATION)
    assert _run(world, _examples(tmp_path / "train.jsonl", texts), tmp_path / "rec") == 0
    result = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-TRAIN-005"
    )
    assert result.verdict.value == "PASS"
    assert result.measured["draws"] == 2 * N * CONTINUATION and result.measured["mismatched_draws"] == 0
    assert result.measured["probe_draws"] > 0 and result.measured["mismatched_probe_draws"] == 0


# -- GATE-FT-003 check runs: each run stated, contracts.verbatim's over the continuations kept -------


@pytest.mark.gate("GATE-FT-003")
def test_a_run_rule_off_by_one_is_flagged_and_the_checker_finds_the_runs_again(
    world: dict[str, Any], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The stack's run rule counts past the run it found (a recurrence reading the cell above counts
    every continuation of both models whole; one more is the least such miscount). Every run stated is
    longer than the one contracts.verbatim finds between the continuation kept and the true one:
    the gate warns naming both rows, and the checker, finding every run again from the
    continuations memorization.json keeps, names the record."""
    real = memorization.longest_common_run
    monkeypatch.setattr(memorization, "longest_common_run", lambda generated, true: real(generated, true) + 1)
    examples = _examples(tmp_path / "train.jsonl", filler(N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec") == 0  # GATE-FT-003 is a warning
    filed = read_evidence(tmp_path / "rec" / "metadata.json")
    result = next(g for g in filed.gates if g.id == "GATE-FT-003")
    assert result.verdict.value == "WARN" and "the base row states 20 of 20" in str(result.message)
    found = check_record_truth(filed, tmp_path / "rec", load_spec()).violations
    assert any("its tuned_runs are" in v and "the continuations it keeps give" in v for v in found), found


def _runs_edited(data: dict[str, Any], run_dir: Path) -> None:
    """A perfect forger: memorization.json's fine-tuned runs made whole continuations (recited), its
    summary made again from them by the checker's own function, the record re-derived."""
    path = run_dir / "memorization.json"
    report = json.loads(path.read_text())
    report["tuned_runs"] = [CONTINUATION] * len(report["tuned_runs"])
    least = report["min_verbatim_tokens"]
    report["models"]["fine-tuned"] = memorization_summary(report["tuned_runs"], least)
    path.write_text(json.dumps(report, indent=2) + "\n")
    rederive(data, run_dir)


@pytest.mark.gate("GATE-INTEG-001")
def test_runs_edited_with_their_summary_are_named_from_the_continuations_kept(
    world: dict[str, Any], tmp_path: Path
) -> None:
    """Every number of the edited record agrees with every other; the continuations the file keeps,
    their runs found again by contracts.verbatim, do not."""
    examples = _examples(tmp_path / "train.jsonl", filler(N, PREFIX + CONTINUATION))
    assert _run(world, examples, tmp_path / "rec") == 0
    run_dir = edited(tmp_path / "rec", _runs_edited)
    assert_caught(run_dir, "memorization.json: its tuned_runs are [32, 32", "the continuations it keeps give")


@given(
    st.lists(st.integers(0, 40), max_size=60),
    st.integers(1, 12),
    st.integers(1, 40),
    st.integers(0, 2**32 - 1),
)
def test_the_draw_is_its_ranks_among_the_eligible_examples(
    lengths: list[int], n: int, length: int, seed: int
) -> None:
    """The identity GATE-FT-003's check drawn rests on: the examples drawn from a pool are the
    eligible ones at the ranks drawn from how many there are, so a record needs no pool's lengths."""
    from contracts.recall_draw import drawn_indices, drawn_ranks, eligible_indices

    eligible = eligible_indices(lengths, length)
    drawn = drawn_indices(lengths, n, length, seed)
    assert drawn == sorted(random.Random(seed).sample(eligible, min(n, len(eligible))))
    assert [eligible.index(i) for i in drawn] == drawn_ranks(len(eligible), n, seed)
