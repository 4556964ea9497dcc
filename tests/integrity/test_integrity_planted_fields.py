"""Tamperings the checker derives from what the
repository holds: each is planted in a copy of a committed record of spec 1.29.0
 (every cited artifact re-hashed, a derived field re-derived where the plant did), and
the integrity check must name it; the copies as filed pass.

- a command line written `python -m stack ...` is read, so the config it resolves still
  holds the record; one `stack` cannot parse is a violation, never a skipped check;
- a record read at a place another record of the ledger wrote is held to that record's digests,
  whatever digest it states (a manifest no record made; another run's checkpoint);
- a lineage parent of a role its kind's command never names;
- the model a DPO run started from and the data an ES run read, restated;
- an evaluation's token counts, stored bytes and characters, or one digest of its text restated,
  derived from the file at its commit although the record is of a dirty tree;
- the tokenizer or checkpoint step of a committed model a sample or an evaluation read.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.support.ledger_support import (
    CURRENT_RUN,
    DPO_RUN,
    ES_RUN,
    EXPORT_RUN,
    FINETUNE_RUN,
    MEMORIZATION_RUN,
    PREPARE_RUN,
    RECORDS,
    ROOT,
    SAMPLE_RUN,
    Change,
    assert_found,
    findings,
    gate,
    planted,
    rederive,
)
from tools.integrity.check import run_checks

EVAL_RUN = "eval-20261125T174951"  # `stack eval` of release 0.2.0 on a repository file, dirty tree
OTHER_SHA = hashlib.sha256(b"a bpe tokenizer").hexdigest()


def ledger_record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def _seed_under_python_m_stack(data: dict[str, Any], run_dir: Path) -> None:
    """The command line written `python -m stack train ...` and `train.seed` restated in
    config.toml and everywhere the record states it, the record re-derived."""
    data["run"]["argv"] = ["python", "-m", "stack", *data["run"]["argv"][1:]]
    seed = data["config"]["train"]["seed"]
    toml = run_dir / "config.toml"
    text = toml.read_text(encoding="utf-8")
    assert f"seed = {seed}\n" in text
    toml.write_text(text.replace(f"seed = {seed}\n", f"seed = {seed + 17}\n", 1), encoding="utf-8")
    data["config"]["train"]["seed"] = data["determinism"]["seeds"]["train"] = seed + 17
    gate(data, "GATE-DATA-002")["measured"]["plan_seed"] = seed + 17
    rederive(data, run_dir, rounds=4)


def test_a_seed_restated_under_a_python_m_stack_command_line_is_caught(tmp_path: Path) -> None:
    seed = ledger_record(CURRENT_RUN)["config"]["train"]["seed"]
    found = findings(planted(tmp_path, CURRENT_RUN, _seed_under_python_m_stack))
    assert_found(
        found, f"config.toml holds train.seed = {seed + 17}, but its command lines resolve to {seed}"
    )


def _argv(words: Any) -> Change:
    return lambda data, _dir: data["run"].update(argv=words(data["run"]["argv"]))


@pytest.mark.parametrize(
    ("words", "says"),
    [
        (lambda argv: ["python3", "stack/__main__.py", *argv[1:]], "it does not run `stack`"),
        (lambda argv: [*argv, "--no-such-option"], "`stack`'s parser refuses it"),
        (lambda argv: ["stack", "sample", "--no-such-option"], "`stack`'s parser refuses it"),
        (
            lambda _argv: ["stack", "eval", "evidence/models/stdlib-byte-demo-0.2.0", "--text", "README.md"],
            "runs `stack eval`, but a train record is written by",
        ),
    ],
    ids=["another-program", "an-unknown-option", "another-command-refused", "another-command"],
)
def test_a_command_line_the_checker_cannot_read_is_a_violation(tmp_path: Path, words: Any, says: str) -> None:
    """An unreadable command line must not turn off every check that reads it: it is named."""
    assert_found(findings(planted(tmp_path, CURRENT_RUN, _argv(words))), "run.argv", says)


def test_data_read_where_a_prepare_record_wrote_it_is_held_to_its_manifest(tmp_path: Path) -> None:
    """A manifest digest no record made would match nothing; the place decides the record."""
    made = ledger_record(PREPARE_RUN)["data"]["manifest_sha256"]
    run_dir = planted(
        tmp_path, CURRENT_RUN, lambda data, _dir: data["data"].update(manifest_sha256=OTHER_SHA)
    )
    found = findings(run_dir, RECORDS / PREPARE_RUN)
    assert_found(found, f"data.manifest_sha256 is {OTHER_SHA!r}, but the data it read at", repr(made))


def test_a_checkpoint_read_where_a_run_wrote_it_is_held_to_that_runs_weights(tmp_path: Path) -> None:
    """The memorization's measured checkpoint swapped for the DPO run's files."""
    other = ledger_record(DPO_RUN)["checkpoint"]["files"]
    run_dir = planted(tmp_path, MEMORIZATION_RUN, lambda data, _dir: data["checkpoint"].update(files=other))
    found = findings(run_dir, RECORDS / FINETUNE_RUN)
    assert_found(found, "checkpoint.files.model.safetensors is", f"(written by {FINETUNE_RUN!r})")


def test_a_parent_of_a_role_its_command_never_names_is_caught(tmp_path: Path) -> None:
    """An export's source parent renamed `init`, which the source checks pass over."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        data["lineage"]["parents"][0]["role"] = "init"

    assert_found(findings(planted(tmp_path, EXPORT_RUN, change)), "a parent of role 'init'", "never names")


