"""Round-8 audits (2026-11-26): settings a command used that its record did not hold to its command
line or to the artifact they decide, and record fields an artifact or the committed model decides
that nothing derived again. Each case is planted through the command's real path (the audit's
mutant monkeypatched in) or in a copy of a committed record as a perfect forger finishes it (every
field the artifacts derive re-derived, every verdict re-judged, every artifact re-hashed); the
integrity check must name it, and the honest record passes.

- prepare: a text prepare split with seed 0 where `--seed 3` was asked (R99), a fine-tuning prepare
  cut at 0.1 where `--val-fraction 0.3` was asked (R91): config.seed and config.val_fraction are the
  manifest's draw and the command line's options.
- eval: config.seq_len restated (W08: the committed model's context); GATE-EVAL-003's scored and
  predicted position digests restated alike (W81: contracts.likelihood.predicted_positions_sha256
  of the token count); a `--text` word that reaches into the checkout from above it (`repo/README.md`
  from the clone's parent) is held to the file its commit holds, not flagged as missing.
- export: export.json's source config digest and tokenizer summary restated (W09, W12: the committed
  checkpoint's config and tokenizer); its argv held to run.argv (W11: both name the same line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from ledger_support import findings, gate, planted, rederive
from test_data_prepare import run_cli, text_docs, write_docs
from test_integrity_round5 import EXPORT_RUN

import stack.data.prepare as prepare_module
import stack.data.sft_prepare as sft_prepare_module
from contracts.likelihood import predicted_positions_sha256

CHAT = Path(__file__).parent / "data" / "chat_small.jsonl"
# `stack eval` of release 0.2.0 (by its repository path) on a committed file, a clean tree.
EVAL_RUN = "eval-20261126T024242"
FORGED = "f" * 64


def _forced(function: Any, **kept: Any) -> Any:
    """`function` with the keyword arguments `kept` put in place of the ones it is handed (the mutant)."""

    def forced(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **{**kwargs, **kept})

    return forced


def _prepared(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> Path:
    """The record a `stack prepare ARGV --evidence-dir` files (it completes)."""
    ledger = tmp_path / "ledger"
    assert (
        run_cli(capsys, "prepare", *argv, "--out", str(tmp_path / "d"), "--evidence-dir", str(ledger))[0] == 0
    )
    (record,) = ledger.iterdir()
    return record


def _text_prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    corpus = write_docs(tmp_path / "in", text_docs(40))
    return _prepared(capsys, tmp_path, str(corpus), "--val-fraction", "0.5", "--seed", "3")


def _chat_prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> Path:
    argv = ("--format", "chat", "--pack-len", "96", "--val-fraction", "0.3")
    return _prepared(capsys, tmp_path, str(CHAT), *argv)


def test_prepare_records_the_split_draw_it_was_asked(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Both prepare paths state the seed and val_fraction in their config, and the honest records pass."""
    for make, where in ((_text_prepare, "text"), (_chat_prepare, "chat")):
        record = make(capsys, tmp_path / where)
        config = json.loads((record / "metadata.json").read_text())["config"]
        assert {key: config[key] for key in ("seed", "val_fraction")} == (
            {"seed": 3, "val_fraction": 0.5} if where == "text" else {"seed": 0, "val_fraction": 0.3}
        )
        assert findings(record) == []


def test_prepare_split_with_another_seed_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R99: the text path draws the split with seed 0 whatever --seed says."""
    monkeypatch.setattr(prepare_module, "prepare_corpus", _forced(prepare_module.prepare_corpus, seed=0))
    found = findings(_text_prepare(capsys, tmp_path))
    assert any("config.seed is 3, but its artifacts derive 0" in line for line in found), found


def test_prepare_sft_cut_at_another_share_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """R91: the fine-tuning path holds out a share of 0.1 whatever --val-fraction says."""
    monkeypatch.setattr(
        sft_prepare_module, "prepare_sft", _forced(sft_prepare_module.prepare_sft, val_fraction=0.1)
    )
    found = findings(_chat_prepare(capsys, tmp_path))
    assert any("config.val_fraction is 0.3, but its artifacts derive 0.1" in line for line in found), found


@pytest.mark.parametrize(("key", "value"), [("seed", 4), ("val_fraction", 0.25)])
def test_prepare_config_restated_against_its_command_line_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, key: str, value: float
) -> None:
    """A config that states the draw the manifest keeps but not the one the command line asked for."""
    record = _text_prepare(capsys, tmp_path)
    path = record / "metadata.json"
    data = json.loads(path.read_text())
    data["config"][key] = value
    path.write_text(json.dumps(data))
    found = findings(record)
    assert any(f"config.{key} is {value}, but its command line gives" in line for line in found), found


def test_prepare_config_that_leaves_the_draw_out_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Fail closed: a prepare record of this spec that states no seed is named, not passed."""
    record = _text_prepare(capsys, tmp_path)
    path = record / "metadata.json"
    data = json.loads(path.read_text())
    del data["config"]["seed"]
    path.write_text(json.dumps(data))
    found = findings(record)
    assert any("config states no seed" in line for line in found), found


