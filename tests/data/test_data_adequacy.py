"""Corpus adequacy (GATE-DATA-004): the ratios are right, and a starved plan is recorded as WARN."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from contracts.errors import BadInput
from contracts.evidence import Verdict
from contracts.ledger import Ledger, recording
from contracts.spec import load_spec
from stack.data.adequacy import corpus_adequacy


def _limits() -> tuple[float, float]:
    spec = load_spec()
    return (
        float(spec.threshold("GATE-DATA-004", "max_repeats")),
        float(spec.threshold("GATE-DATA-004", "min_tokens_per_parameter")),
    )


@settings(max_examples=60)
@given(st.integers(1, 10**13), st.integers(1, 10**12), st.integers(1, 10**11))
def test_ratios_and_limits_come_from_the_inputs_and_the_spec(planned: int, unique: int, params: int) -> None:
    with recording(Ledger()):
        result = corpus_adequacy(planned, unique, params, start_from="seed")
    max_repeats, min_tpp = _limits()
    assert result.repeats == pytest.approx(planned / unique)
    assert result.tokens_per_parameter == pytest.approx(planned / params)
    assert (result.max_repeats, result.min_tokens_per_parameter) == (max_repeats, min_tpp)
    assert result.adequate == (result.repeats <= max_repeats and result.tokens_per_parameter >= min_tpp)


def test_an_adequate_plan_passes() -> None:
    max_repeats, min_tpp = _limits()
    params = 1_000_000
    planned = int(params * min_tpp)
    with recording(Ledger()) as ledger:
        result = corpus_adequacy(planned, int(planned / max_repeats) + 1, params, start_from="seed")
    assert result.adequate and ledger.results["GATE-DATA-004"].verdict is Verdict.PASS


@pytest.mark.gate("GATE-DATA-004")
def test_the_origin_story_is_recorded_as_warn_and_does_not_raise() -> None:
    """370M parameters on 18M tokens for dozens of epochs: both limits broken, the run goes on."""
    params, unique = 370_000_000, 18_000_000
    with recording(Ledger()) as ledger:
        result = corpus_adequacy(
            planned_tokens=40 * unique, unique_train_tokens=unique, n_params=params, start_from="seed"
        )
    verdict = ledger.results["GATE-DATA-004"]
    assert not result.adequate and verdict.verdict is Verdict.WARN
    assert verdict.measured == {
        "repeats": 40.0,
        "tokens_per_parameter": pytest.approx(40 * unique / params),
        "start_from": "seed",
    }
    assert verdict.threshold == dict(zip(["max_repeats", "min_tokens_per_parameter"], _limits(), strict=True))


@pytest.mark.gate("GATE-DATA-004")
def test_repetition_alone_is_enough_to_warn() -> None:
    max_repeats, min_tpp = _limits()
    params = 1000
    planned = int(params * min_tpp * 10)
    with recording(Ledger()) as ledger:
        corpus_adequacy(planned, int(planned / (max_repeats * 2)), params, start_from="seed")
    assert ledger.results["GATE-DATA-004"].verdict is Verdict.WARN


@pytest.mark.gate("GATE-DATA-004")
def test_tokens_per_parameter_just_below_the_limit_warns_only_a_run_from_its_seed() -> None:
    """Rev 2: Chinchilla's ratio sizes pretraining. A plan just below it warns a run whose weights
    start from its seed's initialisation, and not one that started from a checkpoint's (a
    fine-tune: every `stack sft` on a few thousand examples warned at about 0.01); just at it,
    neither warns. Repeats within their limit throughout."""
    _, min_tpp = _limits()
    params = 1_000_000
    at_limit = int(params * min_tpp)
    verdicts = {}
    for start_from in ("seed", "checkpoint"):
        for planned in (at_limit - 1, at_limit):
            with recording(Ledger()) as ledger:
                corpus_adequacy(planned, planned, params, start_from=start_from)
            verdicts[start_from, planned] = ledger.results["GATE-DATA-004"].verdict
    assert verdicts == {
        ("seed", at_limit - 1): Verdict.WARN,
        ("seed", at_limit): Verdict.PASS,
        ("checkpoint", at_limit - 1): Verdict.PASS,
        ("checkpoint", at_limit): Verdict.PASS,
    }


@pytest.mark.gate("GATE-DATA-004")
def test_a_fine_tune_repeating_its_data_past_the_limit_still_warns() -> None:
    """Repeats are judged for every run: a fine-tune planned just past max_repeats passes over its
    examples warns; just at it, it does not."""
    max_repeats, _ = _limits()
    unique = 10_000
    verdicts = []
    for planned in (int(unique * max_repeats), int(unique * max_repeats) + 1):
        with recording(Ledger()) as ledger:
            corpus_adequacy(planned, unique, 10**9, start_from="checkpoint")
        verdicts.append(ledger.results["GATE-DATA-004"].verdict)
    assert verdicts == [Verdict.PASS, Verdict.WARN]


@pytest.mark.parametrize("args", [(0, 1, 1), (1, 0, 1), (1, 1, 0)])
def test_zero_counts_are_bad_input(args: tuple[int, int, int]) -> None:
    with pytest.raises(BadInput, match="must be >= 1"):
        corpus_adequacy(*args, start_from="seed")