@pytest.mark.parametrize(
    ("run", "field", "option"),
    [(DPO_RUN, ("init_from", "path"), "RUN_DIR|CKPT"), (ES_RUN, ("data_dir",), "--data")],
    ids=["dpo-policy", "es-data"],
)
def test_an_input_restated_otherwise_than_its_command_line_names_is_caught(
    tmp_path: Path, run: str, field: tuple[str, ...], option: str
) -> None:
    def change(data: dict[str, Any], _dir: Path) -> None:
        table = data["metrics"]
        for part in field[:-1]:
            table = table[part]
        table[field[-1]] = "/tmp/elsewhere/restated"

    found = findings(planted(tmp_path, run, change))
    assert_found(
        found, f"its metrics.{'.'.join(field)} is '/tmp/elsewhere/restated'", f"command line's {option}"
    )


def _fewer_tokens(data: dict[str, Any], run_dir: Path) -> None:
    """The token counts restated a quarter lower in eval.json and GATE-EVAL-003, the bits per
    byte with them, and the record re-derived."""
    path = run_dir / "eval.json"
    report = json.loads(path.read_text(encoding="utf-8"))
    tokens = report["tokens"] * 3 // 4
    report["tokens"], report["predicted_tokens"] = tokens, tokens - 1
    path.write_text(json.dumps(report), encoding="utf-8")
    measured = gate(data, "GATE-EVAL-003")["measured"]
    measured["tokens"], measured["scored_targets"], measured["predicted_tokens"] = (
        tokens,
        tokens - 1,
        tokens - 1,
    )
    measured["nll_nats"] = measured["loss"] * (tokens - 1)
    rederive(data, run_dir, rounds=4)


def _more_bytes_and_chars(data: dict[str, Any], _dir: Path) -> None:
    """The stored bytes and the characters of the scored file restated."""
    measured = gate(data, "GATE-EVAL-003")["measured"]
    measured["file_bytes"] += 1296
    measured["chars"] += 1296


def _another_documents_digest(data: dict[str, Any], _dir: Path) -> None:
    """Metrics.text_sha256 restated as another document's, the gate's digests left."""
    data["metrics"]["text_sha256"] = OTHER_SHA


