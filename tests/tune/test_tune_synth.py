"""`stack synth`: Magpie-style synthetic instruction data, under GATE-SYNTH-001..002.

Falsifiers plant a write that loses the last record and a sampler that is not the seeded one;
the filters are tested on planted samples of each reason.
"""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
import torch

from contracts.evidence import read_evidence
from contracts.gates import measure
from contracts.seeds import seeded_state_sha256
from contracts.spec import load_spec
from stack.cli import main
from stack.data.manifest import load_manifest
from stack.model.sampling_checks import DrawTally, Sampler
from stack.tune import synth
from stack.tune.settings import SynthSettings
from tests.support.trace_support import save_run, tiny_model
from tools.integrity.record_checks import check_record_truth

# Loose filters, so that a random model's samples are kept and the file is not empty.
LOOSE = ("--min-chars", "1", "--min-coherence", "0.001", "--max-instruction-tokens", "12")


@pytest.fixture(scope="module")
def source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A random byte-level model of context 128, room for an instruction and its response."""
    root = tmp_path_factory.mktemp("synth")
    save_run(root / "source", tiny_model(ctx=128))
    return root / "source"


def _synth(source: Path, out: Path, *options: str) -> int:
    return main(
        ["synth", str(source), "--out", str(out), "--samples", "3", "--max-response-tokens", "24", *options]
    )


def _verdicts(out: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(out / "metadata.json").gates}


@pytest.mark.holds("GATE-SYNTH-001", "GATE-SYNTH-002")
def test_the_same_seed_writes_the_same_file_and_the_counts_add_up(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    assert _synth(source, first, *LOOSE) == 0
    assert "generated 3, kept" in capsys.readouterr().out
    assert _synth(source, second, *LOOSE) == 0
    assert (first / "synth.jsonl").read_bytes() == (second / "synth.jsonl").read_bytes()
    sidecar = json.loads((first / "synth.json").read_text())
    lines = (first / "synth.jsonl").read_text().splitlines()
    assert sidecar["kept"] == len(lines) >= 1
    assert sidecar["kept"] + sum(sidecar["dropped"].values()) == sidecar["generated"] == 3
    assert sidecar["seed"] == 0 and len(sidecar["model"]["manifest_sha256"]) == 64
    roles = [[m["role"] for m in json.loads(line)["messages"]] for line in lines]
    assert roles == [["user", "assistant"]] * len(lines)  # chat records, as `prepare --format chat` reads
    required = load_spec().required_gates("synth")
    assert {g: v for g, v in _verdicts(first).items() if g in required} == dict.fromkeys(required, "PASS")


def test_synth_output_is_sft_data_as_it_is(source: Path, tmp_path: Path) -> None:
    """The seed's workflow, "pipe this into sft": prepare reads the file with no conversion."""
    out, data = tmp_path / "synth", tmp_path / "data"
    assert _synth(source, out, *LOOSE) == 0
    kept = len((out / "synth.jsonl").read_text().splitlines())
    argv = [
        "prepare",
        str(out / "synth.jsonl"),
        "--format",
        "chat",
        "--pack-len",
        "128",
        "--tokenizer",
        str(source),
    ]
    assert main([*argv, "--val-fraction", "0", "--out", str(data)]) == 0
    entry = load_manifest(data).sft
    assert entry is not None and entry.examples["train"] == kept and entry.assistant_turns == kept


