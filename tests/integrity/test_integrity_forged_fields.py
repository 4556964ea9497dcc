"""Tamperings the checker decides from what it
already reads: each is planted in a copy of a committed record,
finished by a perfect forger (every field the artifacts derive re-derived, every verdict re-judged,
every artifact re-hashed), and the integrity check must name it; the records as filed pass.

- a setting a silent command line left to a default of None (a sample's top_k) or to a
  default its parser names by a constant (a tuned lens's weight decay, DEFAULT_WEIGHT_DECAY):
  tools/integrity/settings/default_sources.py reads every kind of default at the record's commit;
- a fully consistent CUDA claim (env.torch, env.cuda and env.device alike) against the device
  its gates' generators drew on, and a CUDA build's label against env.cuda (tools/integrity/env_checks.py);
- a report's library versions (export.json's torch against env.torch; the project's own
  version against pyproject.toml at the record's commit; tools/integrity/env_checks.py);
- a WARN whose check finds, without reading a threshold, that the record contradicts its own
  measurement (GATE-FT-003's examples_eligible restated; tools/record_checks.contradictions);
- a made-model digest on a record whose checkpoint is its own output (an ES record;
  tools/lineage.made_digest_problems);
- a forged field of the wrong type is a named problem, never a crash of the derivation (an ES
  record's resumed_from given as a path; a trace's --layers and --sites, a prepare's canary rows,
  a patch's cells).
"""

from __future__ import annotations

import ast
import hashlib
import json
import tomllib
from pathlib import Path
from typing import Any

import pytest

from contracts.judges import judge
from tests.support.ledger_support import (
    ES_RUN,
    EXPORT_RUN,
    FINETUNE_RUN,
    LENS_TRAIN_RUN,
    MEMORIZATION_RUN,
    PATCH_RUN,
    PREPARE_RUN,
    RECORDS,
    ROOT,
    SAMPLE_RUN,
    TRACE_RUN,
    assert_found,
    findings,
    forger_finished,
    gate,
    planted,
)
from tools.integrity.record_checks import contradictions
from tools.integrity.settings.default_sources import RESOLVED, UNRESOLVED, parser_defaults, resolved

FAKE_DIGEST = hashlib.sha256(b"forged").hexdigest()


def _record(run: str) -> dict[str, Any]:
    return json.loads((RECORDS / run / "metadata.json").read_text(encoding="utf-8"))


def _edit_json(run_dir: Path, name: str, change: Any) -> None:
    path = run_dir / name
    report = json.loads(path.read_text(encoding="utf-8"))
    change(report)
    path.write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")


# -- defaults of every kind (tools/integrity/settings/default_sources.py) ---------------------------------


def test_sample_top_k_left_to_none_restated_is_caught(tmp_path: Path) -> None:
    """Config.top_k null restated as 40 (and GATE-TRAIN-005's top_k alike) with no --top-k on
    the line: the parser's default None is what the command read."""
    record = _record(SAMPLE_RUN)
    assert "--top-k" not in record["run"]["argv"] and record["config"]["top_k"] is None

    def truncate(data: dict[str, Any], _dir: Path) -> None:
        data["config"]["top_k"] = 40
        gate(data, "GATE-TRAIN-005")["measured"]["top_k"] = 40

    found = findings(planted(tmp_path, SAMPLE_RUN, forger_finished(truncate)))
    assert_found(found, "config.top_k is 40", "leaves --top-k to the default None", "stack/cli/sample.py")


def test_lens_weight_decay_left_to_a_named_constant_restated_is_caught(tmp_path: Path) -> None:
    """Config.weight_decay ×10, and every step's applied weight decay alike, with no
    --weight-decay on the line: the parser's default is DEFAULT_WEIGHT_DECAY, imported from
    stack.lens.defaults, which the check resolves at the record's commit."""
    record = _record(LENS_TRAIN_RUN)
    assert not any(w.startswith("--weight-decay") for w in record["run"]["argv"])
    stated = record["config"]["weight_decay"]

    def tenfold(data: dict[str, Any], _dir: Path) -> None:
        data["config"]["weight_decay"] = stated * 10
        for applied in gate(data, "GATE-LENS-002")["measured"]["applied_hyperparameters"]:
            applied["weight_decay"] = stated * 10

    found = findings(planted(tmp_path, LENS_TRAIN_RUN, forger_finished(tenfold)))
    assert_found(found, f"config.weight_decay is {stated * 10!r}", f"to the default {stated!r}")


