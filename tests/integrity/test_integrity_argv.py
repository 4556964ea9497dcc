"""Falsifiers of what a record's command lines name (tools/argv_record.py).

A record keeps its command lines and, from spec 1.22.0 on, the place each word naming a file or
directory resolved to where the run started (`run.places`). A forger who edits what the record
says the command used (a surgery's bits, an export's int8, a trace's prompt, a parent model, a
training run's data directory, starting model or run id) and re-derives everything else is
caught by the command line, which says otherwise.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest

from contracts.evidence import EVIDENCE_FILE, canonical_sha256, read_evidence
from stack.cli import dpo as dpo_cli
from stack.cli import main, tune_options
from tests.support.ledger_support import assert_caught, edited, findings, planted, rederive
from tests.support.prefs_support import prepared_pairs
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.settings.argv_record import same_place

QUICK = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]


def _config_set(key: str, value: Any) -> Any:
    """A record's config key set to `value`, its digest made to agree."""

    def change(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"][key] = value
        data["config_sha256"] = canonical_sha256(data["config"])

    return change


GIVES = "but its command line gives"


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("run", "key", "value", "found"),
    [
        ("quantize-20261122T145535", "bits", 8, f"config.bits is 8, {GIVES} 4"),
        ("laser-20261122T145455", "rho", 0.9, f"config.rho is 0.9, {GIVES} 0.5"),
        ("export-hf-20261122T172052", "int8", True, f"config.int8 is True, {GIVES} False"),
        (
            "trace-20261122T114524",
            "prompt",
            "def f():",
            f"config.prompt is 'def f():', {GIVES} 'def main():'",
        ),
        (
            "laser-20261122T145455",
            "source",
            "evidence/models/another-0.1.0",
            "config.source is 'evidence/models/another-0.1.0', which none of its command line's words names",
        ),
    ],
    ids=["quantize-bits", "laser-rho", "export-int8-flag-left-off", "trace-prompt", "laser-source"],
)
def test_a_command_option_edited_in_the_config_is_caught(
    tmp_path: Path, run: str, key: str, value: Any, found: str
) -> None:
    assert_caught(planted(tmp_path, run, _config_set(key, value)), found)


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("recorded", "word", "places", "named"),
    [
        ("/w/runs/base/checkpoints/step-0000020", "runs/base", {}, True),  # a run names its checkpoint
        ("/w/runs/base", "/w/runs/base/", {}, True),
        ("/w/runs/base2", "runs/base", {}, False),
        ("/w/runs/base", "/w/runs", {}, True),  # lies under it
        ("/w/other/base", "/w/runs/base", {}, False),
        ("/w/runs/run-7", "latest", {"latest": "/w/runs/run-7"}, True),  # a link resolved where it ran
        ("/w/runs/run-6", "latest", {"latest": "/w/runs/run-7"}, False),
        ("/w/runs/base", "../runs/base", {}, True),  # '..' cannot be followed without the directory
    ],
)
def test_a_recorded_path_is_the_place_a_word_names(
    recorded: str, word: str, places: dict[str, str], named: bool
) -> None:
    assert same_place(recorded, word, places) is named