def test_an_evaluations_token_counts_restated_are_derived_from_the_committed_text(tmp_path: Path) -> None:
    tokens = ledger_record(EVAL_RUN)["metrics"]["tokens"]
    found = findings(planted(tmp_path, EVAL_RUN, _fewer_tokens))
    assert_found(found, f"metrics.tokens is {tokens * 3 // 4}, but", f"is {tokens} token(s)")
    assert_found(
        found, "gates[GATE-EVAL-003].measured.scored_targets is", f"is {tokens - 1} token(s) after the first"
    )


def test_an_evaluations_stored_bytes_and_characters_restated_are_caught(tmp_path: Path) -> None:
    measured = gate(ledger_record(EVAL_RUN), "GATE-EVAL-003")["measured"]
    found = findings(planted(tmp_path, EVAL_RUN, _more_bytes_and_chars))
    assert_found(
        found, f"measured.file_bytes is {measured['file_bytes'] + 1296}", f"holds {measured['file_bytes']}"
    )
    assert_found(
        found, f"measured.chars is {measured['chars'] + 1296}", f"holds {measured['chars']} characters"
    )


def test_an_evaluations_text_digest_restated_is_caught(tmp_path: Path) -> None:
    found = findings(planted(tmp_path, EVAL_RUN, _another_documents_digest))
    assert_found(found, f"metrics.text_sha256 is {OTHER_SHA!r}, but GATE-EVAL-003 judged the text")


def test_a_dirty_evaluation_of_another_text_than_the_committed_file_is_named(
    tmp_path: Path,
) -> None:
    """A dirty tree may have edited the file it scored: where every digest it states names another
    text than the committed file, its counts are not derived, and a warning says so (never silence)."""

    def change(data: dict[str, Any], _dir: Path) -> None:
        assert data["code"]["git_dirty"]
        data["metrics"]["text_sha256"] = OTHER_SHA
        gate(data, "GATE-EVAL-003")["measured"].update(file_sha256=OTHER_SHA, text_sha256=OTHER_SHA)

    run_dir = planted(tmp_path, EVAL_RUN, change)
    warnings = [f.line() for f in run_checks(ROOT, [run_dir], runs_only=True).warnings]
    assert_found(warnings, f"not the {OTHER_SHA} it states it scored", "is not derived")


@pytest.mark.parametrize("run", [SAMPLE_RUN, EVAL_RUN], ids=["sample", "eval"])
def test_the_tokenizer_of_a_committed_model_read_restated_is_caught(tmp_path: Path, run: str) -> None:
    found = findings(
        planted(tmp_path, run, lambda data, _dir: data["data"].update(tokenizer_sha256=OTHER_SHA))
    )
    assert_found(found, f"data.tokenizer_sha256 is {OTHER_SHA!r}, but the tokenizer of", "as committed")


def test_the_step_of_a_committed_model_read_restated_is_caught(tmp_path: Path) -> None:
    """The sample's checkpoint step restated."""
    step = ledger_record(SAMPLE_RUN)["checkpoint"]["step"]
    found = findings(
        planted(tmp_path, SAMPLE_RUN, lambda data, _dir: data["checkpoint"].update(step=step - 200))
    )
    assert_found(found, f"checkpoint.step is {step - 200}, but", f"as committed, has {step}")


@pytest.mark.parametrize(
    "runs",
    [
        (CURRENT_RUN, PREPARE_RUN),
        (MEMORIZATION_RUN, FINETUNE_RUN),
        (EXPORT_RUN,),
        (DPO_RUN,),
        (ES_RUN,),
        (EVAL_RUN,),
        (SAMPLE_RUN,),
    ],
    ids=lambda runs: "+".join(runs),
)
def test_the_records_as_filed_pass(tmp_path: Path, runs: tuple[str, ...]) -> None:
    copied = planted(tmp_path, runs[0], lambda _data, _dir: None)
    assert findings(copied, *(RECORDS / run for run in runs[1:])) == []