def test_a_default_named_by_an_imported_constant_is_resolved() -> None:
    """A parser's `default=NAME`, NAME imported from another module of the repository, is that
    module's literal; a default no literal decides is UNRESOLVED (named, never passed)."""
    parser = (
        b"from pkg.defaults import RATE as LR\nimport argparse\nLOCAL = 3\np = argparse.ArgumentParser()\n"
        b"p.add_argument('--lr', default=LR)\np.add_argument('--n', default=LOCAL)\n"
        b"p.add_argument('--k')\np.add_argument('--m', default=make())\n"
    )
    files = {"pkg/defaults.py": b"RATE = 0.25\n"}
    defaults = parser_defaults(parser, files.get)
    assert defaults == {"lr": 0.25, "n": 3, "k": None, "m": UNRESOLVED}
    assert resolved(ast.parse("X").body[0].value, ast.parse(b"Y = 1"), files.get) is UNRESOLVED  # type: ignore[attr-defined]


def test_a_default_written_as_arithmetic_of_constants_is_resolved() -> None:
    """`stack prepare`'s size defaults are `1 << 26` and `64 * MiB` (MiB bound in the module that
    exports the default): the arithmetic of constants is the value (its record of 1.33.0 states
    them); a name bound to itself, or arithmetic of a call, stays UNRESOLVED."""
    parser = (
        b"from pkg.sizes import SAMPLE\nimport argparse\nSHARD = 1 << 26\nLOOP = LOOP + 1\n"
        b"p = argparse.ArgumentParser()\np.add_argument('--shard', default=SHARD)\n"
        b"p.add_argument('--sample', default=SAMPLE)\np.add_argument('--loop', default=LOOP)\n"
        b"p.add_argument('--half', default=SHARD // 2 - 0.5)\np.add_argument('--call', default=2 * f())\n"
    )
    files = {"pkg/sizes.py": b"MiB = 1 << 20\nSAMPLE = 64 * MiB\n"}
    assert parser_defaults(parser, files.get) == {
        "shard": 1 << 26,
        "sample": 64 << 20,
        "loop": UNRESOLVED,
        "half": (1 << 25) - 0.5,
        "call": UNRESOLVED,
    }


@pytest.mark.parametrize(
    "expression", ["9 ** 9 ** 9", "1 << 10 ** 12", "1 << 65", "1 // 0", "1 << -1", "2.5 << 1"]
)
def test_a_default_whose_arithmetic_would_hang_or_raise_stays_unresolved(expression: str) -> None:
    """A record's commit is whatever its author pushed: a power, a shift past 64 bits, a zero divisor or
    a negative or float shift in a parser default is UNRESOLVED (named as such by the check), never a
    hang, an exhausted memory or a crash of the checker."""
    parser = f"import argparse\np = argparse.ArgumentParser()\np.add_argument('--n', default={expression})\n"
    assert parser_defaults(parser.encode(), {}.get) == {"n": UNRESOLVED}


def test_a_shift_of_exactly_64_bits_is_still_resolved() -> None:
    """The guard's edge: `1 << 64` is arithmetic a parser may mean; one bit more is refused."""
    parser = b"import argparse\np = argparse.ArgumentParser()\np.add_argument('--n', default=1 << 64)\n"
    assert parser_defaults(parser, {}.get) == {"n": 1 << 64}


