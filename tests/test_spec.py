"""The spec loads, and refuses what would quietly disable a gate: bad ids, duplicates, unknown keys."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.spec import GATE_ID_RE, default_spec_dir, load_spec, load_spec_from


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
