"""Falsifiers of the config rebuild: a pretraining record's config.toml edited where no `--set` reaches.

The record's command lines name a preset and a few `--set` keys; every other key of config.toml
is the preset's or a default. A forger who edits one of those (an initialisation scale, an
optimizer constant, early stopping, wrapping, a bandit's rate) and re-derives the record from the
edited file leaves the command lines as they were, which `tools/config_rebuild.py` resolves again
with the stack's own parser and `resolve`.
"""

from __future__ import annotations

import inspect
import shutil
import tomllib
import typing
from pathlib import Path

import pytest
from pydantic import BaseModel

import stack.cli.train
import stack.cli.values
from contracts.evidence import EVIDENCE_FILE, read_evidence
from stack.cli import main
from stack.train import presets, tune_settings
from stack.train.config import RunConfig, resolve
from tests.support.ledger_support import (
    CURRENT_RUN,
    RECORDS,
    assert_caught,
    config_edited,
    edited,
    findings,
    planted,
)
from tests.support.paths import DATA
from tests.support.prefs_support import prepared_pairs
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.settings.config_rebuild import CONFIG_CODE, REPO, rebuilt

CHAT = DATA / "chat_small.jsonl"


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("key", "old", "new"),
    [
        ("model.init_std", "0.02", "0.03"),
        ("train.beta2", "0.95", "0.99"),
        ("eval.early_stop", "true", "false"),
        ("data.wrap", "true", "false"),
        ("data.bandit.gamma", "0.1", "0.2"),
    ],
    ids=["init-scale", "optimizer-constant", "early-stopping", "wrapping", "bandit-rate"],
)
def test_a_value_no_command_line_set_edited_in_the_config_is_caught(
    tmp_path: Path, key: str, old: str, new: str
) -> None:
    """The edit and every field it decides re-derived: the record agrees with its config, and the
    command lines it keeps (`--preset smoke` and its `--set` keys) resolve to the old value."""
    name = key.rsplit(".", 1)[1]
    run = planted(tmp_path, CURRENT_RUN, config_edited(f"\n{name} = {old}\n", f"\n{name} = {new}\n"))
    assert_caught(
        run, CURRENT_RUN, f"config.toml holds {key} = {new}, but its command lines resolve to {old}"
    )


@pytest.mark.holds("GATE-INTEG-001")
def test_the_current_record_is_rebuilt_and_agrees() -> None:
    """The record the falsifiers above edit is one the rebuild holds (its commit's configuration
    code is this checkout's), and untouched it agrees key for key."""
    run = RECORDS / CURRENT_RUN
    config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    built = rebuilt(read_evidence(run / EVIDENCE_FILE), config)
    assert built is not None and built.config == config and built.model_decided
    assert findings(run) == []


@pytest.fixture(scope="module")
def resumed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of 5 steps resumed for 7 with a lower floor of the learning rate."""
    root = tmp_path_factory.mktemp("resumed")
    run = root / "run"
    assert train(smoke_args(prepared(root), run)) == 0
    resume = ["train", "--resume", str(run), "--set", "train.steps=7", "--set", "train.min_lr=0.0001"]
    assert train(resume) == 0
    return run


@pytest.mark.holds("GATE-INTEG-001")
def test_a_resumed_record_is_rebuilt_through_its_resume(resumed: Path) -> None:
    record = read_evidence(resumed / EVIDENCE_FILE)
    config = tomllib.loads((resumed / "config.toml").read_text(encoding="utf-8"))
    built = rebuilt(record, config)
    assert built is not None
    assert (built.config, built.changes) == (config, [["train.min_lr", "train.steps"]])
    assert record.metrics["resumes"][0]["changed"] == ["train.min_lr", "train.steps"]
    assert findings(resumed) == []


@pytest.mark.gate("GATE-INTEG-001")
def test_a_resume_whose_changes_are_understated_is_caught(resumed: Path, tmp_path: Path) -> None:
    """The resume lowered the rate's floor; its record made to say it changed the steps alone."""
    copy = Path(shutil.copytree(resumed, tmp_path / "run"))
    edited(copy, lambda data, _dir: data["metrics"]["resumes"][0].update(changed=["train.steps"]))
    assert_caught(
        copy,
        "metrics.resumes[0].changed is ['train.steps'], but its command line changes",
        "['train.min_lr', 'train.steps']",
    )