def test_every_none_default_a_command_resolves_is_one_its_record_holds_otherwise() -> None:
    """RESOLVED names only options whose None the command replaces: each names a command and an
    option of its parser (a stale entry would exempt nothing and hide a typo)."""
    for command, options in RESOLVED.items():
        source = (ROOT / "stack" / "cli" / f"{command.replace('-', '_')}.py").read_bytes()
        declared = parser_defaults(source) or {}
        assert set(options) <= set(declared), command


# -- env against what the run measured (tools/integrity/env_checks.py) -------------------------------------


def test_a_consistent_cuda_claim_is_held_to_the_generator_device(tmp_path: Path) -> None:
    """Env.torch, env.cuda and env.device restated as a CUDA run, all three consistent; the
    generator GATE-TRAIN-005 watched drew on the CPU, where the run's model was."""
    measured = gate(_record(FINETUNE_RUN), "GATE-TRAIN-005")["measured"]

    def on_cuda(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(torch="2.13.0+cu128", cuda="12.8", device="cuda")

    found = findings(planted(tmp_path, FINETUNE_RUN, forger_finished(on_cuda)))
    assert_found(
        found,
        "env.device is 'cuda'",
        f"GATE-TRAIN-005].measured.generator_device is {measured['generator_device']!r}",
    )


def test_a_cuda_build_labelled_for_another_cuda_is_caught(tmp_path: Path) -> None:
    """A torch build labelled `+cu128` has CUDA 12.8: env.cuda 12.4 beside it contradicts it."""

    def mislabelled(data: dict[str, Any], _dir: Path) -> None:
        data["env"].update(torch="2.13.0+cu128", cuda="12.4")

    found = findings(planted(tmp_path, FINETUNE_RUN, forger_finished(mislabelled)))
    assert_found(found, "env.cuda is '12.4'", "a build for CUDA 12.8")


def test_export_versions_torch_against_env_is_caught(tmp_path: Path) -> None:
    """Export.json's versions.torch restated as a CUDA build; the same process wrote env.torch."""
    env_torch = _record(EXPORT_RUN)["env"]["torch"]

    def cuda_torch(data: dict[str, Any], run_dir: Path) -> None:
        _edit_json(run_dir, "export.json", lambda report: report["versions"].update(torch="2.5.1+cu124"))

    found = findings(planted(tmp_path, EXPORT_RUN, forger_finished(cuda_torch)))
    assert_found(found, "export.json: versions.torch is '2.5.1+cu124'", f"env.torch is {env_torch!r}")


def test_export_versions_of_the_project_against_pyproject_is_caught(tmp_path: Path) -> None:
    """Export.json's versions.gatestack restated; pyproject.toml at the record's commit says."""
    project = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]
    assert _record(EXPORT_RUN)["run"]["id"] and project["name"] == "gatestack"

    def newer(data: dict[str, Any], run_dir: Path) -> None:
        _edit_json(run_dir, "export.json", lambda report: report["versions"].update(gatestack="0.3.0"))

    found = findings(planted(tmp_path, EXPORT_RUN, forger_finished(newer)))
    assert_found(found, "versions.gatestack is '0.3.0'", "pyproject.toml at its commit")


# -- a WARN that contradicts the record (tools/record_checks.contradictions) ----------------------


def test_a_warn_whose_check_needs_no_threshold_is_a_violation(tmp_path: Path) -> None:
    """GATE-FT-003's examples_eligible restated; its `drawn` check (contracts.recall_draw,
    no threshold read) says the recall describes another set, and the verdict is only WARN."""
    measured = gate(_record(MEMORIZATION_RUN), "GATE-FT-003")["measured"]

    def more_eligible(data: dict[str, Any], _dir: Path) -> None:
        gate(data, "GATE-FT-003")["measured"]["examples_eligible"] = 2 * measured["examples_eligible"]

    found = findings(planted(tmp_path, MEMORIZATION_RUN, forger_finished(more_eligible)))
    assert_found(found, "GATE-FT-003: WARN, but its check drawn", "without reading a threshold")


