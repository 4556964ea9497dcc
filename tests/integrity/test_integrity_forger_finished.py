"""Tamperings the checker derives: each
is planted in a copy of a committed record of the current spec and finished by a perfect forger
(`forger_finished`: every field the artifacts derive copied in, every artifact re-hashed), and the
integrity check must still name the lie:

- a fully consistent CUDA claim (torch +cu128, cuda 12.8, device cuda) on a record whose writer
  passes CommandEvidence a literal device (es, prepare, laser: tools/env_checks.py);
- an ES run's config.toml restated against its source's saved configuration, and its source
  manifest's digest restated (tools/committed_models.py);
- an ES run's checkpoint, and its last served batch's place in the epoch, restated
  (contracts/derive/training.py; the forger's finish puts the truth back, so these are planted
  without it);
- one GATE-MODEL-003 form's reference magnitude restated beside the others of its reference;
- gate probes decided before the run restated: KD-004's grad_ratio, ARCH-003's references
  (tools/probe_replays.py).
"""

from __future__ import annotations

import hashlib
import tomllib
from pathlib import Path
from typing import Any

import pytest

from contracts.derive import shared_reference_problems
from contracts.evidence import EVIDENCE_FILE, read_evidence
from contracts.spec import load_spec
from tests.support.ledger_support import (
    DISTILL_RUN,
    ES_RUN,
    LASER_RUN,
    PREPARE_RUN,
    RECORDS,
    ROOT,
    SAMPLE_RUN,
    Change,
    assert_found,
    findings,
    forger_finished,
    gate,
    log_lines,
    planted,
)
from tools.integrity.env_checks import WRITERS, writer_devices
from tools.integrity.spec_history import commit_reader

OTHER_SHA = hashlib.sha256(b"another manifest").hexdigest()
# A torch build for CUDA 12.8 and that CUDA: what a forger restates env.torch and env.cuda as.
CUDA_BUILD, CUDA_VERSION = "2.13.0+cu128", "12.8"


def _cuda_claimed(data: dict[str, Any], _run_dir: Path) -> None:
    """The record's env restated as a CUDA run, every field of it consistent with the others."""
    data["env"].update(torch=CUDA_BUILD, cuda=CUDA_VERSION, device="cuda")


MIX_RUN = "current/mix-run"  # a training record of a mixture of experts, no depth-routed block


@pytest.mark.parametrize(
    ("model", "found"),
    [({}, (1, 1)), ({"mod_every": 1, "mod_capacity": 0.5}, (0, 1)), (None, (0, 1))],
    ids=["no-routed-block", "depth-routed", "model-not-stated"],
)
def test_each_mode_has_its_own_reference_only_where_a_block_routes_by_depth(
    model: dict[str, Any] | None, found: tuple[int, int]
) -> None:
    """A depth-routed block routes each sequence's top-k in training and by a threshold in
    evaluation, so the training forms' reference can have another largest logit than the evaluation
    and cached forms' (a two-block mixture with differential attention and routing in every block:
    8.99 against 9.61). A training form's scale of its own is no problem there, nor where the record
    states no model; it is one in a model without such a block, whose modes share one reference.
    The cached form decodes in evaluation mode: a scale of its own beside eval's is one anywhere."""
    record = read_evidence(RECORDS / MIX_RUN / EVIDENCE_FILE)
    forms = next(g for g in record.gates if g.id == "GATE-MODEL-003").measured["forms"]
    stated = record.config["model"]
    record.config = {"checkpoint": "elsewhere"} if model is None else {"model": {**stated, **model}}
    forms["train"]["ref_absmax"] *= 0.95
    assert len(shared_reference_problems(record)) == found[0]
    forms["cached"]["ref_absmax"] *= 1.05
    assert len(shared_reference_problems(record)) == found[1]


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize("run", [ES_RUN, PREPARE_RUN, LASER_RUN])
def test_a_consistent_cuda_claim_on_a_literal_cpu_writer_is_caught(tmp_path: Path, run: str) -> None:
    copy = planted(tmp_path, run, forger_finished(_cuda_claimed))
    found = findings(copy)
    assert_found(found, "env.device is 'cuda'", f"writes every {copy.name.split('-2026')[0]} record")
    assert_found(found, f"env.cuda is '{CUDA_VERSION}'", "it ran without CUDA")


def test_every_writer_the_table_names_passes_one_literal_device_at_head() -> None:
    """WRITERS stays true of the repository: each kind's writer, read as the checker reads it at a
    record's commit, passes its record one literal device, the CPU's."""
    read = commit_reader(ROOT, "HEAD", {})
    for kind, paths in WRITERS.items():
        assert writer_devices(kind, read(paths[0]), read) == {"cpu"}, kind


def test_a_writer_with_no_such_call_is_not_passed() -> None:
    assert writer_devices("es", b"x = 1\n", lambda _path: None) is None


def _es_config_restated(data: dict[str, Any], run_dir: Path) -> None:
    """config.toml's train.lr made half again as large (derived from the file, not today's value)."""
    path = run_dir / "config.toml"
    text = path.read_text(encoding="utf-8")
    lr = tomllib.loads(text)["train"]["lr"]
    assert f"\nlr = {lr!r}\n" in text
    path.write_text(text.replace(f"\nlr = {lr!r}\n", f"\nlr = {lr * 1.5!r}\n", 1), encoding="utf-8")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_es_config_toml_restated_against_its_source_is_caught(tmp_path: Path) -> None:
    copy = planted(tmp_path, ES_RUN, forger_finished(_es_config_restated))
    assert_found(findings(copy), "config.toml holds train.lr", "an ES run writes its source's configuration")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_es_source_manifest_digest_restated_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _run_dir: Path) -> None:
        data["config"]["source"]["manifest_sha256"] = OTHER_SHA

    copy = planted(tmp_path, ES_RUN, forger_finished(plant))
    assert_found(findings(copy), f"config.source.manifest_sha256 is {OTHER_SHA[:12]}", "hashes to")


