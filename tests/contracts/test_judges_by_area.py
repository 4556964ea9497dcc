"""Each gate is judged in the module of its spec area, and the registry gathers each area once.

contracts/judges/<area>.py holds the judges of spec/gates/<area>.yaml; contracts.judges imports
every area and gathers their tables. A judge filed in another area's module, or a gate two tables
claim, would make the map of the house (docs/house.md) lie.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from contracts import judges as registry
from contracts.judges import AREAS, JUDGES
from contracts.judges.base import Judges, Measured, Thresholds

GATES_DIR = Path(__file__).resolve().parents[2] / "spec" / "gates"


def _spec_areas() -> dict[str, str]:
    """gate id → the stem of the spec/gates/*.yaml that defines it."""
    return {
        gate["id"]: path.stem
        for path in sorted(GATES_DIR.glob("*.yaml"))
        for gate in yaml.safe_load(path.read_text(encoding="utf-8"))["gates"]
    }


def test_every_spec_area_has_its_module_and_nothing_else_does() -> None:
    assert set(AREAS) == {path.stem for path in GATES_DIR.glob("*.yaml")}


def test_every_gate_is_judged_in_its_own_areas_module() -> None:
    misplaced = {
        gate_id: (area, [name for name, table in AREAS.items() if gate_id in table.rules])
        for gate_id, area in _spec_areas().items()
        if gate_id not in AREAS[area].rules
    }
    assert misplaced == {}
    assert set(JUDGES) == set(_spec_areas())


def _holds(m: Measured, t: Thresholds) -> list[str]:
    return []


def test_a_gate_given_two_judges_in_one_area_is_refused() -> None:
    table = Judges()
    table("GATE-DATA-003", needs=("a",))(_holds)
    with pytest.raises(ValueError, match="GATE-DATA-003 is given two judges"):
        table("GATE-DATA-003", needs=("b",))(_holds)


def test_a_judge_declares_one_check_or_several_not_both() -> None:
    with pytest.raises(TypeError, match="not both"):
        Judges()("GATE-DATA-003", needs=("a",), checks={"main": ("a",)})


def test_a_gate_two_areas_judge_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    stray = Judges()
    stray("GATE-DATA-001", needs=("a",))(_holds)
    monkeypatch.setitem(registry.AREAS, "stray", stray)
    with pytest.raises(ValueError, match="GATE-DATA-001 is judged in two areas"):
        registry._gathered()