def test_a_record_of_other_configuration_code_is_not_rebuilt() -> None:
    """mix-run of spec 1.13.0 was made before the configuration code took its present text: this
    checkout's `resolve` would not be that run's, so the record is left to argv_config's `--set` check."""
    run = RECORDS / "mix-run-20261124-spec-1.13.0"
    config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    assert rebuilt(read_evidence(run / EVIDENCE_FILE), config) is None


def _config_classes(cls: type[BaseModel], seen: set[type[BaseModel]]) -> set[type[BaseModel]]:
    """`cls` and every pydantic model its fields hold, however nested in the annotations."""
    seen.add(cls)
    for info in cls.model_fields.values():
        pending = [info.annotation]
        while pending:
            kind = pending.pop()
            pending += typing.get_args(kind)
            if isinstance(kind, type) and issubclass(kind, BaseModel) and kind not in seen:
                _config_classes(kind, seen)
    return seen


def test_the_configuration_code_names_every_module_a_configuration_is_made_of() -> None:
    """CONFIG_CODE must hold every file that decides what a command line resolves to, or a change
    there would go unseen and the rebuild would hold old records to new defaults."""
    makers = [resolve, presets, tune_settings, stack.cli.train, stack.cli.values]
    makers += list(_config_classes(RunConfig, set()))
    files = {Path(inspect.getsourcefile(m) or "").resolve().relative_to(REPO).as_posix() for m in makers}
    assert files <= set(CONFIG_CODE)