def _last_step(run_dir: Path) -> int:
    return max(line["step"] for line in log_lines(run_dir) if line.get("type") == "step")


@pytest.mark.gate("GATE-INTEG-001")
def test_an_es_checkpoint_of_a_step_never_reached_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], run_dir: Path) -> None:
        later = _last_step(run_dir) + data["config"]["save_every"]
        data["checkpoint"].update(name=f"step-{later:07d}", step=later)
        gate(data, "GATE-CKPT-001")["measured"]["checkpoint"] = f"step-{later:07d}"

    copy = planted(tmp_path, ES_RUN, plant)
    last = _last_step(copy)
    found = findings(copy)
    assert_found(found, "checkpoint.step is", f"but its artifacts derive {last}")
    assert_found(found, "gates[GATE-CKPT-001].measured.checkpoint", f'derive "step-{last:07d}"')


@pytest.mark.gate("GATE-INTEG-001")
def test_an_es_last_batch_placed_elsewhere_in_its_epoch_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _run_dir: Path) -> None:
        gate(data, "GATE-DATA-001")["measured"]["step_in_epoch"] += 3

    copy = planted(tmp_path, ES_RUN, plant)
    assert_found(findings(copy), "gates[GATE-DATA-001].measured.step_in_epoch", "but its artifacts derive")


def _measured_scaled(gate_id: str, path: tuple[str | None, ...], factor: float) -> Change:
    """A gate's measured value at `path` (None: the first key the record lists there) multiplied by
    `factor`, then the forger's finish."""

    def plant(data: dict[str, Any], _run_dir: Path) -> None:
        values = gate(data, gate_id)["measured"]
        for key in path[:-1]:
            values = values[next(iter(values)) if key is None else key]
        values[path[-1]] *= factor

    return forger_finished(plant)


@pytest.mark.gate("GATE-INTEG-001")
def test_one_model_form_with_its_own_reference_magnitude_is_caught(tmp_path: Path) -> None:
    copy = planted(
        tmp_path, SAMPLE_RUN, _measured_scaled("GATE-MODEL-003", ("forms", "cached", "ref_absmax"), 1.15)
    )
    assert_found(findings(copy), "gates[GATE-MODEL-003].measured.forms state ref_absmax", "one reference")


@pytest.mark.gate("GATE-INTEG-001")
@pytest.mark.parametrize(
    ("gate_id", "path", "probe"),
    [
        ("GATE-KD-004", ("grad_ratio",), "temperature_probe()"),
        ("GATE-ARCH-003", ("ref_absmax",), "check_mixtures(config.model)"),
        ("GATE-ARCH-003", ("mixtures", None, "ref_absmax"), "check_mixtures(config.model)"),
    ],
    ids=["kd-grad-ratio", "arch-one-expert", "arch-mixture"],
)
def test_a_probe_decided_before_the_run_restated_is_caught(
    tmp_path: Path, gate_id: str, path: tuple[str | None, ...], probe: str
) -> None:
    copy = planted(tmp_path, DISTILL_RUN, _measured_scaled(gate_id, path, 1.2))
    assert_found(findings(copy), f"gates[{gate_id}].measured.{path[0]}", probe, "decided before the run")


# How far a replayed float may lie from the record's, as a fraction of itself (GATE-INTEG-001).
REPLAY_RTOL = float(load_spec().threshold("GATE-INTEG-001", "replay_rtol"))
MIXTURE = ("mixtures", None, "ref_absmax")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_probe_restated_just_beyond_the_replay_tolerance_is_caught(tmp_path: Path) -> None:
    copy = planted(tmp_path, DISTILL_RUN, _measured_scaled("GATE-ARCH-003", MIXTURE, 1 + 2 * REPLAY_RTOL))
    assert_found(findings(copy), "gates[GATE-ARCH-003].measured.mixtures", "decided before the run")


@pytest.mark.gate("GATE-INTEG-001")
def test_a_mixture_no_probe_checked_stated_beside_the_probed_ones_is_caught(tmp_path: Path) -> None:
    def plant(data: dict[str, Any], _run_dir: Path) -> None:
        mixtures = gate(data, "GATE-ARCH-003")["measured"]["mixtures"]
        mixtures["8 experts, top 2"] = dict(next(iter(mixtures.values())))

    copy = planted(tmp_path, DISTILL_RUN, forger_finished(plant))
    assert_found(findings(copy), "mixtures.8 experts, top 2 is stated", "decided before the run")


def test_a_probe_another_cpu_rounds_otherwise_within_the_tolerance_passes(tmp_path: Path) -> None:
    """The float64 probe's last bits are the CPU's kernels' (an AMD EPYC moved a mixture's deviation
    by 3e-9 of itself): within replay_rtol the record is the probe's."""
    copy = planted(tmp_path, DISTILL_RUN, _measured_scaled("GATE-ARCH-003", MIXTURE, 1 + REPLAY_RTOL / 2))
    assert findings(copy) == []


@pytest.mark.parametrize("run", [ES_RUN, PREPARE_RUN, LASER_RUN, SAMPLE_RUN, DISTILL_RUN])
def test_the_records_as_filed_pass(tmp_path: Path, run: str) -> None:
    assert findings(planted(tmp_path, run, lambda _data, _dir: None)) == []
