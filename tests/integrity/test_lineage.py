"""The lineage rules of tools/lineage.py on records built here, and the family tree the site draws.

The journey tests (tests/test_journey_*.py) show real commands writing these records and the
integrity checker rejecting a broken chain among them; here each rule is shown on its own.
"""

from __future__ import annotations

from datetime import timedelta

import pytest

from contracts.evidence import (
    CheckpointRef,
    EvidenceRecord,
    FileHash,
    Lineage,
    ParentRef,
    RunStatus,
    new_record,
)
from tools.integrity.lineage import families, lineage_problems, vouched_weights
from tools.site.lineage import family_svg

SHA = {name: name[0] * 64 for name in ("aaa", "bbb", "ccc", "ddd", "eee")}


def record(
    run_id: str, kind: str, minutes: int, weights: str | None = None, **lineage: object
) -> EvidenceRecord:
    """A completed record of `kind` under today's spec; `weights` its checkpoint's, `lineage` its own."""
    made = new_record(kind, run_id, ["stack", kind], "cpu")
    made.run.status = RunStatus.COMPLETED
    made.run.started += timedelta(minutes=minutes)
    if weights is not None:
        made.checkpoint = CheckpointRef(
            name="step-0000002", step=2, files={"model.safetensors": FileHash(sha256=weights, bytes=1)}
        )
    if lineage:
        made.lineage = Lineage.model_validate(lineage)
    return made


def parent(run: str | None, sha: str, role: str = "init") -> dict[str, object]:
    return ParentRef(role=role, run=run, checkpoint_sha256=sha).model_dump()


@pytest.fixture(scope="module")
def chain() -> dict[str, EvidenceRecord]:
    """pretrain → sft → merge (its model its own) → export, each citing the weights its parent made."""
    records = [
        record("base", "train", 0, SHA["aaa"]),
        record("sft", "sft", 1, SHA["bbb"], parents=[parent("base", SHA["aaa"])]),
        record(
            "merge",
            "lora-merge",
            2,
            SHA["bbb"],
            parents=[parent("sft", SHA["bbb"], "source")],
            model_sha256=SHA["ccc"],
        ),
        record(
            "export",
            "export-hf",
            3,
            SHA["ccc"],
            parents=[parent("merge", SHA["ccc"], "source")],
            model_sha256=SHA["ddd"],
        ),
    ]
    return {r.run.id: r for r in records}


def test_a_chain_that_holds_has_no_problem_and_is_one_family(chain: dict[str, EvidenceRecord]) -> None:
    assert lineage_problems(chain) == []
    (root,) = families(chain)
    path, node = [root.run_id], root
    while node.children:
        (_, node), *rest = node.children
        assert not rest
        path.append(node.run_id)
    assert path == ["base", "sft", "merge", "export"]
    assert vouched_weights(chain["merge"]) == SHA["ccc"]  # what it made, not the input it names
    assert "lora-merge" in family_svg(root, set()) and "stroke-dasharray" not in family_svg(root, set())


def test_a_parent_missing_from_the_ledger_breaks_the_chain(chain: dict[str, EvidenceRecord]) -> None:
    without = {run_id: r for run_id, r in chain.items() if run_id != "sft"}
    assert lineage_problems(without) == [
        (
            "merge",
            "its source parent's record 'sft' is not in the ledger: file it there (--evidence-dir), or check "
            "its run directory with --run too",
        )
    ]


def test_a_parent_that_does_not_vouch_for_the_weights_breaks_the_chain(
    chain: dict[str, EvidenceRecord],
) -> None:
    forged = chain["sft"].model_copy(deep=True)
    assert forged.lineage is not None
    forged.lineage.parents[0].checkpoint_sha256 = SHA["eee"]
    ((run_id, problem),) = lineage_problems({**chain, "sft": forged})
    assert run_id == "sft" and "vouches for weights aaaaaaaaaaaa, not the eeeeeeeeeeee" in problem
    (root,) = families({**chain, "sft": forged})
    assert "stroke-dasharray" in family_svg(root, {"sft"})  # drawn dashed on the site


def test_a_derived_model_that_names_no_parent_breaks_the_chain() -> None:
    orphan = record("orphan", "dpo", 0, SHA["aaa"])
    assert [p for _, p in lineage_problems({"orphan": orphan})] == [
        "a dpo record names no parent model (its lineage is empty)"
    ]
    older = orphan.model_copy(deep=True)
    older.spec.version = "1.6.0"  # made before lineage was asked for
    halted = orphan.model_copy(deep=True)
    halted.run.status = RunStatus.HALTED  # made no model
    pretrained = record("base", "train", 0, SHA["aaa"])
    assert lineage_problems({"older": older, "halted": halted, "base": pretrained}) == []


def test_a_parent_made_elsewhere_is_named_by_its_weights_alone() -> None:
    imported = record("imported", "import-hf", 0, SHA["bbb"], parents=[parent(None, SHA["aaa"], "source")])
    tuned = record("tuned", "finetune", 1, SHA["ccc"], parents=[parent("imported", SHA["bbb"])])
    records = {"imported": imported, "tuned": tuned}
    assert lineage_problems(records) == []
    (root,) = families(records)
    assert root.run_id == "imported" and [child.run_id for _, child in root.children] == ["tuned"]