@pytest.fixture(scope="module")
def started_from(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A smoke run, then a fine-tune of it on the same text (`stack train --init-from`) and a
    supervised fine-tune of it on chat examples (`stack sft`), both started from its weights."""
    root = tmp_path_factory.mktemp("started-from")
    text, chat, base = prepared(root), root / "chat", root / "base"
    halves = ["--val-fraction", "0.5", "--pack-len", "96"]
    assert main(["prepare", str(CHAT), "--format", "chat", *halves, "--out", str(chat)]) == 0
    assert train(smoke_args(text, base, "model.ctx=96")) == 0
    runs = {"finetune": root / "finetune", "sft": root / "sft"}
    quick = [
        f"--set={item}"
        for item in ("train.steps=3", "eval.every=3", "train.device='cpu'", "train.batch_size=1")
    ]
    start = ["--init-from", str(base), "--out"]
    assert train(["train", *start, str(runs["finetune"]), "--data", str(text), *quick]) == 0
    assert train(["sft", *start, str(runs["sft"]), "--data", str(chat), *quick]) == 0
    return runs


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("kind", ["finetune", "sft"])
def test_a_run_started_from_a_model_is_rebuilt_but_for_its_model(
    started_from: dict[str, Path], kind: str
) -> None:
    run = started_from[kind]
    record = read_evidence(run / EVIDENCE_FILE)
    config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    built = rebuilt(record, config)
    assert record.run.kind == kind and built is not None and not built.model_decided
    assert {k: v for k, v in built.config.items() if k != "model"} == {
        k: v for k, v in config.items() if k != "model"
    }
    assert findings(run, run.parent / "base") == []  # checked with the parent its lineage names


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("kind", ["finetune", "sft"])
def test_a_fine_tunes_default_edited_in_its_config_is_caught(
    started_from: dict[str, Path], tmp_path: Path, kind: str
) -> None:
    """A fine-tune's clip norm (a default: its command line names no preset) edited, the record
    re-derived from the edited file."""
    copy = Path(shutil.copytree(started_from[kind], tmp_path / kind))
    edited(copy, config_edited("\nclip_norm = 1.0\n", "\nclip_norm = 4.0\n"))
    assert_caught(copy, "config.toml holds train.clip_norm = 4.0, but its command lines resolve to 1.0")


@pytest.fixture(scope="module")
def tuned(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A DPO run (β and ε given) and a distillation into a fresh smoke student (α = 0, the NLL
    alone, on windows of 24 tokens where the student's context is 32), each from a small saved
    model and resumed once with more steps."""
    root = tmp_path_factory.mktemp("tuned")
    source, dpo_run, distill_run = (
        save_run(root / "source", tiny_model(ctx=64)),
        root / "dpo",
        root / "distill",
    )
    dpo_argv = ["dpo", str(source), "--data", str(prepared_pairs(root)), "--out", str(dpo_run)]
    options = [
        "--steps",
        "2",
        "--batch-size",
        "1",
        "--beta",
        "0.2",
        "--label-noise",
        "0.1",
        "--device",
        "cpu",
    ]
    assert main([*dpo_argv, *options]) == 0
    assert main(["dpo", "--resume", str(dpo_run), "--steps", "3"]) == 0
    distill_argv = ["distill", str(source), "--data", str(prepared(root)), "--out", str(distill_run)]
    assert (
        main(
            [
                *distill_argv,
                "--preset",
                "smoke",
                "--steps",
                "2",
                "--batch-size",
                "4",
                "--alpha",
                "0",
                "--seq-len",
                "24",
            ]
        )
        == 0
    )
    assert main(["distill", "--resume", str(distill_run), "--steps", "3", "--device", "cpu"]) == 0
    return {"dpo": dpo_run, "distill": distill_run}


@pytest.mark.holds("GATE-INTEG-001")
@pytest.mark.parametrize("kind", ["dpo", "distill"])
def test_a_tuning_run_is_rebuilt_through_its_commands_options(tuned: dict[str, Path], kind: str) -> None:
    """`stack dpo` and `stack distill` turn their own options into keys (`--beta`, `--alpha`, the
    loop's settings); the rebuild turns them so again, through each command's function, and the
    resume's `--steps` (and `--device`) is the change its record lists."""
    run = tuned[kind]
    record = read_evidence(run / EVIDENCE_FILE)
    config = tomllib.loads((run / "config.toml").read_text(encoding="utf-8"))
    built = rebuilt(record, config)
    assert built is not None and built.model_decided == (kind == "distill")
    assert {k: v for k, v in built.config.items() if built.model_decided or k != "model"} == {
        k: v for k, v in config.items() if built.model_decided or k != "model"
    }
    assert built.changes == [["train.steps"] if kind == "dpo" else ["train.device", "train.steps"]]
    assert findings(run) == []


def test_a_distillation_given_alpha_zero_trains_on_the_nll_alone(tuned: dict[str, Path]) -> None:
    """α = 0 is a setting (the soft term off), not an absent one: it reaches the run's config."""
    config = tomllib.loads((tuned["distill"] / "config.toml").read_text(encoding="utf-8"))
    assert config["distill"]["alpha"] == 0.0


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("kind", "old", "new", "key"),
    [
        ("dpo", "\nbeta = 0.2\n", "\nbeta = 0.1\n", "dpo.beta"),
        ("dpo", "\nlabel_noise = 0.1\n", "\nlabel_noise = 0.0\n", "dpo.label_noise"),
        ("distill", "\nalpha = 0.0\n", "\nalpha = 0.7\n", "distill.alpha"),
        ("distill", "\nlr = 0.001\n", "\nlr = 0.002\n", "train.lr"),
    ],
    ids=["dpo-beta", "dpo-label-noise", "distill-alpha", "distill-lr"],
)
def test_a_tuning_commands_option_edited_in_the_config_is_caught(
    tuned: dict[str, Path], tmp_path: Path, kind: str, old: str, new: str, key: str
) -> None:
    """What `--beta`, `--label-noise`, `--alpha` or a loop default made, edited in config.toml and
    the record re-derived from the edited file."""
    copy = Path(shutil.copytree(tuned[kind], tmp_path / kind))
    edited(copy, config_edited(old, new))
    wanted = old.strip().split(" = ")[1]
    assert_caught(
        copy,
        f"config.toml holds {key} = {new.strip().split(' = ')[1]}, but its command lines resolve to {wanted}",
    )