def test_an_existing_out_is_never_written_over(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "out"
    out.mkdir()
    (out / "synth.jsonl").write_text("mine\n")
    assert _synth(source, out) == 2
    assert "not empty" in capsys.readouterr().err
    assert (out / "synth.jsonl").read_text() == "mine\n"


def test_each_filter_names_its_reason() -> None:
    settings = SynthSettings(min_chars=20, min_coherence=30.0)
    good = synth.Sample(
        "Name three primary colours, please.", "Red, yellow and blue are the primary colours."
    )
    assert synth.drop_reason(good, set(), settings) is None
    assert synth.drop_reason(synth.Sample("Hi?", good.response), set(), settings) == "short"
    loop = synth.Sample(good.instruction, "the cat " * 20)
    assert synth.drop_reason(loop, set(), settings) == "repetitive"
    assert synth.drop_reason(good, {good.sha256}, settings) == "duplicate"


def test_a_synthesis_that_keeps_nothing_says_why_and_what_to_change(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every sample shorter than --min-chars: the file is empty, and the last line names the reason
    most were dropped for and the settings that change it; one that keeps samples says nothing."""
    assert _synth(source, tmp_path / "strict", *LOOSE, "--min-chars", "1000") == 0
    said = capsys.readouterr().err.strip().splitlines()[-1]
    assert said.startswith("stack synth: warning: no sample was kept: 3 of 3 were short;"), said
    assert "--min-chars (1000)" in said and "whole conversations" in said
    assert (tmp_path / "strict" / "synth.jsonl").read_text() == ""
    assert _synth(source, tmp_path / "loose", *LOOSE) == 0
    assert "warning" not in capsys.readouterr().err


@pytest.mark.parametrize("reason", synth.REASONS)
def test_every_reason_a_sample_is_dropped_for_has_a_remedy(reason: str) -> None:
    report = synth.Report(raw_sha256=[""] * 2)
    report.dropped[reason] = 2
    advice = synth.none_kept(report, SynthSettings())
    assert advice is not None and f"2 of 2 were {reason.replace('_', ' ')}; " in advice and "--" in advice


# -- falsifiers --------------------------------------------------------------------------------


@pytest.mark.gate("GATE-SYNTH-001")
def test_a_write_that_loses_the_last_record_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    write = synth.write_records
    monkeypatch.setattr(synth, "write_records", lambda path, samples: write(path, samples[:-1]))
    out = tmp_path / "out"
    assert _synth(source, out, *LOOSE) == 3
    assert "GATE-SYNTH-001" in capsys.readouterr().err
    assert _verdicts(out)["GATE-SYNTH-001"] == "FAIL"


@pytest.mark.gate("GATE-SYNTH-001")
def test_one_sample_unaccounted_for_fires_and_exact_counts_hold() -> None:
    dropped = dict.fromkeys(("short", "repetitive", "duplicate", "no_room"), 1)
    assert measure("GATE-SYNTH-001", {"generated": 6, "kept": 2, "dropped": dropped, "lines": 2}).ok
    assert not measure("GATE-SYNTH-001", {"generated": 7, "kept": 2, "dropped": dropped, "lines": 2}).ok
    assert not measure("GATE-SYNTH-001", {"generated": 6, "kept": 2, "dropped": dropped, "lines": 1}).ok
    odd = {**dropped, "short": 0, "mystery": 1}
    assert not measure("GATE-SYNTH-001", {"generated": 6, "kept": 2, "dropped": odd, "lines": 2}).ok


@pytest.mark.gate("GATE-SYNTH-002")
def test_a_sampler_that_is_not_the_seeded_one_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    draws = itertools.count()
    # The planted bug: each synthesis seeds its own generator afresh, ignoring the seed it was given.
    monkeypatch.setattr(
        synth, "new_generator", lambda seed, device: torch.Generator(device).manual_seed(next(draws))
    )
    out = tmp_path / "out"
    assert _synth(source, out, *LOOSE) == 3
    assert "GATE-SYNTH-002" in capsys.readouterr().err
    assert _verdicts(out)["GATE-SYNTH-002"] == "FAIL"


@pytest.mark.gate("GATE-SYNTH-002")
def test_a_synthesis_seeded_otherwise_than_stated_fires_though_its_replay_agrees(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted in `stack synth`: the generator is seeded with 0 whatever --seed says. The
    replay, seeded the same way, makes every sample again; the state the synthesis drew from is not
    the one --seed 5 gives a fresh generator (check seeded)."""
    real = synth.new_generator
    monkeypatch.setattr(synth, "new_generator", lambda seed, device="cpu": real(0, device))
    out = tmp_path / "out"
    assert _synth(source, out, *LOOSE, "--seed", "5") == 3
    err = capsys.readouterr().err
    assert "GATE-SYNTH-002" in err and "another seed than the one asked for" in err, err
    result = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-SYNTH-002")
    assert result.verdict.value == "FAIL" and (result.measured["seed"], result.measured["mismatched"]) == (
        5,
        0,
    )
    assert result.measured["generator_state_sha256"] == seeded_state_sha256(0, "cpu")


def _train005(out: Path) -> dict[str, object]:
    gate = next(g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-TRAIN-005")
    return {"verdict": gate.verdict.value, **gate.measured}


@pytest.mark.gate("GATE-TRAIN-005")
def test_a_synthesis_drawn_at_another_temperature_than_asked_fires(
    source: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted: `--temperature 0.5` is recorded while every draw is made at T = 1. The replay
    of GATE-SYNTH-002 calls the same sampling and agrees; each draw replayed at the recorded
    temperature from the logits it was made from (and the spread probe, drawn by the same call)
    does not."""
    real = synth.generate

    def at_one(*args: object, **kwargs: object) -> torch.Tensor:
        return real(*args, **{**kwargs, "temperature": 1.0})

    monkeypatch.setattr(synth, "generate", at_one)
    out = tmp_path / "out"
    assert _synth(source, out, *LOOSE, "--temperature", "0.5") == 3
    assert "GATE-TRAIN-005" in capsys.readouterr().err
    measured = _train005(out)
    assert measured["verdict"] == "FAIL" and measured["temperature"] == 0.5
    assert measured["mismatched_probe_draws"] > 0 and measured["mismatched_draws"] > 0
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []


@pytest.mark.holds("GATE-TRAIN-005")
def test_a_synthesis_drawn_at_the_temperature_asked_holds(source: Path, tmp_path: Path) -> None:
    out = tmp_path / "out"
    assert _synth(source, out, *LOOSE, "--temperature", "0.5") == 0
    measured = _train005(out)
    assert measured["verdict"] == "PASS" and measured["temperature"] == 0.5
    assert measured["draws"] > 0 and measured["mismatched_draws"] == measured["mismatched_probe_draws"] == 0
    assert check_record_truth(read_evidence(out / "metadata.json"), out, load_spec()).violations == []


@pytest.mark.gate("GATE-SYNTH-002")
def test_a_replay_one_sample_short_fires_and_a_full_one_holds() -> None:
    wanted = int(load_spec().threshold("GATE-SYNTH-002", "replay_samples"))
    assert measure("GATE-SYNTH-002", {"replayed": wanted, "generated": 10, "mismatched": 0}).ok
    assert not measure("GATE-SYNTH-002", {"replayed": wanted - 1, "generated": 10, "mismatched": 0}).ok
    assert measure("GATE-SYNTH-002", {"replayed": 1, "generated": 1, "mismatched": 0}).ok
    assert not measure("GATE-SYNTH-002", {"replayed": wanted, "generated": 10, "mismatched": 1}).ok


@pytest.mark.parametrize("device", ["gpu", "cuda:x", "cuda:99"])
def test_a_device_that_is_not_one_is_one_line_and_exit_2(
    source: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str], device: str
) -> None:
    assert _synth(source, tmp_path / "out", "--device", device) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and ("device" in err or "cuda" in err)
    assert not (tmp_path / "out").exists()


@pytest.mark.holds("GATE-SYNTH-001", "GATE-SYNTH-002")
def test_the_device_is_where_it_samples_and_is_recorded(source: Path, tmp_path: Path) -> None:
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    for device in devices:
        out = tmp_path / device
        assert _synth(source, out, *LOOSE, "--device", device) == 0
        record = read_evidence(out / "metadata.json")
        assert record.env.device == device
        assert {g.verdict.value for g in record.gates} == {"PASS"}
        assert check_record_truth(record, out, load_spec()).violations == []
        seeded = next(g.measured for g in record.gates if g.id == "GATE-SYNTH-002")
        assert (
            seeded["generator_state_sha256"]
            == seeded["seeded_state_sha256"]
            == seeded_state_sha256(0, device)
        )


def test_the_template_markers_reach_the_model_as_their_special_ids(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A ChatML template's `<|im_start|>` is asked as its special id, as `stack prepare --format chat`
    wrote it into the data the model was tuned on; the model's own instruction text stays text."""
    from stack.data.sft_template import load_template
    from stack.data.tokenizer import PretrainedTokenizer
    from tests.support.hf_fixtures import qwen2_tokenizer

    tokenizer = PretrainedTokenizer.from_dir(qwen2_tokenizer(tmp_path / "qwen"))
    (tmp_path / "chatml.yaml").write_text(
        "name: chatml\nroles:\n"
        '  user: {prefix: "<|im_start|>user\\n", suffix: "<|im_end|>\\n"}\n'
        '  assistant: {prefix: "<|im_start|>assistant\\n"}\n'
        'assistant_marker: "<|im_start|>assistant"\n'
    )
    template = load_template(str(tmp_path / "chatml.yaml"))
    asked: list[list[int]] = []
    real = synth.generate

    def recording(model: torch.nn.Module, ids: torch.Tensor, *args: object, **kwargs: object) -> torch.Tensor:
        asked.append(ids[0].tolist())
        return real(model, ids, *args, **kwargs)

    monkeypatch.setattr(synth, "generate", recording)
    model = tiny_model(ctx=128, vocab=tokenizer.vocab_size)
    settings = SynthSettings(samples=1, max_instruction_tokens=8, max_response_tokens=8)
    report = synth.Report(tally=DrawTally(Sampler(settings.temperature)))
    synth.draw(model, tokenizer, template, settings, synth.new_generator(0, torch.device("cpu")), report)
    start = tokenizer.special_tokens["<|im_start|>"]
    assert asked[0][0] == start and asked[0][1:] == tokenizer.encode("user\n")
    assert len(asked) == 2 and asked[1].count(start) == 2
    assert tokenizer.special_tokens["<|im_end|>"] in asked[1]