@pytest.fixture(scope="module")
def family(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """Two smoke runs, and a fine-tune of the first started through a link to it (its record's
    places resolve the link)."""
    root = tmp_path_factory.mktemp("family")
    data = prepared(root)
    for name in ("base", "other"):
        assert train(smoke_args(data, root / name, *QUICK)) == 0
    os.symlink(root / "base", root / "latest")
    tuned = root / "tuned"
    argv = ["train", "--init-from", str(root / "latest"), "--data", str(data), "--out", str(tuned)]
    assert train([*argv, *(f"--set={s}" for s in [*QUICK, "train.batch_size=4"])]) == 0
    return {"data": data, "base": root / "base", "other": root / "other", "tuned": tuned, "root": root}


@pytest.mark.holds("GATE-INTEG-001")
def test_a_run_started_through_a_link_records_where_it_led(family: dict[str, Path]) -> None:
    record = read_evidence(family["tuned"] / EVIDENCE_FILE)
    assert record.run.places is not None
    assert record.run.places[str(family["root"] / "latest")] == str(family["base"].resolve())
    assert findings(family["tuned"], family["base"]) == []


def _repointed(family: dict[str, Path]) -> Any:
    """The fine-tune's lineage and starting model repointed to the other run, whose record vouches
    for the weights named (a forger who picked a real record)."""
    other = read_evidence(family["other"] / EVIDENCE_FILE)

    def change(data: dict[str, Any], run_dir: Path) -> None:
        parent = data["lineage"]["parents"][0]
        assert other.checkpoint is not None
        parent.update(
            run=other.run.id,
            path=str(family["other"].resolve()),
            checkpoint_sha256=other.checkpoint.files["model.safetensors"].sha256,
        )
        rederive(data, run_dir)

    return change


@pytest.mark.gate("GATE-INTEG-001")
def test_a_parent_repointed_to_another_real_record_is_caught(family: dict[str, Path], tmp_path: Path) -> None:
    copy = Path(shutil.copytree(family["tuned"], tmp_path / "tuned"))
    edited(copy, _repointed(family))
    assert_caught(
        copy, f"its init parent lies at {family['other'].resolve()}, which none of its command lines names"
    )


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("field", "flag"),
    [(("data_dir",), "--data"), (("init_from", "path"), "--init-from")],
    ids=["data-dir", "init-from"],
)
def test_a_training_runs_stated_input_edited_is_caught(
    family: dict[str, Path], tmp_path: Path, field: tuple[str, ...], flag: str
) -> None:
    copy = Path(shutil.copytree(family["tuned"], tmp_path / "tuned"))
    elsewhere = str(family["other"].resolve())

    def change(data: dict[str, Any], run_dir: Path) -> None:
        target = data["metrics"]
        for part in field[:-1]:
            target = target[part]
        target[field[-1]] = elsewhere
        rederive(data, run_dir)

    edited(copy, change)
    assert_caught(
        copy, f"its metrics.{'.'.join(field)} is {elsewhere!r}, but its command line's {flag} names"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_training_run_renamed_is_caught(family: dict[str, Path], tmp_path: Path) -> None:
    """The run id and its directory renamed (a 2-step run passed off as a longer one)."""
    copy = Path(shutil.copytree(family["base"], tmp_path / "base-long"))

    def change(data: dict[str, Any], run_dir: Path) -> None:
        data["run"]["id"] = "base-long"
        rederive(data, run_dir)

    edited(copy, change)
    assert_caught(copy, "run.id is 'base-long', but its command line writes the run directory")


@pytest.fixture(scope="module")
def pairs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A small saved model (context 64) and preference pairs for it."""
    root = tmp_path_factory.mktemp("pairs")
    return {"source": save_run(root / "source", tiny_model(ctx=64)), "data": prepared_pairs(root)}


def _dpo(pairs: dict[str, Path], out: Path, *options: str) -> int:
    argv = ["dpo", str(pairs["source"]), "--data", str(pairs["data"]), "--out", str(out), "--steps", "2"]
    return main([*argv, "--batch-size", "1", "--device", "cpu", *options])


@pytest.mark.holds("GATE-INTEG-001")
def test_a_dpo_run_holds_every_option_it_was_given(pairs: dict[str, Path], tmp_path: Path) -> None:
    assert _dpo(pairs, tmp_path / "dpo", "--beta", "0.2", "--label-noise", "0.1", "--lr", "0.002") == 0
    assert findings(tmp_path / "dpo") == []


@pytest.mark.gate("GATE-INTEG-001")
def test_an_option_the_commands_table_drops_is_caught_by_its_name(
    pairs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`stack dpo`'s table of keys loses --label-noise: the run trains with ε = 0
    and the config rebuild, which resolves the command line through that same table, agrees with
    it. The option is found by its name in config.toml, or not at all."""
    monkeypatch.setattr(dpo_cli, "DPO_KEYS", {"beta": "dpo.beta"})
    assert _dpo(pairs, tmp_path / "dpo", "--label-noise", "0.1") == 0
    assert_caught(
        tmp_path / "dpo", "its command line gives label_noise=0.1, but config.toml holds no label_noise"
    )


@pytest.mark.gate("GATE-INTEG-001")
def test_a_tuning_run_whose_rate_decays_is_caught(
    pairs: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: --lr that does not set the floor of the schedule: the rate decays, which the
    tuning commands promise it does not."""
    monkeypatch.setitem(tune_options.LOOP_KEYS, "lr", ("train.lr",))
    assert _dpo(pairs, tmp_path / "dpo", "--lr", "0.002") == 0
    assert_caught(
        tmp_path / "dpo", "a dpo run's learning rate is constant after its warmup, but config.toml holds"
    )


@pytest.mark.holds("GATE-INTEG-001")
def test_a_resumed_leg_filed_in_a_ledger_keeps_its_runs_name(tmp_path: Path) -> None:
    """A resume filed with --evidence-dir is the leg `run-leg2` of the run its command line names,
    and the run-id check takes it as such."""
    ledger, run = tmp_path / "ledger", tmp_path / "run"
    assert train([*smoke_args(prepared(tmp_path), run, *QUICK), "--evidence-dir", str(ledger)]) == 0
    resume = ["train", "--resume", str(run), "--set", "train.steps=4", "--evidence-dir", str(ledger)]
    assert train(resume) == 0
    assert sorted(p.name for p in ledger.iterdir()) == ["run", "run-leg2"]
    assert findings(ledger / "run-leg2", ledger / "run") == []
