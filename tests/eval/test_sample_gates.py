"""`stack sample` under GATE-TRAIN-005 rev 5, with a record of its own (run kind sample).

Every draw `stack sample` prints is replayed from the logits it was made from under the options
given (repetition penalty, temperature, top-k, top-p, written out in stack.model.sampling_checks
apart from stack.model.generate), and those logits are held to a plain forward of the draw's
window, past the model's context too. Each falsifier plants one bug in
stack.model.generate and runs the command: an inverted repetition penalty, a long generation
that keeps the oldest half of the text, top-p cut before the temperature, and one
token off its replay (just beyond max_mismatched_draws). Each exits 3 with a halted record; the
unplanted command prints the same text as ever and records its gates PASS.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import torch

from contracts.evidence import canonical_sha256, read_evidence
from contracts.seeds import seeded_state_sha256
from contracts.spec import load_spec
from stack.cli import main
from stack.model import generate as generate_module
from stack.model import sampling_checks
from stack.model.sampling_checks import Window, context_windows
from tests.support.ledger_support import assert_caught, edited
from tests.support.train_support import prepared, smoke_args, train
from tools.integrity.models.trace_tokens import trace_token_problems

# Past the smoke model's context of 32: three windows.
LONG = ["--prompt", "the gate ", "--tokens", "60", "--seed", "3"]
OPTIONS = {
    "default": [],
    "penalty": ["--repetition-penalty", "1.5"],
    "top-p-hot": ["--top-p", "0.5", "--temperature", "1.5"],
    "greedy-penalty": ["--temperature", "0", "--repetition-penalty", "1.3"],
    "top-k-top-p": ["--top-k", "5", "--top-p", "0.9"],
}


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke model (ctx 32) trained a few steps."""
    root = tmp_path_factory.mktemp("sample")
    out = root / "run"
    assert train(smoke_args(prepared(root), out)) == 0
    return out


def _sample(run: Path, record: Path | None, *options: str) -> int:
    argv = ["sample", str(run), *LONG, *options]
    return main([*argv, "--record", str(record)] if record is not None else argv)


def _result(record: Path) -> dict[str, Any]:
    """GATE-TRAIN-005's result in the sample's record."""
    data = json.loads((record / "metadata.json").read_text())
    return next(g for g in data["gates"] if g["id"] == "GATE-TRAIN-005")


def _halted(record: Path) -> dict[str, Any]:
    """The measured values of the FAIL the halted sample's record holds."""
    assert json.loads((record / "metadata.json").read_text())["run"]["status"] == "halted"
    result = _result(record)
    assert result["verdict"] == "FAIL"
    return result["measured"]


def test_the_windows_of_a_long_generation_are_the_documented_ones() -> None:
    """A prompt of 24 and 300 tokens at ctx 128: the whole text up to the context,
    then chunks after the newest half; a prompt that fills the context is read from its newest half."""
    assert context_windows(24, 300, 128) == [
        Window(0, 24, 104),
        Window(64, 128, 64),
        Window(128, 192, 64),
        Window(192, 256, 64),
        Window(256, 320, 4),
    ]
    assert context_windows(40, 10, 32) == [Window(24, 40, 10)]
    assert context_windows(5, 10, 32) == [Window(0, 5, 10)]


