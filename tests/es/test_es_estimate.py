"""An ES gradient estimate carries its 1/σ, and a BPE sample follows --seed: each planted otherwise.

A `stack es` that hands Adam ĝ = Σ w_i ε_i / P instead of / (P·σ) hides most of it behind Adam's
near scale invariance, and GATE-ES-006's recomputation of Adam from the ĝ it was handed agrees. Its
check estimate (rev 2) holds that ĝ to contracts.es_noise.gradient_estimate of the step's shaped
weights and members' noise.

A `stack prepare --tokenizer bpe --seed 3` that trains the BPE on seed 0's sample: GATE-DATA-007's
check sample (rev 4) holds the units the trainer read, in order, to contracts.bpe_sample's draw of
the offered units' content hashes under the seed and the budget; the manifest records the sample's
digest.
"""

from __future__ import annotations

import hashlib
import random
from pathlib import Path

import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from contracts.bpe_sample import selected
from contracts.evidence import read_evidence
from contracts.spec import load_spec
from stack.cli import main
from stack.data import bpe_sample
from stack.data.manifest import load_manifest
from stack.es import estimate
from stack.es.noise import Member
from tests.support.ledger_support import assert_caught, check_taken_out, edited, findings, gate
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import prepared

ESTIMATE_RTOL = load_spec().threshold("GATE-ES-006", "estimate_rtol")


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A three-layer byte-level model saved as a run, and a byte-tokenised DATA_DIR."""
    root = tmp_path_factory.mktemp("esbpe")
    save_run(root / "source", tiny_model())
    return {"source": root / "source", "data": prepared(root)}


def _es(world: dict[str, Path], out: Path) -> int:
    argv = ["es", str(world["source"]), "--data", str(world["data"]), "--out", str(out)]
    return main([*argv, "--population", "4", "--steps", "1", "--sigma", "0.01"])


def _es_006(out: Path) -> dict:
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-ES-006")
    return {"verdict": result.verdict.value, **result.measured}


def _scaled(monkeypatch: pytest.MonkeyPatch, factor: object) -> None:
    """Plant an estimator whose ĝ is the real one times `factor` (a number, or "sigma")."""
    real = estimate.gradient_estimate

    def planted(
        members: list[Member], weights: torch.Tensor, sigma: float, dim: int, dtype: torch.dtype
    ) -> torch.Tensor:
        return real(members, weights, sigma, dim, dtype) * (sigma if factor == "sigma" else factor)

    monkeypatch.setattr(estimate, "gradient_estimate", planted)


@pytest.mark.gate("GATE-ES-006")
def test_an_estimate_without_its_one_over_sigma_halts(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: ĝ = Σ w_i ε_i / P (the 1/σ dropped). The first step halts (exit 3, GATE-ES-006
    named): the ĝ handed to Adam is σ times the recomputed one, 1 − σ = 0.99 of its size off."""
    _scaled(monkeypatch, "sigma")
    out = tmp_path / "out"
    assert _es(world, out) == 3
    err = capsys.readouterr().err
    assert "GATE-ES-006" in err and "1/(P·σ) Σ w_i·ε_i" in err, err
    measured = _es_006(out)
    assert measured["verdict"] == "FAIL"
    assert measured["estimate_error"] == pytest.approx(0.99, rel=1e-6)
    assert measured["estimate_reference_norm"] == pytest.approx(100 * measured["estimate_norm"], rel=1e-3)
    assert measured["update_error"] <= load_spec().threshold("GATE-ES-006", "update_rtol")  # Adam is right