def _export_json(run_dir: Path, change: Any) -> None:
    path = run_dir / "export.json"
    report = json.loads(path.read_text())
    change(report)
    path.write_text(json.dumps(report, indent=2) + "\n")


def test_eval_seq_len_restated_is_caught(tmp_path: Path) -> None:
    """W08: eval has no --seq-len; its windows are the committed model's context."""
    ctx = json.loads(
        (Path(__file__).parent.parent / "evidence/runs" / EVAL_RUN / "metadata.json").read_text()
    )["config"]["seq_len"]

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        data["config"]["seq_len"] = 2 * ctx
        rederive(data, run_dir, rounds=4)

    found = findings(planted(tmp_path, EVAL_RUN, restated))
    assert any(
        f"config.seq_len is {2 * ctx}, but" in line and f"context of {ctx}" in line for line in found
    ), found


def test_eval_position_digests_restated_alike_are_caught(tmp_path: Path) -> None:
    """W81: the two digests agree with each other, not with the positions 1..N−1 of the text's tokens."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        gate(data, "GATE-EVAL-003")["measured"].update(
            scored_positions_sha256=FORGED, predicted_positions_sha256=FORGED
        )

    found = findings(planted(tmp_path, EVAL_RUN, restated))
    tokens = gate(json.loads((tmp_path / EVAL_RUN / "metadata.json").read_text()), "GATE-EVAL-003")[
        "measured"
    ]["tokens"]
    want = predicted_positions_sha256(tokens)
    assert any("predicted_positions_sha256" in line and want[:12] in line for line in found), found

    def forged(data: dict[str, Any], run_dir: Path) -> None:
        restated(data, run_dir)
        rederive(data, run_dir, rounds=4)  # a perfect forger's finish can only put the true digests back
        measured = gate(data, "GATE-EVAL-003")["measured"]
        assert measured["scored_positions_sha256"] == measured["predicted_positions_sha256"] == want

    assert findings(planted(tmp_path / "forged", EVAL_RUN, forged)) == []


def _text_word_from_above(data: dict[str, Any]) -> str:
    """The record's --text word as a run started in the checkout's parent spells it (CLONE/PATH): the
    checkout is where the checkpoint word, a repository path, resolved below."""
    argv, places = data["run"]["argv"], data["run"]["places"]
    at = argv.index("--text") + 1
    model = argv[2]
    checkout = Path(places[model]).parents[len(Path(model).parts) - 1]
    word = str(Path(checkout.name) / Path(places[argv[at]]).relative_to(checkout))
    data["run"]["places"] = {
        (word if key == argv[at] else key): value for key, value in data["run"]["places"].items()
    }
    argv[at] = word
    return word


def test_eval_text_named_from_above_the_checkout_is_held_to_its_file(tmp_path: Path) -> None:
    """The round-8 mutation audit's false flag: `stack eval ... --text repo/README.md`, run from the
    clone's parent, is the repository's README.md; the honest record passes, a restated count not."""

    def from_above(data: dict[str, Any], run_dir: Path) -> None:
        _text_word_from_above(data)

    assert findings(planted(tmp_path / "honest", EVAL_RUN, from_above)) == []

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        _text_word_from_above(data)
        data["metrics"]["tokens"] -= 1

    found = findings(planted(tmp_path / "restated", EVAL_RUN, restated))
    assert any("metrics.tokens is" in line and "token(s) as the tokenizer of" in line for line in found), (
        found
    )


@pytest.mark.parametrize(
    ("change", "fragment"),
    [
        (lambda r: r["source_checkpoint"].update(config_sha256=FORGED), "source_checkpoint.config_sha256 is"),
        (
            lambda r: r["tokenizer"].update(vocab_size=r["tokenizer"]["vocab_size"] + 1),
            "tokenizer states vocab_size",
        ),
    ],
    ids=["config_sha256", "vocab_size"],
)
def test_export_source_restated_is_caught(tmp_path: Path, change: Any, fragment: str) -> None:
    """W09, W12: what export.json says of the committed checkpoint it read, against the checkpoint."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        _export_json(run_dir, change)
        rederive(data, run_dir, rounds=4)

    found = findings(planted(tmp_path, EXPORT_RUN, restated))
    assert any(fragment in line for line in found), found


def test_export_argv_is_held_to_the_run_argv(tmp_path: Path) -> None:
    """W11: export.json's argv is the run's command line (stack/cli/export.py hands both the same)."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        _export_json(run_dir, lambda r: r["argv"].__setitem__(r["argv"].index("--out") + 1, "/tmp/elsewhere"))

    found = findings(planted(tmp_path, EXPORT_RUN, restated))
    assert any(line.endswith("run.argv") or "run.argv" in line for line in found), found