@pytest.mark.holds("GATE-TRAIN-005")
@pytest.mark.parametrize("options", OPTIONS.values(), ids=OPTIONS.keys())
def test_a_sample_is_drawn_as_its_options_name_and_recorded(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], options: list[str]
) -> None:
    assert _sample(run, None, *options) == 0
    printed = capsys.readouterr().out
    record = tmp_path / "record"
    assert _sample(run, record, *options) == 0
    assert capsys.readouterr().out == printed  # the record changes nothing of what is sampled
    data = json.loads((record / "metadata.json").read_text())
    assert data["run"]["kind"] == "sample" and data["run"]["status"] == "completed"
    assert {g["id"]: g["verdict"] for g in data["gates"]} == {
        "GATE-CKPT-002": "PASS",
        "GATE-MODEL-003": "PASS",
        "GATE-TRAIN-005": "PASS",
    }
    measured = _result(record)["measured"]
    assert (measured["draws"], measured["probe_draws"], measured["mismatched_draws"]) == (60, 1024, 0)
    # check seeded: the draws started from the state --seed 3 gives a fresh generator (contracts.seeds)
    assert (measured["seed"], measured["generator_device"]) == (3, "cpu")
    assert (
        measured["generator_state_sha256"] == measured["seeded_state_sha256"] == seeded_state_sha256(3, "cpu")
    )
    assert json.loads((record / "sample.json").read_text())["text"] + "\n" == printed


def _inverted_penalty(logits: torch.Tensor, seen: torch.Tensor, penalty: float) -> torch.Tensor:
    """Planted: a seen token's positive logit multiplied by the penalty, a negative one divided."""
    previous = logits.gather(1, seen)
    previous = torch.where(previous > 0, previous * penalty, previous / penalty)
    return logits.scatter(1, seen, previous)


def _top_p_before_temperature(
    logits: torch.Tensor,
    seen: torch.Tensor,
    *,
    temperature: float,
    top_k: int | None,
    top_p: float | None,
    repetition_penalty: float,
    generator: torch.Generator | None,
) -> torch.Tensor:
    """Planted: sample_next with the top-p cut made on the unscaled logits."""
    logits = logits.float()
    if repetition_penalty != 1.0:
        logits = generate_module.penalise_repeats(logits, seen, repetition_penalty)
    if temperature == 0:
        return logits.argmax(dim=-1, keepdim=True)
    if top_p is not None:
        logits = generate_module.keep_top_p(logits, top_p)
    logits = logits / temperature
    if top_k is not None:
        logits = generate_module.keep_top_k(logits, top_k)
    return torch.multinomial(torch.softmax(logits, dim=-1), 1, generator=generator)


def _top_p_keeping_none(logits: torch.Tensor, p: float) -> torch.Tensor:
    """Planted: keep_top_p cuts on the mass up to and including each token, so a row whose
    most likely token alone reaches p keeps nothing (torch.multinomial would stop on it)."""
    sorted_logits, order = torch.sort(logits, dim=-1, descending=True)
    reached = torch.softmax(sorted_logits, dim=-1).cumsum(dim=-1)
    sorted_logits = sorted_logits.masked_fill(reached >= p, float("-inf"))
    return torch.full_like(logits, float("-inf")).scatter(1, order, sorted_logits)