@pytest.mark.gate("GATE-ES-006")
def test_an_estimate_just_beyond_the_tolerance_halts(
    world: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """ĝ scaled by 1 + 2·estimate_rtol: off by twice what the check allows."""
    _scaled(monkeypatch, 1 + 2 * ESTIMATE_RTOL)
    assert _es(world, tmp_path / "out") == 3
    assert "GATE-ES-006" in capsys.readouterr().err
    assert _es_006(tmp_path / "out")["estimate_error"] > ESTIMATE_RTOL


@pytest.mark.holds("GATE-ES-006")
def test_an_estimate_just_inside_the_tolerance_holds(
    world: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """ĝ scaled by 1 + estimate_rtol / 2 holds; the unplanted run's ĝ is the statute's to float rounding."""
    assert _es(world, tmp_path / "clean") == 0
    clean = _es_006(tmp_path / "clean")
    assert clean["verdict"] == "PASS" and clean["estimate_error"] < ESTIMATE_RTOL / 10
    _scaled(monkeypatch, 1 + ESTIMATE_RTOL / 2)
    assert _es(world, tmp_path / "inside") == 0
    inside = _es_006(tmp_path / "inside")
    assert inside["verdict"] == "PASS" and ESTIMATE_RTOL / 4 < inside["estimate_error"] <= ESTIMATE_RTOL


# -- the BPE's training sample -------------------------------------------------------------------


@pytest.fixture(scope="module")
def corpus(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Forty documents of about 600 bytes each, three times what --bpe-sample 8000 keeps."""
    root = tmp_path_factory.mktemp("bpecorpus")
    words = [
        "the",
        "a",
        "model",
        "data",
        "sample",
        "seed",
        "token",
        "merge",
        "byte",
        "pair",
        "order",
        "draw",
        "budget",
    ]
    rng = random.Random(11)
    for number in range(40):
        (root / f"doc{number:02d}.txt").write_text(" ".join(rng.choice(words) for _ in range(100)) + "\n")
    return root


def _prepare(corpus: Path, tmp_path: Path, seed: int, *extra: str) -> tuple[int, dict, Path]:
    """`stack prepare --tokenizer bpe` of `corpus` with --seed `seed` into tmp_path/d, its record
    filed in tmp_path/ledger: the exit code, GATE-DATA-007's sample check's result and the DATA_DIR."""
    out, ledger = tmp_path / "d", tmp_path / "ledger"
    argv = ["prepare", str(corpus), "--out", str(out), "--tokenizer", "bpe", "--vocab-size", "300"]
    argv += ["--bpe-sample", "8000", "--seed", str(seed), "--val-fraction", "0.1", "--workers", "1"]
    code = main([*argv, *extra, "--evidence-dir", str(ledger)])
    (record,) = ledger.glob("*/metadata.json")
    results = [g for g in read_evidence(record).gates if g.id == "GATE-DATA-007"]
    sample = next(g for g in results if "sample_sha256" in g.measured)
    return code, {"verdict": sample.verdict.value, **sample.measured}, out


def _seedless(monkeypatch: pytest.MonkeyPatch) -> None:
    """Planted: the sampler's priority drawn with seed 0 whatever the run's --seed."""
    real = bpe_sample.priority
    monkeypatch.setattr(bpe_sample, "priority", lambda seed, sha: real(0, sha))


@pytest.mark.gate("GATE-DATA-007")
def test_a_bpe_sample_that_ignores_the_seed_halts(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The seed ignored, --seed 3: the BPE reads seed 0's units; prepare halts (exit 3, GATE-DATA-007
    named) before any DATA_DIR is published, its record stating the two samples."""
    _seedless(monkeypatch)
    code, measured, out = _prepare(corpus, tmp_path, 3)
    assert code == 3 and "GATE-DATA-007" in capsys.readouterr().err
    assert measured["verdict"] == "FAIL" and measured["sample_seed"] == 3
    assert measured["sample_sha256"] != measured["sample_rule_sha256"]
    assert 0 < measured["sample_read_units"] < measured["sample_offered_units"] == 40
    assert not out.exists()


@pytest.mark.gate("GATE-DATA-007")
def test_a_trainer_that_reads_the_sample_in_another_order_halts(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The right units, read largest priority first: the order the trainer is handed is the rule's."""
    real = bpe_sample.BpeSample.texts
    monkeypatch.setattr(bpe_sample.BpeSample, "texts", lambda self: iter(list(real(self))[::-1]))
    code, measured, _ = _prepare(corpus, tmp_path, 3)
    assert code == 3 and "GATE-DATA-007" in capsys.readouterr().err
    assert measured["sample_read_units"] == measured["sample_rule_units"]


@pytest.mark.holds("GATE-DATA-007")
@pytest.mark.parametrize("seed", [0, 3])
def test_the_seeded_sample_holds_and_the_manifest_states_it(
    corpus: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, seed: int
) -> None:
    """The unplanted sampler holds at any seed, its manifest stating the digest the check measured;
    and at --seed 0 the seedless draw is the rule's own, so the seed ignored there holds as well."""
    code, measured, out = _prepare(corpus, tmp_path / "clean", seed)
    assert code == 0 and measured["verdict"] == "PASS"
    assert measured["sample_read_units"] < measured["sample_offered_units"]
    assert load_manifest(out).tokenizer.sample_sha256 == measured["sample_sha256"]
    _seedless(monkeypatch)
    code, planted, _ = _prepare(corpus, tmp_path / "planted", seed)
    assert (code, planted["verdict"]) == ((0, "PASS") if seed == 0 else (3, "FAIL"))


UNITS = st.lists(st.tuples(st.sampled_from(["a", "bé", "abc"]), st.integers(1, 300)), max_size=30)


@given(UNITS, st.integers(0, 1000), st.integers(1, 3000), st.randoms(use_true_random=False))
def test_the_sampler_keeps_what_the_rule_draws(
    units: list[tuple[str, int]], seed: int, budget: int, rng: random.Random
) -> None:
    """stack.data.bpe_sample's streaming draw, offered in any order and merged from parts, reads the
    units contracts.bpe_sample.selected gives, in its order (copies of one text included)."""
    texts = [(text * length)[:length].encode() for text, length in units]
    rng.shuffle(texts)
    parts = [bpe_sample.BpeSample(budget, seed) for _ in range(2)]
    for position, text in enumerate(texts):
        parts[position % 2].offer(text, hashlib.sha256(text).digest())
    parts[0].merge(parts[1])
    read = [hashlib.sha256(text.encode()).digest() for text in parts[0].texts()]
    offered = [(hashlib.sha256(text).digest(), len(text)) for text in texts]
    assert read == selected(offered, seed, budget)


def _bpe_record(corpus: Path, tmp_path: Path) -> Path:
    """The run directory of a clean `stack prepare --tokenizer bpe --seed 3` record."""
    code, measured, _ = _prepare(corpus, tmp_path, 3)
    assert code == 0 and measured["verdict"] == "PASS"
    (record,) = (tmp_path / "ledger").iterdir()
    return record


def test_the_checker_holds_the_sample_measured_to_the_manifest(corpus: Path, tmp_path: Path) -> None:
    """A record whose GATE-DATA-007 says another sample (or seed) was measured than the manifest
    states is caught: the checker derives them from manifest.json's tokenizer entry and seed."""
    record = _bpe_record(corpus, tmp_path)
    assert findings(record) == []

    def other_sample(data: dict, _run_dir: Path) -> None:
        measured = gate(data, "GATE-DATA-007")["measured"]
        measured["sample_sha256"] = measured["sample_rule_sha256"] = "0" * 64
        measured["sample_seed"] = 0

    edited(record, other_sample)
    assert_caught(record, "GATE-DATA-007", "measured.sample_sha256")
    assert_caught(record, "GATE-DATA-007", "measured.sample_seed")


def test_the_checker_refuses_a_bpe_prepare_without_the_sample_check(corpus: Path, tmp_path: Path) -> None:
    """A bpe prepare of GATE-DATA-007 rev 4 whose gate holds no check sample (the sample never held
    to the seed's draw) is a finding: the checker fails closed."""
    record = _bpe_record(corpus, tmp_path)
    edited(record, lambda data, _dir: check_taken_out(data, "GATE-DATA-007", "sample"))
    assert_caught(record, "holds no check sample")
