"""A preference row's completion mask starts at the completion's first token. Planted: a mask one token
late at prepare (`[0] * (len(prompt) + 1) + [1] * (len(completion) - 1)`), so each completion's first token
sat in the prompt. Prepare wrote it (supervised_tokens one fewer per row) and the unmutated `stack dpo`
trained on it: DPO's log-probabilities skipped the first token of every completion, every gate green.
GATE-SFT-001 rev 9 (check boundary) reads every pair back at its mask (contracts.pair_rows) against the
pairs the data holds, on the tables prepare writes and on every batch the DPO loss reads."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.pair_rows import PAIR_ROLES, pair_turns_at_mask, row_bounds
from contracts.split import example_identity
from stack.cli import main
from stack.data import prefs_rows, sft_prepare
from stack.data.prefs_rows import pair_ids, render_pair
from stack.data.sft_gates import boundary_outcome
from stack.data.split import index_row
from stack.data.tokenizer import ByteTokenizer
from tests.support.prefs_support import prepared_pairs, write_pairs
from tests.support.trace_support import save_run, tiny_model

ROW = 32  # --pack-len of the prepared pairs
REAL_ROW = prefs_rows._row


def _late_row(prompt: list[int], completion: list[int], width: int, eot: int) -> tuple:
    """Planted: the mask starts one token after the prompt (the completion's first token unscored)."""
    ids, mask, padding = REAL_ROW(prompt, completion, width, eot)
    mask[len(prompt)] = 0
    return ids, mask, padding


def _prepare(root: Path, name: str) -> tuple[int, Path]:
    pairs, data = write_pairs(root / f"{name}.jsonl"), root / name
    argv = ["prepare", str(pairs), "--format", "prefs", "--pack-len", str(ROW), "--val-fraction", "0.5"]
    return main([*argv, "--out", str(data)]), data


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A three-layer byte-level model of context 64 saved as a run: the policy's start and reference."""
    root = tmp_path_factory.mktemp("prefs")
    save_run(root / "source", tiny_model(ctx=64))
    return root / "source"


def _dpo(source: Path, data: Path, out: Path) -> int:
    argv = ["dpo", str(source), "--data", str(data), "--out", str(out), "--lr", "1e-3", "--steps", "2"]
    return main([*argv, "--batch-size", "1", "--device", "cpu"])


@pytest.mark.gate("GATE-SFT-001")
def test_falsifier_a_mask_one_token_late_halts_prepare(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A mask one token late, planted in prepare's own rows: the pairs read at the mask are no pair of
    the data. (A mask that leaves the end-of-text unscored is caught by the check examples already.)"""
    monkeypatch.setattr(prefs_rows, "_row", _late_row)
    status, _ = _prepare(tmp_path, "late")
    err = capsys.readouterr().err
    assert status == 3, err
    assert "GATE-SFT-001" in err and "off their prompt/completion boundary" in err


@pytest.mark.holds("GATE-SFT-001")
def test_the_correct_mask_prepares_and_every_pair_is_held(tmp_path: Path) -> None:
    """Benign: the stack's rows, just inside, prepare; each pair read at its mask is a pair of the data."""
    status, _ = _prepare(tmp_path, "honest")
    assert status == 0


@pytest.mark.gate("GATE-SFT-001")
def test_falsifier_dpo_refuses_data_a_buggy_prepare_wrote(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """A DATA_DIR written by a prepare with rows one token late and without the check:
    the unmutated `stack dpo` halts on the first batch its loss reads, naming GATE-SFT-001."""
    with monkeypatch.context() as patched:
        patched.setattr(prefs_rows, "_row", _late_row)
        patched.setattr(sft_prepare, "check_boundary", lambda *_args: None)
        status, data = _prepare(tmp_path, "buggy")
    assert status == 0
    capsys.readouterr()
    status = _dpo(source, data, tmp_path / "out")
    err = capsys.readouterr().err
    assert status == 3, err
    assert "GATE-SFT-001" in err and "off their prompt/completion boundary" in err


@pytest.mark.holds("GATE-SFT-001")
def test_dpo_trains_on_pairs_prepared_right(source: Path, tmp_path: Path) -> None:
    """Benign: the same run on the stack's own DATA_DIR passes the check on every batch."""
    assert _dpo(source, prepared_pairs(tmp_path), tmp_path / "out") == 0


def test_a_row_mask_that_is_not_one_run_ending_on_the_end_of_text_has_no_bounds() -> None:
    ids = np.array([5, 6, 7, 0, 0])
    assert row_bounds(np.array([0, 1, 1, 1, 0]), ids, eot=0) == (1, 3)
    assert row_bounds(np.array([0, 1, 1, 0, 0]), ids, eot=0) is None  # its end-of-text unscored
    assert row_bounds(np.array([0, 1, 0, 1, 0]), ids, eot=0) is None  # two runs
    assert row_bounds(np.array([1, 1, 1, 1, 0]), ids, eot=0) is None  # no prompt
    assert row_bounds(np.array([0, 0, 0, 0, 0]), ids, eot=0) is None  # nothing scored


TEXT = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), min_size=1, max_size=12)
WIDTH = 128  # a row holds any pair of TEXT: a prompt and a completion of 12 four-byte characters, and its end


@settings(max_examples=40)
@given(prompt=TEXT, chosen=TEXT, rejected=TEXT, late=st.booleans())
def test_a_rendered_pair_reads_back_at_its_mask_and_a_late_mask_does_not(
    prompt: str, chosen: str, rejected: str, late: bool
) -> None:
    """The stack's rows, read at their masks by the statute, give back the pair's own turns; the
    same rows with the mask one token late give back another text, which the check counts off."""
    tok = ByteTokenizer()
    turns = list(zip(PAIR_ROLES, (prompt, chosen, rejected), strict=True))
    rendered = render_pair(pair_ids(tok, turns), WIDTH, tok.eot_id)
    mask = rendered.mask.copy()
    if late:
        for start in (len(tok.encode(prompt)), WIDTH + len(tok.encode(prompt))):
            mask[start] = 0
    rows, scored = rendered.ids.reshape(2, WIDTH), mask.astype(bool).reshape(2, WIDTH)
    read = pair_turns_at_mask(list(rows), list(scored), tok.eot_id, tok.decode)
    assert (read == turns) != late
    labels = rendered.ids * 0 + 2 + mask  # example 1, its supervised bits
    keys = {index_row(example_identity(turns), "train")[0]}
    measured = boundary_outcome(rendered.ids[None, :], labels[None, :], keys, tok).measured
    assert measured["pairs_off_boundary"] == int(late) and measured["pairs_held"] == int(not late)


@pytest.mark.holds("GATE-SFT-001")
def test_a_prompt_that_writes_the_end_of_text_reads_back_as_itself() -> None:
    """A chat-format prompt's "<|endoftext|>" is the end-of-text id in its row (encode_turn), which
    `decode` drops: the check reads it back as its text, so the pair is held, not off its boundary."""
    tok = ByteTokenizer()
    turns = list(zip(PAIR_ROLES, ("Q<|endoftext|>: 2+2?", " 4", " 5"), strict=True))
    rendered = render_pair(pair_ids(tok, turns), 32, tok.eot_id)
    labels = rendered.ids * 0 + 2 + rendered.mask
    keys = {index_row(example_identity(turns), "train")[0]}
    measured = boundary_outcome(rendered.ids[None, :], labels[None, :], keys, tok).measured
    assert measured["pairs_held"] == 1 and measured["pairs_off_boundary"] == 0