def _oldest_half(model: Any, idx: torch.Tensor, max_new_tokens: int, **sampling: Any) -> torch.Tensor:
    """Planted: generate_long whose next chunk continues the oldest half of the text."""
    ctx = model.config.ctx
    out, remaining = idx, max_new_tokens
    while remaining > 0:
        window = out[:, : ctx // 2] if out.shape[1] >= ctx else out
        chunk = min(remaining, ctx - window.shape[1])
        grown = generate_module.generate(model, window, chunk, **sampling)
        out = torch.cat((out, grown[:, window.shape[1] :]), dim=1)
        remaining -= chunk
    return out


@pytest.mark.gate("GATE-TRAIN-005")
@pytest.mark.parametrize(
    ("target", "name", "mutant", "options", "check"),
    [
        (
            generate_module,
            "penalise_repeats",
            _inverted_penalty,
            OPTIONS["penalty"],
            "mismatched_probe_draws",
        ),
        (
            generate_module,
            "sample_next",
            _top_p_before_temperature,
            OPTIONS["top-p-hot"],
            "mismatched_probe_draws",
        ),
        (sampling_checks, "generate_long", _oldest_half, [], "context_logits_deviation"),
        (generate_module, "keep_top_p", _top_p_keeping_none, OPTIONS["top-p-hot"], "mismatched_probe_draws"),
    ],
    ids=["penalty-inverted", "top-p-before-temperature", "oldest-half", "top-p-keeps-none"],
)
def test_a_sampler_that_departs_from_its_options_exits_3_with_a_halted_record(
    run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    target: object,
    name: str,
    mutant: Any,
    options: list[str],
    check: str,
) -> None:
    monkeypatch.setattr(target, name, mutant)
    record = tmp_path / "record"
    assert _sample(run, record, *options) == 3
    assert "gate fired: GATE-TRAIN-005" in capsys.readouterr().err
    measured = _halted(record)
    rtol = load_spec().threshold("GATE-TRAIN-005", "context_logits_rtol")
    assert measured[check] > (rtol if check == "context_logits_deviation" else 0)


@pytest.mark.parametrize(
    ("planted", "fires"),
    [
        pytest.param(True, True, marks=pytest.mark.gate("GATE-TRAIN-005")),
        pytest.param(False, False, marks=pytest.mark.holds("GATE-TRAIN-005")),
    ],
)
def test_one_printed_token_off_its_replay_fires(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, planted: bool, fires: bool
) -> None:
    """The first token drawn is replaced by its neighbour: one mismatched draw, just beyond
    max_mismatched_draws (0); the same command unplanted holds."""
    real, calls = generate_module.sample_next, []

    def one_off(logits: torch.Tensor, seen: torch.Tensor, **settings: Any) -> torch.Tensor:
        token = real(logits, seen, **settings)
        calls.append(1)
        return (token + 1) % logits.shape[-1] if planted and len(calls) == 1 else token

    monkeypatch.setattr(generate_module, "sample_next", one_off)
    record = tmp_path / "record"
    assert _sample(run, record) == (3 if fires else 0)
    allowed = load_spec().threshold("GATE-TRAIN-005", "max_mismatched_draws")
    assert _result(record)["measured"]["mismatched_draws"] == allowed + (1 if planted else 0)


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_generation_that_lost_its_prompts_last_token_fires(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The planted bug (a prompt stripped before it is encoded): the model continues the prompt
    short of its last token, every draw replayed right against what it was given. Held to the prompt
    the record names, encoded again, the ids it continued differ."""
    real = sampling_checks.sample_checked
    monkeypatch.setattr(
        sampling_checks, "sample_checked", lambda model, idx, *args: real(model, idx[:, :-1], *args)
    )
    record = tmp_path / "record"
    assert _sample(run, record) == 3
    assert _halted(record)["prompt_tokens_differing"] > 0


@pytest.mark.holds("GATE-TRAIN-005")
def test_a_prompt_past_the_context_is_continued_as_given(run: Path, tmp_path: Path) -> None:
    """A prompt longer than the smoke model's context (32) is read from its newest half, and the
    text returned still begins with every token of it."""
    record = tmp_path / "record"
    argv = ["sample", str(run), "--prompt", "the gate " * 8, "--tokens", "8", "--record", str(record)]
    assert main(argv) == 0
    assert _result(record)["measured"]["prompt_tokens_differing"] == 0


# -- check seeded: the draws start from the state the seed asked for gives a fresh generator -------


def _seeded_with_zero(real: Any) -> Any:
    """Planted: the generator `stack sample` draws with seeded with 0, whatever --seed says."""

    def planted(
        model: Any, idx: torch.Tensor, tokens: int, sampler: Any, generator: Any, seed: int, on_token: Any
    ) -> Any:
        return real(model, idx, tokens, sampler, generator.manual_seed(0), seed, on_token)

    return planted


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_sample_drawn_from_another_seed_than_asked_is_refused(
    run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every seed would print the same text, and every draw replays from the state the sampler kept;
    that state is not the one --seed 3 gives a fresh generator. Exit 3 with a halted record."""
    monkeypatch.setattr(sampling_checks, "sample_checked", _seeded_with_zero(sampling_checks.sample_checked))
    record = tmp_path / "record"
    assert _sample(run, record) == 3
    err = capsys.readouterr().err
    assert "gate fired: GATE-TRAIN-005" in err and "another seed than the one asked for" in err, err
    measured = _halted(record)
    assert (measured["seed"], measured["mismatched_draws"], measured["mismatched_probe_draws"]) == (3, 0, 0)
    assert measured["generator_state_sha256"] == seeded_state_sha256(0, "cpu")


@pytest.mark.holds("GATE-TRAIN-005")
def test_two_seeds_print_two_texts(run: Path, capsys: pytest.CaptureFixture[str]) -> None:
    """What a sampler seeded with 0 whatever --seed says takes away: --seed 3 and --seed 4 print
    different continuations."""
    texts = []
    for seed in ("3", "4"):
        assert _sample(run, None, "--seed", seed) == 0
        texts.append(capsys.readouterr().out)
    assert texts[0] != texts[1]


def _seed_restated(data: dict[str, Any], _run_dir: Path) -> None:
    """The record's command line and config say --seed 4 of a sample drawn from seed 3."""
    argv = data["run"]["argv"]
    argv[argv.index("--seed") + 1] = "4"
    data["config"]["seed"] = 4
    data["config_sha256"] = canonical_sha256(data["config"])


@pytest.mark.gate("GATE-INTEG-001")
def test_a_sample_whose_record_names_another_seed_than_it_drew_from_is_caught(
    run: Path, tmp_path: Path
) -> None:
    """The checker seeds a generator again from the seed the record's config names (contracts.seeds):
    the seed the gate judged, and the state it gives, are not the record's."""
    record = tmp_path / "record"
    assert _sample(run, record) == 0
    edited(record, _seed_restated)
    assert_caught(record, "gates[GATE-TRAIN-005].measured.seed is 3, but its artifacts derive 4")
    assert_caught(record, "gates[GATE-TRAIN-005].measured.seeded_state_sha256 is")


CHATML_PROMPT = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"


@pytest.fixture(scope="module")
def chat_model(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A ChatML Qwen2 (its Hugging Face directory) and its `stack import-hf` import."""
    from tests.support.hf_fixtures import tiny_chatml_qwen2

    root = tmp_path_factory.mktemp("chatml")
    source = tiny_chatml_qwen2(root / "hf")
    assert main(["import-hf", str(source), "--out", str(root / "imported")]) == 0
    return source, root / "imported"


def test_a_chat_prompt_is_sampled_on_its_special_tokens_ids(
    chat_model: tuple[Path, Path], tmp_path: Path
) -> None:
    """The ChatML markers typed into --prompt are the model's special ids, as transformers (the
    tokenizers library's own encode) gives them and as `prepare --format chat` writes them; sample.json
    states those ids."""
    from tokenizers import Tokenizer as Backend

    source, imported = chat_model
    assert (
        main(
            [
                "sample",
                str(imported),
                "--prompt",
                CHATML_PROMPT,
                "--tokens",
                "2",
                "--record",
                str(tmp_path / "r"),
            ]
        )
        == 0
    )
    library = Backend.from_file(str(source / "tokenizer.json"))
    expected = library.encode(CHATML_PROMPT, add_special_tokens=False).ids
    assert expected[0] == library.token_to_id("<|im_start|>")
    kept = json.loads((tmp_path / "r" / "sample.json").read_text())
    assert (kept["prompt_ids"], kept["prompt_tokens"]) == (expected, len(expected))
    record = read_evidence(tmp_path / "r" / "metadata.json")
    assert trace_token_problems(record, tmp_path / "r", load_spec()) == []  # the checker agrees
    kept["prompt_ids"] = [*expected[1:], expected[0]]
    (tmp_path / "r" / "sample.json").write_text(json.dumps(kept))
    (problem,) = trace_token_problems(record, tmp_path / "r", load_spec())
    assert "prompt_ids" in problem


def _drawn_past_an_end(run: Path, root: Path) -> tuple[list[str], int]:
    """Options under which the run's model draws the end-of-text among its 60 tokens (a hot
    temperature makes every token about equally likely, so a few seeds find one), and its id."""
    from stack.train.trained import load_measured

    eot = load_measured(run, "cpu").tokenizer.eot_id
    for seed in range(40):
        options = ["--temperature", "50", "--seed", str(seed)]
        record = root / f"seed-{seed}"
        assert _sample(run, record, *options, "--ignore-eot") == 0
        if eot in json.loads((record / "sample.json").read_text())["drawn"][:-1]:
            return options, eot
    raise AssertionError("no seed of 40 drew the end-of-text")


def test_the_text_stops_where_the_model_ended_the_document(
    run: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A draw of the end-of-text ends the text (as transformers' generate stops at
    its end-of-sequence), and the terminal says so; --ignore-eot shows every draw. Both records keep
    all 60 draws, state the choice, and pass the integrity check's text derivation."""
    from stack.train.trained import load_measured

    options, eot = _drawn_past_an_end(run, tmp_path)
    capsys.readouterr()
    stopped, on = tmp_path / "stopped", tmp_path / "on"
    assert _sample(run, stopped, *options) == 0
    note = capsys.readouterr().err
    assert _sample(run, on, *options, "--ignore-eot") == 0
    kept = [json.loads((d / "sample.json").read_text()) for d in (stopped, on)]
    assert kept[0]["drawn"] == kept[1]["drawn"] and len(kept[0]["drawn"]) == 60
    end = kept[0]["drawn"].index(eot)
    tokenizer = load_measured(run, "cpu").tokenizer
    assert kept[0]["text"] == "the gate " + tokenizer.text_of(kept[0]["drawn"][:end])
    assert kept[1]["text"] == "the gate " + tokenizer.text_of(kept[1]["drawn"])
    assert kept[0]["text"] != kept[1]["text"]
    assert f"the model ended the text (end-of-text) after {end} of 60 tokens" in note
    for record, ignored in ((stopped, False), (on, True)):
        assert read_evidence(record / "metadata.json").config["ignore_eot"] is ignored
        assert trace_token_problems(read_evidence(record / "metadata.json"), record, load_spec()) == []


def _text_run_on(run: Path) -> Callable[[dict[str, Any], Path], None]:
    """sample.json's text shows the draws past the end-of-text while the record says it stopped."""
    from stack.train.trained import load_measured

    tokenizer = load_measured(run, "cpu").tokenizer

    def change(data: dict[str, Any], run_dir: Path) -> None:
        path = run_dir / "sample.json"
        kept = json.loads(path.read_text())
        kept["text"] = data["config"]["prompt"] + tokenizer.text_of(kept["drawn"])
        path.write_text(json.dumps(kept))

    return change


def _config_set(**values: Any) -> Callable[[dict[str, Any], Path], None]:
    """The record's config with `values` set (None: the key taken out), its hash made again."""

    def change(data: dict[str, Any], _run_dir: Path) -> None:
        for key, value in values.items():
            data["config"].pop(key) if value is None else data["config"].update({key: value})
        data["config_sha256"] = canonical_sha256(data["config"])

    return change


@pytest.mark.gate("GATE-INTEG-001")
def test_a_sample_text_run_on_past_its_end_of_text_is_caught(run: Path, tmp_path: Path) -> None:
    """The checker derives the text from the draws with stack.cli.sample.sample_text, so a text that
    shows what the model drew past the end it drew is caught; so is a record that keeps the stop
    out of its config, or states --ignore-eot its command line does not give."""
    options, _eot = _drawn_past_an_end(run, tmp_path)
    for name, change, caught in (
        ("run-on", _text_run_on(run), "sample.json: its text is"),
        ("unstated", _config_set(ignore_eot=None), "config states no ignore_eot"),
        ("restated", _config_set(ignore_eot=True), "config.ignore_eot is True, but its command line gives"),
    ):
        record = tmp_path / name
        assert _sample(run, record, *options) == 0
        assert_caught(edited(record, change), caught)
