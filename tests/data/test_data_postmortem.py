"""The 120M run's post-mortem, replayed in miniature through the real prepare, reader and policy.

The incident: a source of "region region region" text on a skip-list of "clean" sources, so
nothing filters it; a bandit paid by raw loss favouring it, because repetitive text is easy to
predict; and after a restart a removed source (the zombie arm) coming back with the restored
state. Each step has its defence, and this file plants the incident against all of them:

1. prepare filters every source: the repetitive source is dropped by the diversity filter, and
   only an explicit waiver, recorded with its reason, lets it through (GATE-DATA-013);
2. with it waived, the raw-loss bandit wants it, and the post-mortem's cap (GATE-DATA-011's
   max_suspect_share) holds it there, while the same bandit uncapped is flagged (GATE-DATA-011);
3. a bandit state restored by a run that excludes a source never pulls that arm (GATE-DATA-006).
"""

from __future__ import annotations

from pathlib import Path

import pytest

from contracts.coherence import coherence_score
from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.data import bandit as bandit_module
from stack.data.curriculum import Phase
from stack.data.manifest import load_manifest
from stack.data.prepare import prepare_corpus
from stack.data.tokenizer import load_tokenizer
from tests.support.data_policy_support import (
    BANDIT,
    gate_verdict,
    mixed_corpus,
    mixture_policy,
    raw_loss,
    restored_with_chat_excluded,
    serve_steps,
)


@pytest.fixture(scope="module")
def root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The sources of the incident, prepared as they were: the repetitive one waived (mixed_corpus)."""
    root = tmp_path_factory.mktemp("postmortem")
    mixed_corpus(root)
    return root


@pytest.mark.holds("GATE-DATA-013", "GATE-DATA-014")
def test_today_the_repetitive_source_is_filtered_unless_waived_on_record(root: Path, tmp_path: Path) -> None:
    inputs = [f"{source}={root / source}" for source in ("chat", "garbage", "prose")]
    manifest = prepare_corpus(inputs, tmp_path / "data", val_fraction=0.25, seed=0)
    garbage = manifest.filters["garbage"]
    assert garbage.documents_in > 0 and garbage.dropped == {"low_diversity": garbage.documents_in}
    assert "garbage" not in {shard.source for shard in manifest.shards}
    assert manifest.filters["chat"].documents_out == manifest.filters["chat"].documents_in
    waived = load_manifest(root / "data").filters["garbage"]  # the incident's data: waived, and it says so
    assert waived.waiver and waived.filters == [] and waived.documents_out == waived.documents_in


def _raw_loss_bandit(data: Path, caps: dict[str, float]) -> dict[str, float]:
    """The incident's bandit (paid by raw loss) on profiled sources; the shares it served at step 16."""
    policy = mixture_policy(data, [Phase(0, {}, caps, {})], bandit=BANDIT)
    policy.profile_sources(load_tokenizer(data).decode, coherence_score)
    repetitive = load_spec().threshold("GATE-DATA-011", "min_compression_ratio")
    assert policy.profiles["garbage"]["compression_ratio"] < repetitive  # the source is a suspect
    serve_steps(policy, 1, 4)
    for step in (8, 12, 16):
        policy.update({"chat": 3.0, "prose": 3.0, "garbage": 0.2})  # garbage is easy to predict
        serve_steps(policy, step - 3, step)
    return policy.close_window(16)


@pytest.mark.gate("GATE-DATA-011")
def test_a_raw_loss_bandit_favouring_the_repetitive_source_is_capped_and_flagged(
    root: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(bandit_module.REWARDS, "improvement", raw_loss)
    limit = load_spec().threshold("GATE-DATA-011", "max_suspect_share")
    with recording(Ledger()) as uncapped:
        realised = _raw_loss_bandit(root / "data", {})
    assert realised["garbage"] > limit  # the bandit wants it: the incident
    assert gate_verdict(uncapped, "GATE-DATA-011") == Verdict.WARN.value  # ... and it is flagged
    with recording(Ledger()) as capped:
        realised = _raw_loss_bandit(root / "data", {"garbage": limit})
    assert gate_verdict(capped, "GATE-DATA-008") == Verdict.PASS.value  # the cap holds in what is read
    assert gate_verdict(capped, "GATE-DATA-011") == Verdict.PASS.value
    assert realised["garbage"] <= limit + 0.05


@pytest.mark.holds("GATE-DATA-006")
def test_a_zombie_arm_from_a_restored_state_is_never_pulled(root: Path) -> None:
    with recording(Ledger()) as ledger:
        after = restored_with_chat_excluded(root / "data")
        assert after.bandit is not None and "chat" not in after.bandit.arms
        serve_steps(after, 13, 24)
        assert after.close_window(24)["chat"] == 0.0
    assert gate_verdict(ledger, "GATE-DATA-006") == Verdict.PASS.value
    assert after.shares_at(25)["chat"] == 0.0
