"""The spec loads, and refuses what would quietly disable a gate: bad ids, duplicates, unknown keys."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.spec import GATE_ID_RE, checks_required, default_spec_dir, load_spec, load_spec_from
from tools.records.scratch import bump_policy


@pytest.fixture
def spec_copy(tmp_path: Path) -> Path:
    shutil.copytree(default_spec_dir(), tmp_path / "spec")
    return tmp_path / "spec"


def test_catalogue_is_complete_and_versioned() -> None:
    spec = load_spec()
    assert spec.header.changelog[0].version == spec.version
    areas = {g.area for g in spec.gates.values()}
    assert {"DATA", "EVAL", "TRAIN", "CKPT", "MODEL", "KERNEL", "TRACE", "EXPORT", "DIST", "INTEG"} <= areas
    assert all(GATE_ID_RE.match(gid) for gid in spec.gates)


def test_threshold_lookup_and_unknowns() -> None:
    spec = load_spec()
    assert spec.threshold("GATE-EVAL-001", "min_heldout_batches") >= 1
    with pytest.raises(BadInput, match="no threshold 'nope'"):
        spec.threshold("GATE-EVAL-001", "nope")
    with pytest.raises(BadInput, match="unknown gate id"):
        spec.gate("GATE-EVAL-999")  # integrity: planted


def test_sha256_changes_with_any_spec_byte(spec_copy: Path) -> None:
    before = load_spec_from(spec_copy).sha256
    path = spec_copy / "gates" / "eval.yaml"
    path.write_text(path.read_text() + "\n# a comment is a change too\n")
    assert load_spec_from(spec_copy).sha256 != before


def _edit(path: Path, old: str, new: str) -> None:
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def test_unknown_field_is_refused(spec_copy: Path) -> None:
    _edit(spec_copy / "gates" / "eval.yaml", "    kind: runtime", "    kind: runtime\n    colour: red")
    with pytest.raises(BadInput, match=r"eval\.yaml.*colour"):
        load_spec_from(spec_copy)


def test_bad_gate_id_is_refused(spec_copy: Path) -> None:
    _edit(spec_copy / "gates" / "eval.yaml", "id: GATE-EVAL-001", "id: GATE-eval-1")
    with pytest.raises(BadInput, match=r"eval\.yaml"):
        load_spec_from(spec_copy)


def test_duplicate_gate_id_is_refused(spec_copy: Path) -> None:
    shutil.copy(spec_copy / "gates" / "eval.yaml", spec_copy / "gates" / "eval_again.yaml")
    with pytest.raises(BadInput, match="duplicate gate id GATE-EVAL-001"):
        load_spec_from(spec_copy)


def test_version_without_changelog_entry_is_refused(spec_copy: Path) -> None:
    _edit(spec_copy / "spec.yaml", f"version: {load_spec().version}", "version: 99.0.0")
    with pytest.raises(BadInput, match="no changelog entry"):
        load_spec_from(spec_copy)


def test_invalid_yaml_is_one_line(spec_copy: Path) -> None:
    (spec_copy / "gates" / "eval.yaml").write_text("gates: [\n")
    with pytest.raises(BadInput) as info:
        load_spec_from(spec_copy)
    assert "\n" not in str(info.value)


def test_a_spec_file_that_is_not_utf8_is_one_line_naming_it(spec_copy: Path) -> None:
    path = spec_copy / "gates" / "eval.yaml"
    path.write_bytes(path.read_bytes() + b"# \xff\n")
    with pytest.raises(BadInput, match=r"eval\.yaml is not UTF-8 text .*byte \d+") as info:
        load_spec_from(spec_copy)
    assert "\n" not in str(info.value)


@pytest.mark.parametrize("name", ["run_kinds.yaml", "gates/eval.yaml"])
def test_a_spec_file_that_cannot_be_read_is_one_line_naming_it(spec_copy: Path, name: str) -> None:
    path = spec_copy / name
    path.unlink()
    path.mkdir()  # there, but no file: read_bytes raises IsADirectoryError
    with pytest.raises(BadInput, match=rf"{re.escape(name)} cannot be read") as info:
        load_spec_from(spec_copy)
    assert "\n" not in str(info.value)


@given(st.text(alphabet="GATEDAT-0123456789XYZ", max_size=20))
def test_gate_id_pattern_accepts_only_the_documented_shape(candidate: str) -> None:
    parts = candidate.split("-")
    shaped = (
        len(parts) == 3
        and parts[0] == "GATE"
        and parts[1].isalpha()
        and parts[1].isupper()
        and len(parts[2]) == 3
        and parts[2].isdigit()
    )
    assert bool(GATE_ID_RE.match(candidate)) == shaped


@pytest.mark.parametrize(("warmup_steps", "early_stop"), [(0, False), (1, False), (0, True), (20, True)])
def test_an_option_asks_for_its_check_only_where_the_config_turns_it_on(
    warmup_steps: int, early_stop: bool
) -> None:
    """run_kinds: warmup's check is asked of a train record with a warmup, early stopping's
    configuration of one that stops early; the kind's own checks of every record."""
    entry = load_spec().run_kinds["train"]
    config = {"train": {"warmup_steps": warmup_steps}, "eval": {"early_stop": early_stop}}
    required = checks_required(entry, config)
    assert all(set(names) <= set(required[g]) for g, names in entry.checks.items())
    assert ("warmup" in required.get("GATE-TRAIN-002", [])) == (warmup_steps > 0)
    assert ("config" in required.get("GATE-EVAL-002", [])) == early_stop


def test_an_option_that_asks_for_nothing_is_refused(spec_copy: Path) -> None:
    kinds = spec_copy / "run_kinds.yaml"
    text = kinds.read_text()
    kinds.write_text(text.replace("        checks: {GATE-TRAIN-002: [warmup]}\n", "", 1))
    bump_policy(spec_copy.parent, "run_kinds")  # a revision as the spec asks: only the option is wrong
    with pytest.raises(BadInput, match="names no gate and no check"):
        load_spec_from(spec_copy)
