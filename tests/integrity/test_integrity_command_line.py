"""Tamperings the checker derives from
what a record's own artifacts, its command line, its committed model or the repository at its commit
hold: each is planted in a copy of a committed record, finished by a
perfect forger where the field is derived (every field the artifacts derive re-derived, every verdict
re-judged, every artifact re-hashed), and the integrity check must name it; the copies as filed pass.

Tests are prefixed by the area of the branch that added them (tune_, es_, surgery_, sample_, trace_,
patch_, lens_, prepare_, eval_, export_).

- a memorization's GATE-TRAIN-005 draws restated (both rows continue every example for the
  continuation's length, memorization.json);
- a memorization's base_checkpoint restated (its --base, resolved by run.places);
- a sample's GATE-TRAIN-005 probe_draws restated (PROBE_ROWS × PROBE_TOKENS at its commit);
- a quantization's HQQ optimiser settings restated (HalfQuadratic's defaults at its commit);
- an ES run's batch_size and workers restated with no option given (EsSettings' defaults
  at its commit, its parser declaring none);
- a LASER run's GATE-LASER-001 elements restated (the listed matrices in its source model);
- an ES run's GATE-ES-004 angle and GATE-ES-002 smallest noise norm restated (the
  planted case and the member seeds' noise, contracts.es_noise);
- a CPU-only torch build's record restated as a CUDA run (env against itself);
- trace: a site's shape and count restated (layers.0.k 128 wide, a model without grouped-query
  attention; the checkpoint's [model] table decides every site's width, contracts.selection.site_widths);
  a path's dtype restated against --dtype, every traced site against its path's dtype; the
  table's statistic restated against trace.json's;
- patch: config.foil restated with no --foil given (trace.json's metric keeps the foil it scored);
- lens: the read position restated against trace.json's.
- prepare: a text prepare split with seed 0 where `--seed 3` was asked, a fine-tuning prepare
  cut at 0.1 where `--val-fraction 0.3` was asked: config.seed and config.val_fraction are the
  manifest's draw and the command line's options.
- eval: config.seq_len restated (the committed model's context); GATE-EVAL-003's scored and
  predicted position digests restated alike (contracts.likelihood.predicted_positions_sha256
  of the token count); a `--text` word that reaches into the checkout from above it (`repo/README.md`
  from the clone's parent) is held to the file its commit holds, not flagged as missing.
- export: export.json's source config digest and tokenizer summary restated (the committed
  checkpoint's config and tokenizer); its argv held to run.argv (both name the same line).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

import stack.data.prepare as prepare_module
import stack.data.sft_prepare as sft_prepare_module
from contracts.likelihood import predicted_positions_sha256
from tests.support.ledger_support import (
    ES_RUN,
    EXPORT_RUN,
    FINETUNE_RUN,
    LASER_RUN,
    LENS_RUN,
    MEMORIZATION_RUN,
    PATCH_RUN,
    QUANTIZE_RUN,
    RECORDS,
    SAMPLE_RUN,
    TRACE_RUN,
    Change,
    assert_found,
    findings,
    forger_finished,
    gate,
    planted,
    rederive,
)
from tests.support.paths import DATA
from tests.support.prepare_support import run_cli, text_docs, write_docs


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def test_tune_memorization_draws_restated_are_caught(tmp_path: Path) -> None:
    """GATE-TRAIN-005's draws halved; memorization.json's examples × continuation × 2 rows say
    otherwise (a derived field: the forger's finish puts it back)."""

    def halve(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-TRAIN-005")["measured"]["draws"] //= 2

    report = json.loads((RECORDS / MEMORIZATION_RUN / "memorization.json").read_text(encoding="utf-8"))
    draws = 2 * len(report["examples"]) * report["continuation"]
    found = findings(planted(tmp_path, MEMORIZATION_RUN, halve))
    assert_found(found, f"gates[GATE-TRAIN-005].measured.draws is {draws // 2}", f"derive {draws}")
    # a forger who re-derives every field the artifacts decide restores it
    restored = json.loads(
        (planted(tmp_path / "forged", MEMORIZATION_RUN, forger_finished(halve)) / "metadata.json").read_text()
    )
    assert gate(restored, "GATE-TRAIN-005")["measured"]["draws"] == draws


def test_tune_memorization_base_checkpoint_restated_is_caught(tmp_path: Path) -> None:
    """Metrics.base_checkpoint re-pointed to another model directory than --base names."""

    def repoint(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["base_checkpoint"] = str(
            Path(data["metrics"]["base_checkpoint"]).parent / "other-0.1.0"
        )

    found = findings(planted(tmp_path, MEMORIZATION_RUN, forger_finished(repoint)))
    assert_found(found, "metrics.base_checkpoint is", "--base names")


def test_sample_probe_draws_restated_are_caught(tmp_path: Path) -> None:
    """GATE-TRAIN-005's probe_draws quadrupled; the spread probe's constants at the commit say
    otherwise."""

    def quadruple(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-TRAIN-005")["measured"]["probe_draws"] *= 4

    found = findings(planted(tmp_path, SAMPLE_RUN, forger_finished(quadruple)))
    assert_found(found, "probe_draws is", "PROBE_ROWS", "at its commit")


def test_surgery_hqq_optimiser_restated_is_caught(tmp_path: Path) -> None:
    """The HQQ optimiser's iterations restated in the record and surgery.json alike."""

    def more_iters(data: dict[str, Any], run_dir: Path) -> None:
        data["metrics"]["optimiser"]["iters"] += 30
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        report["measured"]["optimiser"]["iters"] += 30
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    found = findings(planted(tmp_path, QUANTIZE_RUN, forger_finished(more_iters)))
    assert_found(found, "metrics.optimiser is", "HalfQuadratic", "at its commit")


def test_surgery_laser_elements_restated_are_caught(tmp_path: Path) -> None:
    """GATE-LASER-001's element count restated in the record and surgery.json alike; the listed
    matrices' shapes in the committed source model say otherwise."""

    def more(data: dict[str, Any], run_dir: Path) -> None:
        gate(data, "GATE-LASER-001")["measured"]["elements"] += 1000
        path = run_dir / "surgery.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        report["gates"]["GATE-LASER-001"]["elements"] += 1000
        path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")

    found = findings(planted(tmp_path, LASER_RUN, forger_finished(more)))
    assert_found(found, "GATE-LASER-001's elements is", "weights in its source model")


@pytest.mark.parametrize("key", ["batch_size", "workers"], ids=["batch-size", "workers"])
def test_es_a_setting_no_option_gave_restated_is_caught(tmp_path: Path, key: str) -> None:
    """A setting `stack es` was given no option for, restated; EsSettings' default at the
    commit decides it (the es parser's defaults are None)."""
    assert not any(word == f"--{key.replace('_', '-')}" for word in _record(ES_RUN)["run"]["argv"])

    def doubled(data: dict[str, Any], _dir: Path) -> None:
        data["config"][key] *= 2

    found = findings(planted(tmp_path, ES_RUN, forger_finished(doubled)))
    assert_found(found, f"config.{key} is", "EsSettings' default", "at its commit")


def test_es_a_self_test_angle_restated_within_the_threshold_is_caught(tmp_path: Path) -> None:
    """GATE-ES-004's angle restated as a better self-test; contracts.es_noise's planted case,
    from the run's seed and the gate's thresholds, gives the angle (a derived field: the forger's
    finish puts it back)."""
    angle = gate(_record(ES_RUN), "GATE-ES-004")["measured"]["angle_degrees"]

    def better(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-ES-004")["measured"]["angle_degrees"] = angle / 2

    assert_found(findings(planted(tmp_path, ES_RUN, better)), "angle_degrees is", f"derive {angle}")
    forged = planted(tmp_path / "forged", ES_RUN, forger_finished(better))
    assert (
        gate(json.loads((forged / "metadata.json").read_text()), "GATE-ES-004")["measured"]["angle_degrees"]
        == angle
    )


def test_es_a_noise_norm_restated_is_caught(tmp_path: Path) -> None:
    """GATE-ES-002's smallest noise norm restated; the member seeds' noise over the source model's
    parameters gives it."""

    def larger(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-ES-002")["measured"]["min_noise_norm"] *= 1.5

    found = findings(planted(tmp_path, ES_RUN, forger_finished(larger)))
    assert_found(found, "min_noise_norm is", "has the smallest norm")


def test_tune_a_cpu_only_build_restated_as_a_cuda_run_is_caught(tmp_path: Path) -> None:
    """Env restated as a CUDA run beside its own CPU-only torch build."""
    assert _record(FINETUNE_RUN)["env"]["torch"].endswith("+cpu")

    def on_cuda(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(device="cuda", cuda="12.4")

    found = findings(planted(tmp_path, FINETUNE_RUN, forger_finished(on_cuda)))
    assert_found(found, "env.device is 'cuda'", "CPU-only build")
    assert_found(found, "env.cuda is '12.4'", "CPU-only build")


@pytest.mark.parametrize("run", [MEMORIZATION_RUN, SAMPLE_RUN, QUANTIZE_RUN, ES_RUN, FINETUNE_RUN, LASER_RUN])
def test_tune_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda *_: None)) == []


def _report_edited(edit: Any) -> Change:
    """trace.json changed by `edit`, and the record re-derived from it by a perfect forger."""

    def plant(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "trace.json"
        report = json.loads(path.read_text(encoding="utf-8"))
        edit(report, data)
        path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf-8")

    return forger_finished(plant)


def _site(report: dict[str, Any], name: str) -> dict[str, Any]:
    return next(site for site in report["trace"]["sites"] if site["name"] == name)


def test_trace_site_widened_against_the_checkpoints_shapes_is_caught(tmp_path: Path) -> None:
    """Layers.0.k restated as wide as q (shape and count), as a model without grouped-query
    attention would trace it; the checkpoint's [model] table makes k n_kv_heads × head_dim wide."""

    def widen(report: dict[str, Any], _data: dict[str, Any]) -> None:
        k, q = _site(report, "layers.0.k"), _site(report, "layers.0.q")
        assert k["shape"] != q["shape"]
        k["shape"], k["stats"]["count"] = q["shape"], q["stats"]["count"]

    found = findings(planted(tmp_path, TRACE_RUN, _report_edited(widen)))
    assert_found(found, "site layers.0.k is", "but its checkpoint's model makes it")


def test_trace_path_dtype_restated_against_its_sites_and_command_line_is_caught(tmp_path: Path) -> None:
    """Seen from the ledger: a path described in bf16 whose sites hold float32 (the forward ran
    in fp32), and a command line's --dtype bf16 against a path described in fp32."""

    def as_bf16(report: dict[str, Any], _data: dict[str, Any]) -> None:
        report["paths"]["A"] = report["paths"]["A"].replace("fp32)", "bf16)")

    found = findings(planted(tmp_path / "sites", TRACE_RUN, _report_edited(as_bf16)))
    assert_found(found, "trace.json: the trace trace's sites hold float32", "is bfloat16")

    def asked_bf16(data: dict[str, Any], _dir: Path) -> None:
        data["run"]["argv"] += ["--dtype", "bf16"]

    found = findings(planted(tmp_path / "argv", TRACE_RUN, forger_finished(asked_bf16)))
    assert_found(found, "config.path_a is", "but its command line gives --dtype bf16")


def test_trace_statistic_restated_against_trace_json_is_caught(tmp_path: Path) -> None:
    """Seen from the ledger: trace.json names the table's statistic (from 1.32.0); config.stat
    restates it, and a record that says absmax where the table showed std is caught."""

    def shown(report: dict[str, Any], _data: dict[str, Any]) -> None:
        report["stat"] = "std"

    def claimed(data: dict[str, Any], _dir: Path) -> None:
        data["config"]["stat"] = "absmax"

    found = findings(planted(tmp_path, TRACE_RUN, _then(_report_edited(shown), claimed)))
    assert_found(found, "config.stat is", "absmax", "derive", "std")


def _then(first: Change, second: Change) -> Change:
    def change(data: dict[str, Any], run_dir: Path) -> None:
        first(data, run_dir)
        second(data, run_dir)

    return change


def test_patch_foil_restated_without_a_foil_option_is_caught(tmp_path: Path) -> None:
    """Config.foil set to a token id where the command line gives no --foil and trace.json's
    metric scored log p of the target (foil null)."""
    record = json.loads((RECORDS / PATCH_RUN / "metadata.json").read_text(encoding="utf-8"))
    assert record["config"]["foil"] is None and "--foil" not in record["run"]["argv"]
    found = findings(planted(tmp_path, PATCH_RUN, lambda data, _dir: data["config"].update(foil=101)))
    assert_found(found, "config.foil is 101", "its command line gives no --foil")
    assert_found(found, "config.foil")


def test_lens_position_restated_against_trace_json_is_caught(tmp_path: Path) -> None:
    """Seen from the ledger: a lens reading's config.position (from 1.32.0) is the position its
    readings were taken at, trace.json's."""
    position = json.loads((RECORDS / LENS_RUN / "trace.json").read_text(encoding="utf-8"))["position"]
    found = findings(
        planted(tmp_path, LENS_RUN, lambda data, _dir: data["config"].update(position=position - 1))
    )
    assert_found(found, f"config.position is {position - 1}", str(position))


CHAT = DATA / "chat_small.jsonl"
# `stack eval` of release 0.2.0 (by its repository path) on a committed file, a clean tree.
EVAL_RUN = "current/eval"
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
    """Planted: the text path draws the split with seed 0 whatever --seed says."""
    monkeypatch.setattr(prepare_module, "prepare_corpus", _forced(prepare_module.prepare_corpus, seed=0))
    found = findings(_text_prepare(capsys, tmp_path))
    assert any("config.seed is 3, but its artifacts derive 0" in line for line in found), found


def test_prepare_sft_cut_at_another_share_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the fine-tuning path holds out a share of 0.1 whatever --val-fraction says."""
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
    """Eval has no --seq-len; its windows are the committed model's context."""
    ctx = json.loads((RECORDS / EVAL_RUN / "metadata.json").read_text())["config"]["seq_len"]

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        data["config"]["seq_len"] = 2 * ctx
        rederive(data, run_dir, rounds=4)

    found = findings(planted(tmp_path, EVAL_RUN, restated))
    assert any(
        f"config.seq_len is {2 * ctx}, but" in line and f"context of {ctx}" in line for line in found
    ), found


def test_eval_position_digests_restated_alike_are_caught(tmp_path: Path) -> None:
    """The two digests agree with each other, not with the positions 1..N−1 of the text's tokens."""

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
    """Once falsely flagged: `stack eval ... --text repo/README.md`, run from the
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
    """What export.json says of the committed checkpoint it read, against the checkpoint."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        _export_json(run_dir, change)
        rederive(data, run_dir, rounds=4)

    found = findings(planted(tmp_path, EXPORT_RUN, restated))
    assert any(fragment in line for line in found), found


def test_export_argv_is_held_to_the_run_argv(tmp_path: Path) -> None:
    """Export.json's argv is the run's command line (stack/cli/export.py hands both the same)."""

    def restated(data: dict[str, Any], run_dir: Path) -> None:
        _export_json(run_dir, lambda r: r["argv"].__setitem__(r["argv"].index("--out") + 1, "/tmp/elsewhere"))

    found = findings(planted(tmp_path, EXPORT_RUN, restated))
    assert any(line.endswith("run.argv") or "run.argv" in line for line in found), found