def test_a_warn_of_a_measure_against_its_threshold_is_no_contradiction() -> None:
    """The memorization record as filed WARNs (or passes) by its recall against the spec's bounds:
    no check that reads a threshold is taken for a contradiction."""
    measured = gate(_record(MEMORIZATION_RUN), "GATE-FT-003")["measured"]
    problems = judge("GATE-FT-003", measured)
    assert contradictions("GATE-FT-003", measured, problems) == []
    every = [measured["continuation_tokens"]] * len(measured["tuned_overlaps"])
    recited = {**measured, "tuned_overlaps": every, "tuned_runs_recomputed": every}
    problems = judge("GATE-FT-003", recited)
    assert problems and contradictions("GATE-FT-003", recited, problems) == []


# -- a made-model digest where the checkpoint is the run's own (tools/integrity/lineage.py) -----------------


def test_es_made_model_digest_invented_is_caught(tmp_path: Path) -> None:
    """An ES record, whose checkpoint is the model it made, given a model_sha256 no command
    writes there."""
    weights = _record(ES_RUN)["checkpoint"]["files"]["model.safetensors"]["sha256"]

    def invented(data: dict[str, Any], _dir: Path) -> None:
        data["lineage"]["model_sha256"] = FAKE_DIGEST

    found = findings(planted(tmp_path, ES_RUN, forger_finished(invented)))
    assert_found(found, f"lineage.model_sha256 is {FAKE_DIGEST[:12]}", weights[:12], "the model its run made")


# -- a forged field of the wrong type: a named problem, not a crash ------------------------------


def test_es_resumed_from_of_the_wrong_type_is_named(tmp_path: Path) -> None:
    """Resumed_from given as the path of a checkpoint: named as no step (the derivation must not
    raise a TypeError); a forger's finish puts back what the command lines decide (no resume)."""

    def resumed(data: dict[str, Any], _dir: Path) -> None:
        data["metrics"]["resumed_from"] = "/tmp/rec14/es/step-0000002"

    found = findings(planted(tmp_path, ES_RUN, resumed))
    assert_found(found, "metrics.resumed_from is '/tmp/rec14/es/step-0000002', not a step")
    assert not any("cannot be read" in line for line in found)
    restored = planted(tmp_path / "forged", ES_RUN, forger_finished(resumed))
    assert json.loads((restored / "metadata.json").read_text())["metrics"]["resumed_from"] is None


@pytest.mark.parametrize(
    ("run", "where", "value", "fragment"),
    [
        (TRACE_RUN, ("config", "layers"), {"forged": 1}, "config.layers is {'forged': 1}"),
        (TRACE_RUN, ("config", "sites"), ["layers.*"], "config.sites is ['layers.*']"),
        (PREPARE_RUN, ("GATE-DATA-012", "canaries", 0, "name"), {"forged": 1}, "canaries[0].name is"),
        (PATCH_RUN, ("GATE-PATCH-002", "cells", 0, "site"), {"forged": 1}, "cells[0].site is"),
    ],
)
def test_a_field_of_the_wrong_type_is_named_not_a_crash(
    tmp_path: Path, run: str, where: tuple[Any, ...], value: Any, fragment: str
) -> None:
    """Fields whose type the derivation assumed (found by putting a value of every other type in
    each field of the current records): each is a named problem."""

    def forged(data: dict[str, Any], _dir: Path) -> None:
        target = data["config"] if where[0] == "config" else gate(data, where[0])["measured"]
        for key in where[1:-1]:
            target = target[key]
        target[where[-1]] = value

    found = findings(planted(tmp_path, run, forged))
    assert_found(found, fragment)
    assert not any("cannot be read" in line for line in found)


# -- the records as filed ------------------------------------------------------------------------


@pytest.mark.parametrize(
    "run",
    [SAMPLE_RUN, LENS_TRAIN_RUN, FINETUNE_RUN, EXPORT_RUN, MEMORIZATION_RUN, ES_RUN, TRACE_RUN, PATCH_RUN],
)
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _data, _dir: None)) == []
