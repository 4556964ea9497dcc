"""`stack lens`: the logit lens and the tuned lens on a trained model, and the gates that keep them honest.

Falsifiers plant each lens bug in the stack's own code path: probes that do not start at the
identity, probes cut from the gradient (the validation doc's bug), probes that lose to the
logit lens, a lens read through another model or no final norm, a lens fed post-norm states,
a learning-rate schedule other than the documented one (one shifted by one step), a
held-out KL other than KL(final ‖ layer) (one reversed), a lens trained on
the reversed KL, held-out means over one batch too many, the two lenses' columns swapped, a reading
against the last lens layer as final, and log-probabilities reported as probabilities.
"""

from __future__ import annotations

import contextlib
import csv
import json
import math
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from safetensors import safe_open
from torch import nn

from contracts.errors import BadInput, GateViolation
from contracts.evidence import Verdict, read_evidence
from contracts.judges import judge
from contracts.ledger import Ledger, recording
from contracts.schedule import linear_decay_at
from contracts.spec import load_spec
from stack.cli import main
from stack.data.heldout import heldout_batches
from stack.data.manifest import load_manifest
from stack.data.reader import TokenReader
from stack.lens import probes, readout, residual
from stack.lens import train as lens_train
from stack.lens.defaults import DEFAULT_CLIP_NORM
from stack.lens.probes import TunedLens, for_model, health_outcome, model_sha256
from stack.lens.readout import read
from stack.lens.residual import capture
from stack.lens.train import LensTraining, heldout_comparison, train_lens
from stack.trace.sites import block_input
from stack.train.trained import load_trained
from tests.support.ledger_support import edited, findings, gate
from tests.support.trace_support import save_run, tiny_model
from tests.support.train_support import two_layer_run

PROMPT = "gate evidence model"
QUICK = LensTraining(steps=4, batch_size=2, seq_len=16, lr=1.0, momentum=0.9, seed=0, heldout_batches=2)


def _quiet(step: int, line: dict[str, float]) -> None:
    """Progress that prints nothing."""


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A two-layer model trained by `stack train` on a generated corpus, and a tuned lens of it."""
    root = tmp_path_factory.mktemp("lens")
    data, run = two_layer_run(root)
    lens = root / "lens.safetensors"
    argv = ["lens", str(run), "--train", "--data", str(data), "--save", str(lens), "--steps", "60"]
    assert main([*argv, "--seq-len", "32", "--out", str(root / "train-record")]) == 0
    return {"data": data, "run": run, "lens": lens, "train_record": root / "train-record"}


def _verdicts(record_dir: Path) -> dict[str, str]:
    return {g.id: g.verdict.value for g in read_evidence(record_dir / "metadata.json").gates}


def _ids(n: int = 12) -> torch.Tensor:
    return torch.randint(256, (1, n), generator=torch.Generator().manual_seed(1))


# -- the clean path, through the real CLI -------------------------------------------------


@pytest.mark.holds("GATE-LENS-004", "GATE-LENS-005")
def test_logit_lens_table_json_csv_and_record(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out, js, table = tmp_path / "rec", tmp_path / "lens.json", tmp_path / "lens.csv"
    argv = ["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(out), "--json", str(js)]
    assert main([*argv, "--csv", str(table), "--top-k", "3"]) == 0
    text = capsys.readouterr().out
    assert "logit lens" in text and "final  logits" in text and "verdict: read" in text
    record = read_evidence(out / "metadata.json")
    assert record.run.kind == "lens" and record.metrics["mode"] == "logit-lens"
    judged = ("GATE-CKPT-002", "GATE-LENS-004", "GATE-LENS-005", "GATE-LENS-006")
    assert _verdicts(out) == dict.fromkeys(judged, "PASS")
    rows = record.metrics["per_layer"]  # the site's heat map: a row per layer, a cell per position
    assert [r["site"] for r in rows] == ["embed", "layers.0.output"]
    assert all(len(r["kl"]) == len(PROMPT) == len(r["top1"]) for r in rows)
    payload = json.loads(js.read_text())
    assert payload["readings"][-1]["kl"] == [0.0] * len(PROMPT)  # the model's own distribution
    lines = list(csv.DictReader(table.open()))
    assert len(lines) == 3 * len(PROMPT) and lines[0]["name"] == "embed"


@pytest.mark.holds("GATE-LENS-001", "GATE-LENS-002", "GATE-LENS-003")
def test_training_saves_a_lens_of_this_model_and_reading_it_holds(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    verdicts = _verdicts(trained["train_record"])
    assert {g: verdicts[g] for g in load_spec().required_gates("lens-train")} == dict.fromkeys(
        load_spec().required_gates("lens-train"), "PASS"
    )
    with safe_open(str(trained["lens"]), framework="pt") as handle:
        metadata = handle.metadata()
    model = load_trained(trained["run"]).model
    assert metadata["model_sha256"] == model_sha256(model) and metadata["layers"] == "2"
    record = read_evidence(trained["train_record"] / "metadata.json")
    rows = record.metrics["per_layer"]
    assert all(r["kl_tuned"] <= r["kl_logit"] for r in rows)
    measured = {g.id: g.measured for g in record.gates}
    assert len(measured["GATE-LENS-002"]["applied_lrs"]) == 60  # every step's rate, for the checker
    kl = measured["GATE-LENS-006"]
    assert kl["layers"] == rows and len(kl["recomputed_batches"]) == 8  # per held-out batch, for the judge
    assert kl["objective_steps"] == [1, 60] and len(kl["objective_losses"]) == 2
    assert record.data is not None and record.data.manifest_sha256 == load_manifest(trained["data"]).sha256
    argv = ["lens", str(trained["run"]), "--prompt", PROMPT, "--lens", str(trained["lens"])]
    assert main([*argv, "--out", str(tmp_path / "rec")]) == 0
    assert "tuned lens" in capsys.readouterr().out
    assert _verdicts(tmp_path / "rec")["GATE-LENS-004"] == "PASS"


@pytest.mark.parametrize(
    ("extra", "needle"),
    [
        (["--train"], "--train needs --data"),
        (["--prompt", "x", "--data", "d"], "--data and --save go with --train"),
        ([], "give a non-empty --prompt"),
        (["--prompt", "abc", "--position", "9"], "--position 9 is past"),
        (["--prompt", "abc", "--lens", "{run}/../data/manifest.json"], "needs a tuned-lens file"),
        (["--prompt", "abc", "--out", "{run}/o", "--evidence-dir", "{run}/e"], "give one"),
    ],
)
def test_bad_input_is_one_line_and_exit_2(
    trained: dict[str, Path], extra: list[str], needle: str, capsys: pytest.CaptureFixture[str]
) -> None:
    extra = [e.format(run=trained["run"]) for e in extra]
    assert main(["lens", str(trained["run"]), *extra]) == 2
    assert needle in capsys.readouterr().err


# -- falsifiers ------------------------------------------------------------------------------


@pytest.mark.gate("GATE-LENS-001")
def test_probes_that_do_not_start_at_the_identity_are_refused(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    model = load_trained(trained["run"]).model
    train_lens(model, trained["data"], QUICK, _quiet)  # zero init: the identity holds

    zero = TunedLens.reset

    def forgetful_reset(self: TunedLens) -> None:  # the planted bug: one weight of A left at 1e-3
        zero(self)
        with torch.no_grad():
            self.probes[1].weight[0, 0] = 1e-3

    monkeypatch.setattr(TunedLens, "reset", forgetful_reset)
    with pytest.raises(GateViolation, match="GATE-LENS-001"):
        train_lens(model, trained["data"], QUICK, _quiet)


@pytest.mark.gate("GATE-LENS-002")
def test_a_probe_cut_from_the_gradient_fires(trained: dict[str, Path]) -> None:
    model = load_trained(trained["run"]).model
    lens = for_model(model)
    lens.probes[1].requires_grad_(False)  # the validation doc's bug: the optimizer never sees it
    with pytest.raises(
        GateViolation, match=r"GATE-LENS-002.*layer\(s\) 1 \(norm 0: they received no gradient\)"
    ):
        train_lens(model, trained["data"], QUICK, _quiet, lens=lens)


@pytest.mark.gate("GATE-LENS-002")
def test_probe_norm_just_beyond_the_threshold_fires_and_just_inside_holds() -> None:
    limit = load_spec().threshold("GATE-LENS-002", "min_probe_norm")
    lens = TunedLens(1, 4, "0" * 64)
    with torch.no_grad():
        lens.probes[0].bias[0] = 0.9 * limit
    assert not health_outcome(lens).ok
    with torch.no_grad():
        lens.probes[0].bias[0] = 1.1 * limit
    assert health_outcome(lens).ok
    with torch.no_grad():
        lens.probes[0].bias[0] = float("nan")
    assert "not finite" in health_outcome(lens).message


@pytest.mark.gate("GATE-LENS-003")
def test_a_lens_worse_than_the_logit_lens_warns_per_layer(trained: dict[str, Path]) -> None:
    model = load_trained(trained["run"]).model
    ledger = Ledger()
    with recording(ledger):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)  # equal: excess 0, inside
    assert {r.id: r.verdict for r in ledger.gate_results()}["GATE-LENS-003"] is Verdict.PASS
    spoiled = for_model(model)
    with torch.no_grad():
        spoiled.probes[0].bias.fill_(0.5)  # layer 0 reads a shifted stream; layer 1 is untouched
    ledger = Ledger()
    with recording(ledger):
        heldout_comparison(model, spoiled, trained["data"], QUICK)
    result = {r.id: r for r in ledger.gate_results()}["GATE-LENS-003"]
    assert result.verdict is Verdict.WARN
    assert "layer 0:" in (result.message or "") and "layer 1:" not in (result.message or "")


def _train_windows(data: Path, like: torch.Tensor) -> torch.Tensor:
    """Windows of the train split in the shape of `like` (B, T): what a comparison must not read."""
    reader = TokenReader(data, "train", batch_size=like.shape[0], seq_len=like.shape[1], seed=0)
    return reader.next_batch()[:, :-1]


def _reading(substitute: Callable[[Path, torch.Tensor, int], torch.Tensor], data: Path) -> Callable:
    """The stack's `capture`, handed `substitute(data, ids, call)` in place of the ids it is given."""
    calls = iter(range(1_000))

    def planted(model: nn.Module, idx: torch.Tensor) -> residual.Residuals:
        return capture(model, substitute(data, idx, next(calls)))

    return planted


def _first_batch_again() -> Callable[[Path, torch.Tensor, int], torch.Tensor]:
    """Every call reads the first batch it was handed: one batch of the set scored twice."""
    kept: list[torch.Tensor] = []

    def substitute(data: Path, idx: torch.Tensor, call: int) -> torch.Tensor:
        kept.append(idx)
        return kept[0]

    return substitute


@pytest.mark.gate("GATE-DATA-005")
@pytest.mark.parametrize(
    "substitute",
    [
        pytest.param(lambda: lambda data, idx, call: _train_windows(data, idx), id="train-split"),
        pytest.param(_first_batch_again, id="one-batch-twice"),
        pytest.param(
            lambda: lambda data, idx, call: torch.cat([idx[:1], _train_windows(data, idx)[1:]]),
            id="one-row-of-train",
        ),
    ],
)
def test_a_lens_comparison_reading_other_text_than_the_heldout_set_is_refused(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, substitute: Callable
) -> None:
    """Beside a lens read on the train split for the "held-out" comparison, the forwards here
    are handed other windows than the set's (the set itself is right), all or one row of them."""
    model = load_trained(trained["run"]).model
    monkeypatch.setattr(lens_train, "capture", _reading(substitute(), trained["data"]))
    with pytest.raises(
        GateViolation, match=r"GATE-DATA-005.*the comparison read other text than the held-out set"
    ):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


@pytest.mark.gate("GATE-DATA-005")
def test_a_lens_comparison_set_from_the_train_split_is_refused(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The set the lenses are compared on made of train windows: refused before either lens reads it."""
    model = load_trained(trained["run"]).model
    made = heldout_batches(trained["data"], QUICK.batch_size, QUICK.seq_len, QUICK.heldout_batches)

    def from_train(*args: object, **kwargs: object) -> list[torch.Tensor]:
        reader = TokenReader(
            trained["data"], "train", batch_size=QUICK.batch_size, seq_len=QUICK.seq_len, seed=0
        )
        return [reader.next_batch() for _ in made]

    monkeypatch.setattr(lens_train, "heldout_batches", from_train)
    with pytest.raises(GateViolation, match=r"GATE-DATA-005.*not the held-out split's windows"):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


@pytest.mark.holds("GATE-DATA-005")
def test_a_lens_comparison_reads_the_heldout_set_once_each(trained: dict[str, Path]) -> None:
    """Nothing planted: the comparison reads each window of the held-out set once, and the record
    says how many it read."""
    model = load_trained(trained["run"]).model
    ledger = Ledger()
    with recording(ledger):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)
    result = {r.id: r for r in ledger.gate_results()}["GATE-DATA-005"]
    assert result.verdict is Verdict.PASS
    windows = QUICK.batch_size * QUICK.heldout_batches
    assert result.measured["read_windows"] == result.measured["set_windows"] == windows
    assert result.measured["read_windows_mismatched"] == 0


@pytest.mark.gate("GATE-LENS-004")
def test_a_lens_read_through_another_model_exits_3(
    trained: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    model = load_trained(trained["run"]).model
    with torch.no_grad():
        model.lm_head.weight[3, 0] += 1e-3  # another checkpoint's unembedding, one element apart
    other = tmp_path / "other"
    save_run(other, model)
    argv = [
        "lens",
        str(other),
        "--prompt",
        PROMPT,
        "--lens",
        str(trained["lens"]),
        "--out",
        str(tmp_path / "r"),
    ]
    assert main(argv) == 3
    assert "GATE-LENS-004" in capsys.readouterr().err
    assert _verdicts(tmp_path / "r")["GATE-LENS-004"] == "FAIL"


@pytest.mark.gate("GATE-LENS-004")
def test_a_model_without_its_final_norm_is_refused() -> None:
    model = tiny_model()
    residuals = capture(model, _ids())
    read(model, residuals, None, 3)  # with it: holds
    model.final_norm = nn.Identity()  # type: ignore[assignment]
    with pytest.raises(GateViolation, match=r"GATE-LENS-004.*no final norm"):
        read(model, residuals, None, 3)


@pytest.mark.gate("GATE-LENS-005")
def test_a_lens_fed_post_norm_states_is_caught(monkeypatch: pytest.MonkeyPatch) -> None:
    model = tiny_model()
    with torch.no_grad():
        model.final_norm.weight.mul_(1.5)  # trained norms are not 1
    capture(model, _ids())  # the stream: holds
    n = len(model.layers)
    stream = [block_input(i) for i in range(n)]
    monkeypatch.setattr(residual, "stream_sites", lambda _n: [*stream, "final_norm"])
    with pytest.raises(GateViolation, match=r"GATE-LENS-005.*final_norm.*changed"):
        capture(model, _ids())
    post_norm = [f"layers.{i}.attn_norm" for i in range(n)]
    monkeypatch.setattr(residual, "stream_sites", lambda _n: [*post_norm, f"layers.{n - 1}.output"])
    with pytest.raises(GateViolation, match=r"GATE-LENS-005.*layers\.0\.attn_norm"):
        capture(model, _ids())


def test_lens_file_round_trips_and_refuses_damage(tmp_path: Path) -> None:
    model = tiny_model()
    lens = for_model(model)
    with torch.no_grad():
        lens.probes[2].weight[1, 2] = 0.25
    path = tmp_path / "l.safetensors"
    probes.save_lens(path, lens, {"steps": "1"})
    again = probes.load_lens(path, torch.device("cpu"))
    assert again.model_sha256 == lens.model_sha256 and torch.equal(
        again.probes[2].weight, lens.probes[2].weight
    )
    path.write_bytes(path.read_bytes()[:-8])
    with pytest.raises(BadInput, match=r"not a tuned-lens file|damaged"):
        probes.load_lens(path, torch.device("cpu"))


# -- a probe with nothing to learn, told from one cut off from learning --------------------------


@pytest.fixture(scope="module")
def passthrough(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A mixture-of-depths model whose routed blocks route no token at inference (a threshold no
    score reaches, as at capacity 0.02): every block passes the stream through unchanged, so every
    lens layer already reads the final distribution and the identity is each probe's optimum."""
    model = tiny_model(n_layers=2, mod_every=1, mod_capacity=0.5)
    for block in model.layers:
        block.route_threshold.fill_(1e4)
    save_run(tmp_path_factory.mktemp("passthrough") / "run", model)
    return tmp_path_factory.getbasetemp() / "passthrough0" / "run"


def test_a_lens_of_blocks_that_pass_everything_through_has_nothing_to_learn(
    trained: dict[str, Path], passthrough: Path, tmp_path: Path
) -> None:
    """Rev 1 fired here (exit 3: "never moved ... they received no gradient"): the probes were
    trained, a zero gradient reached them, and the identity read every layer at KL 0."""
    lens = tmp_path / "lens.safetensors"
    argv = ["lens", str(passthrough), "--train", "--data", str(trained["data"]), "--save", str(lens)]
    assert main([*argv, "--steps", "2", "--seq-len", "16", "--out", str(tmp_path / "rec")]) == 0
    result = next(
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-LENS-002"
    )
    assert result.verdict is Verdict.PASS and result.revision >= 2
    probes_seen = result.measured["probes"]  # type: ignore[index]
    assert all(p["norm"] < 1e-12 and p["max_kl"] == 0 and p["grad_every_step"] for p in probes_seen)


@pytest.mark.gate("GATE-LENS-002")
def test_a_probe_cut_from_the_gradient_fires_even_with_nothing_to_learn(
    trained: dict[str, Path], passthrough: Path
) -> None:
    model = load_trained(passthrough).model
    lens = for_model(model)
    lens.probes[0].requires_grad_(False)
    with pytest.raises(GateViolation, match=r"layer\(s\) 0 \(norm 0: they received no gradient\)"):
        train_lens(model, trained["data"], QUICK, _quiet, lens=lens)


@pytest.mark.gate("GATE-LENS-002")
def test_a_probe_the_optimizer_does_not_hold_fires(trained: dict[str, Path]) -> None:
    """The validation doc's bug itself: a gradient reaches the probe, no step ever moves it."""
    model = load_trained(trained["run"]).model
    lens = for_model(model)
    held = [p for name, p in lens.named_parameters() if not name.startswith("probes.1.")]
    lens.parameters = lambda recurse=True: iter(held)  # type: ignore[method-assign]
    with pytest.raises(GateViolation, match=r"layer\(s\) 1 \(norm 0: the optimizer does not hold them\)"):
        train_lens(model, trained["data"], QUICK, _quiet, lens=lens)


@pytest.mark.gate("GATE-LENS-002")
def test_a_probe_whose_gradient_is_zeroed_where_it_has_something_to_learn_fires(
    trained: dict[str, Path],
) -> None:
    """A zero gradient (a path that multiplies the probe's output by 0) is no excuse where the
    layer differs from the final distribution: the identity's KL says there was something to learn."""
    model = load_trained(trained["run"]).model
    lens = for_model(model)
    for param in lens.probes[0].parameters():
        param.register_hook(torch.zeros_like)
    with pytest.raises(
        GateViolation, match=r"layer\(s\) 0 \(norm 0: a gradient reached them, yet the identity"
    ):
        train_lens(model, trained["data"], QUICK, _quiet, lens=lens)


@pytest.mark.gate("GATE-LENS-002")
def test_an_identity_kl_just_beyond_the_threshold_fires_and_just_inside_holds() -> None:
    limit = load_spec().threshold("GATE-LENS-002", "max_identity_kl_nats")
    lens = TunedLens(1, 4, "0" * 64)
    lens.fit = [{"layer": 0, "optimized": True, "grad_every_step": True, "max_kl": 1.1 * limit}]
    assert "a gradient reached them, yet the identity" in health_outcome(lens).message
    lens.fit = [{"layer": 0, "optimized": True, "grad_every_step": True, "max_kl": 0.9 * limit}]
    assert health_outcome(lens).ok
    lens.fit = [{"layer": 0, "optimized": True, "grad_every_step": False, "max_kl": 0.0}]
    assert not health_outcome(lens).ok


# -- the schedule the optimizer applied (GATE-LENS-002, check schedule) -------------------------


@pytest.mark.gate("GATE-LENS-002")
@pytest.mark.parametrize(
    "rate",
    [
        pytest.param(lambda self, step: self.lr * (1 - step / self.steps), id="shifted-one-step"),
        pytest.param(lambda self, step: self.lr * (1 - (step - 1) / (self.steps + 1)), id="wrong-total"),
        pytest.param(lambda self, step: self.lr, id="constant"),
        pytest.param(
            lambda self, step: self.lr * min(1.0, step / 2) * (1 - (step - 1) / self.steps), id="warmup"
        ),
    ],
)
def test_a_lens_schedule_other_than_the_documented_one_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, rate: Callable[[LensTraining, int], float]
) -> None:
    """A schedule every step a step late (lr · (1 − s/S)) and its kin, planted in the rate the
    lens's loop sets: the rate read back from the optimizer is not the documented schedule's."""
    model = load_trained(trained["run"]).model
    monkeypatch.setattr(LensTraining, "lr_at", rate)
    with pytest.raises(GateViolation, match=r"GATE-LENS-002.*not the lens schedule's"):
        train_lens(model, trained["data"], QUICK, _quiet)


class _Pinned(dict):  # type: ignore[type-arg]
    """A parameter group the loop's writes of the rate do not reach: it keeps its first rate."""

    def __setitem__(self, key: str, value: object) -> None:
        if key != "lr":
            super().__setitem__(key, value)


@pytest.mark.gate("GATE-LENS-002")
def test_a_parameter_group_the_schedule_does_not_reach_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The lens's SGD built with two groups, the second pinned at the first step's rate: the rate
    is read from every group, so the one left behind shows from step 2 on."""
    sgd = torch.optim.SGD

    class TwoGroups(sgd):  # type: ignore[misc, valid-type]
        def __init__(self, params: object, **settings: object) -> None:
            held = list(params)  # type: ignore[call-overload]
            super().__init__([{"params": held[:1]}, {"params": held[1:]}], **settings)
            self.param_groups[1] = _Pinned(self.param_groups[1])

    model = load_trained(trained["run"]).model
    monkeypatch.setattr(torch.optim, "SGD", TwoGroups)
    with pytest.raises(GateViolation, match=r"GATE-LENS-002.*3 of 4 step\(s\).*first at step 2"):
        train_lens(model, trained["data"], QUICK, _quiet)


@pytest.mark.gate("GATE-LENS-002")
def test_a_rate_just_beyond_lr_rtol_fires_and_just_inside_holds(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rtol = load_spec().threshold("GATE-LENS-002", "lr_rtol")
    model = load_trained(trained["run"]).model

    def off_by(factor: float) -> Callable[[LensTraining, int], float]:
        return lambda self, step: (
            linear_decay_at(step, lr=self.lr, total_steps=self.steps) * (1 + factor * rtol)
        )

    monkeypatch.setattr(LensTraining, "lr_at", off_by(0.5))
    lens = train_lens(model, trained["data"], QUICK, _quiet)
    assert lens.schedule is not None and len(lens.schedule["applied_lrs"]) == QUICK.steps
    monkeypatch.setattr(LensTraining, "lr_at", off_by(2.0))
    with pytest.raises(GateViolation, match=r"GATE-LENS-002.*4 of 4 step\(s\)"):
        train_lens(model, trained["data"], QUICK, _quiet)


# -- the KL the comparison reports (GATE-LENS-006) -----------------------------------------------


def _reversed(final: torch.Tensor, reading: torch.Tensor) -> torch.Tensor:
    """Planted: KL(layer ‖ final)."""
    return (reading.exp() * (reading - final)).sum(-1)


def _over_the_vocabulary(final: torch.Tensor, reading: torch.Tensor) -> torch.Tensor:
    """KL(final ‖ layer) divided by the vocabulary: averaged where it must be summed."""
    return (final.exp() * (final - reading)).mean(-1)


@pytest.mark.gate("GATE-LENS-006")
@pytest.mark.parametrize("kl", [_reversed, _over_the_vocabulary], ids=["reversed", "vocab-mean"])
def test_a_held_out_kl_other_than_kl_final_to_layer_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, kl: Callable
) -> None:
    model = load_trained(trained["run"]).model
    monkeypatch.setattr(readout, "kl_to_final", kl)
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*layer 0: kl_logit is .* recomputed by kl_div"):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


@pytest.mark.gate("GATE-LENS-006")
@pytest.mark.parametrize("kl", [_reversed, _over_the_vocabulary], ids=["reversed", "vocab-mean"])
def test_a_reading_whose_kl_is_not_kl_final_to_layer_fires(
    monkeypatch: pytest.MonkeyPatch, kl: Callable
) -> None:
    """The same mutants read on a prompt: the table's KL per position, held to kl_div's."""
    model = tiny_model()
    residuals = capture(model, _ids())
    read(model, residuals, None, 3)  # KL(final ‖ layer): holds
    monkeypatch.setattr(readout, "kl_to_final", kl)
    with pytest.raises(
        GateViolation, match=r"GATE-LENS-006.*of the reading's KLs are not KL\(final ‖ layer\)"
    ):
        read(model, residuals, None, 3)


@pytest.mark.gate("GATE-LENS-006")
def test_a_held_out_kl_summed_over_positions_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The per-position KL right, its mean taken over the wrong extent (summed over the batch)."""
    model = load_trained(trained["run"]).model

    def summed(log_probs: list[torch.Tensor]) -> list[float]:
        *layers, final = log_probs
        return [float(readout.kl_to_final(final, lp).sum()) for lp in layers]

    monkeypatch.setattr(lens_train, "mean_kl", summed)
    with pytest.raises(GateViolation, match=r"GATE-LENS-006"):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


@pytest.mark.gate("GATE-LENS-006")
def test_a_kl_just_beyond_kl_rtol_fires_and_just_inside_holds(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rtol = load_spec().threshold("GATE-LENS-006", "kl_rtol")
    kl, model = readout.kl_to_final, load_trained(trained["run"]).model

    def off_by(factor: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda final, reading: kl(final, reading) * (1 + factor * rtol)

    monkeypatch.setattr(readout, "kl_to_final", off_by(0.5))
    ledger = Ledger()
    with recording(ledger):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)
    assert {r.id: r.verdict for r in ledger.gate_results()}["GATE-LENS-006"] is Verdict.PASS
    monkeypatch.setattr(readout, "kl_to_final", off_by(2.0))
    with pytest.raises(GateViolation, match=r"GATE-LENS-006"):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


# -- what the KL, the probabilities and the loss are recomputed against (GATE-LENS-006 rev 2) -----


@pytest.mark.gate("GATE-LENS-006")
def test_a_lens_trained_on_the_reversed_kl_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the training objective KL(layer ‖ final); the held-out report untouched."""
    model, kl = load_trained(trained["run"]).model, lens_train.kl_to_final
    monkeypatch.setattr(lens_train, "kl_to_final", lambda final, reading: kl(reading, final))
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*at step 1 the lens training backpropagated"):
        train_lens(model, trained["data"], QUICK, _quiet)


@pytest.mark.gate("GATE-LENS-006")
def test_a_lens_training_loss_just_beyond_kl_rtol_fires_and_just_inside_holds(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    rtol = load_spec().threshold("GATE-LENS-006", "kl_rtol")
    model, kl = load_trained(trained["run"]).model, lens_train.kl_to_final

    def off_by(factor: float) -> Callable[[torch.Tensor, torch.Tensor], torch.Tensor]:
        return lambda final, reading: kl(final, reading) * (1 + factor * rtol)

    monkeypatch.setattr(lens_train, "kl_to_final", off_by(0.5))
    ledger = Ledger()
    with recording(ledger):
        train_lens(model, trained["data"], QUICK, _quiet)
    assert {r.id: r.verdict for r in ledger.gate_results()}["GATE-LENS-006"] is Verdict.PASS
    monkeypatch.setattr(lens_train, "kl_to_final", off_by(2.0))
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*lens training backpropagated"):
        train_lens(model, trained["data"], QUICK, _quiet)


@pytest.mark.gate("GATE-LENS-006")
def test_a_lens_trained_on_the_reversed_kl_exits_3(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """The reversed KL through the CLI: the run stops with exit 3 naming the gate, the model and data
    as ever."""
    kl = lens_train.kl_to_final
    monkeypatch.setattr(lens_train, "kl_to_final", lambda final, reading: kl(reading, final))
    argv = ["lens", str(trained["run"]), "--train", "--data", str(trained["data"]), "--steps", "2"]
    argv += ["--save", str(tmp_path / "lens.safetensors"), "--heldout-batches", "1", "--seq-len", "16"]
    assert main([*argv, "--out", str(tmp_path / "rec")]) == 3
    assert _verdicts(tmp_path / "rec")["GATE-LENS-006"] == "FAIL"


@pytest.mark.gate("GATE-LENS-006")
def test_held_out_means_over_one_batch_too_many_fire(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the sums divided by batches + 1; the judge averages the per-batch KLs itself."""
    model, means = load_trained(trained["run"]).model, lens_train.heldout_means

    def one_too_many(per_batch: list) -> tuple[list[float], list[float]]:
        n = len(per_batch)
        return tuple([x * n / (n + 1) for x in column] for column in means(per_batch))  # type: ignore[return-value]

    heldout_comparison(model, for_model(model), trained["data"], QUICK)  # the stack's divisor: holds
    monkeypatch.setattr(lens_train, "heldout_means", one_too_many)
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*averaged over the 2 held-out batch"):
        heldout_comparison(model, for_model(model), trained["data"], QUICK)


@pytest.mark.gate("GATE-LENS-006")
def test_held_out_columns_swapped_between_the_lenses_fire(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """The logit lens read where the tuned one is named and back (only a warning of
    GATE-LENS-003 before); the recomputation reads each column through its own lens by name."""
    model = load_trained(trained["run"]).model
    tuned, real = probes.load_lens(trained["lens"], torch.device("cpu")), lens_train.layer_log_probs
    ledger = Ledger()
    with recording(ledger):
        heldout_comparison(model, tuned, trained["data"], QUICK)
    assert {r.id: r.verdict for r in ledger.gate_results()}["GATE-LENS-006"] is Verdict.PASS

    def swapped(model: nn.Module, residuals: residual.Residuals, lens: TunedLens | None) -> list:
        return real(model, residuals, tuned if lens is None else None)

    monkeypatch.setattr(lens_train, "layer_log_probs", swapped)
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*kl_logit is .*columns swapped"):
        heldout_comparison(model, tuned, trained["data"], QUICK)


@pytest.mark.gate("GATE-LENS-006")
def test_a_reading_against_another_row_than_the_models_output_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Planted: the last lens layer taken as the final distribution. The recomputed KL is
    against a plain forward, and the model's own row must read 0."""
    monkeypatch.setattr(readout, "model_output", lambda log_probs: log_probs[-2])
    model = tiny_model()
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*the model's own row .* not 0"):
        read(model, capture(model, _ids()), None, 3)
    argv = ["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(tmp_path / "rec")]
    assert main(argv) == 3


def _top_tokens_planted(change: Callable[[float], float]) -> Callable:
    real = readout.top_tokens
    return lambda lp, k: [[(i, change(p)) for i, p in row] for row in real(lp, k)]


@pytest.mark.gate("GATE-LENS-006")
def test_a_reading_reporting_log_probabilities_as_probabilities_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """Planted: top1_prob −4.83. A reported probability is exp of its token's log-probability."""
    model = tiny_model()
    residuals = capture(model, _ids())
    monkeypatch.setattr(readout, "top_tokens", _top_tokens_planted(math.log))
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*top-k lists are not probabilities"):
        read(model, residuals, None, 3)
    argv = ["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(tmp_path / "rec")]
    assert main(argv) == 3
    assert _verdicts(tmp_path / "rec")["GATE-LENS-006"] == "FAIL"


@pytest.mark.gate("GATE-LENS-006")
def test_a_reading_whose_top_tokens_are_not_the_likeliest_fires(monkeypatch: pytest.MonkeyPatch) -> None:
    """Probabilities right for their tokens, the tokens the 2nd to (k+1)th likeliest."""
    real = readout.top_tokens
    monkeypatch.setattr(readout, "top_tokens", lambda lp, k: [row[1:] for row in real(lp, k + 1)])
    model = tiny_model()
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*top-k lists are not probabilities"):
        read(model, capture(model, _ids()), None, 3)


@pytest.mark.gate("GATE-LENS-006")
def test_a_probability_just_beyond_prob_atol_fires_and_just_inside_holds(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    atol = load_spec().threshold("GATE-LENS-006", "prob_atol")
    model = tiny_model()
    residuals = capture(model, _ids())
    monkeypatch.setattr(readout, "top_tokens", _top_tokens_planted(lambda p: p - 0.5 * atol))
    ledger = Ledger()
    with recording(ledger):
        read(model, residuals, None, 3)
    assert {r.id: r.verdict for r in ledger.gate_results()}["GATE-LENS-006"] is Verdict.PASS
    monkeypatch.setattr(readout, "top_tokens", _top_tokens_planted(lambda p: p - 2.0 * atol))
    with pytest.raises(GateViolation, match=r"GATE-LENS-006.*top-k lists"):
        read(model, residuals, None, 3)


# -- what the checker re-derives of a lens-train record ------------------------------------------


@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_records_schedule_and_kl_are_held_by_the_checker(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """The record the CLI wrote checks clean; its scheduled rates are the lens schedule of its config's
    lr and steps, and its KL rows re-judge against the recomputed ones they sit beside."""
    assert findings(trained["train_record"]) == []

    def copy(name: str, change: Callable[[dict, Path], None]) -> Path:
        shutil.copytree(trained["train_record"], tmp_path / name)
        return edited(tmp_path / name, change)

    def steps_later(data: dict, _dir: Path) -> None:  # applied and scheduled alike: a forger's pair
        measured = gate(data, "GATE-LENS-002")["measured"]
        for key in ("applied_lrs", "scheduled_lrs"):
            measured[key] = [*measured[key][1:], 0.0]

    found = findings(copy("schedule", steps_later))
    assert any("gates[GATE-LENS-002].measured.scheduled_lrs[0] is" in line for line in found), found

    def reversed_rows(data: dict, _dir: Path) -> None:  # the recomputed KL of another direction
        for batch in gate(data, "GATE-LENS-006")["measured"]["recomputed_batches"]:
            for row in batch:
                row["kl_logit"] *= 1.02

    found = findings(copy("kl", reversed_rows))
    assert any(
        "GATE-LENS-006: recorded PASS, but its measured values re-judge to FAIL" in line for line in found
    ), found

    def doubled_loss(data: dict, _dir: Path) -> None:  # loss and recomputed alike: a forger's pair
        measured = gate(data, "GATE-LENS-006")["measured"]
        for key in ("objective_losses", "objective_recomputed"):
            measured[key][0] *= 2

    found = findings(copy("objective", doubled_loss))
    assert any("gates[GATE-LENS-006].measured.objective_losses[0]" in line for line in found), found


@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_readings_kl_is_held_to_its_trace_by_the_checker(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A reading's record checks clean; the KLs its GATE-LENS-006 held are trace.json's readings."""
    out = tmp_path / "read"
    assert main(["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(out)]) == 0
    assert findings(out) == []

    def halved(data: dict, _dir: Path) -> None:  # reported and recomputed alike: a forger's pair
        measured = gate(data, "GATE-LENS-006")["measured"]
        for key in ("reading_kl", "recomputed_reading_kl"):
            measured[key][0] = [x / 2 for x in measured[key][0]]

    found = findings(edited(shutil.copytree(out, tmp_path / "kl"), halved))
    assert any("gates[GATE-LENS-006].measured.reading_kl[0]" in line for line in found), found

    def as_logs(data: dict, _dir: Path) -> None:  # log-probabilities reported as probabilities
        measured = gate(data, "GATE-LENS-006")["measured"]
        for row, logprobs in zip(measured["reading_top"][0], measured["top_logprobs"][0], strict=True):
            for pair, log_p in zip(row, logprobs, strict=True):
                pair[1] = log_p

    found = findings(edited(shutil.copytree(out, tmp_path / "top"), as_logs))
    assert any("gates[GATE-LENS-006].measured.reading_top[0]" in line for line in found), found


# -- a reading's entropy, recomputed from the log-probabilities it read (GATE-LENS-006 rev 3) ------


@pytest.mark.gate("GATE-LENS-006")
def test_a_reading_whose_entropy_is_averaged_over_the_vocabulary_stops_the_lens(
    trained: dict[str, Path],
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: −Σ p log p divided by the vocabulary (0.0214 nats for 5.49), every layer
    and position, while KL and top tokens stay right: `stack lens` exits 3 naming the gate."""
    monkeypatch.setattr(readout, "entropy_of", lambda lp: -(lp.exp() * lp).mean(-1))
    argv = ["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(tmp_path / "rec")]
    assert main(argv) == 3
    assert "GATE-LENS-006" in capsys.readouterr().err
    (result,) = [
        g for g in read_evidence(tmp_path / "rec" / "metadata.json").gates if g.id == "GATE-LENS-006"
    ]
    assert result.verdict is Verdict.FAIL and "entropies are not −Σ p log p" in str(result.message)


@pytest.mark.parametrize(
    ("factor", "fires"),
    [
        pytest.param(2.0, True, marks=pytest.mark.gate("GATE-LENS-006")),
        pytest.param(0.5, False, marks=pytest.mark.holds("GATE-LENS-006")),
    ],
)
def test_an_entropy_just_beyond_kl_rtol_fires_and_just_inside_holds(
    monkeypatch: pytest.MonkeyPatch, factor: float, fires: bool
) -> None:
    """Every entropy scaled by 1 + factor × kl_rtol: inside the tolerance the reading holds, beyond
    it the entropies are named."""
    rtol = load_spec().threshold("GATE-LENS-006", "kl_rtol")
    real = readout.entropy_of
    monkeypatch.setattr(readout, "entropy_of", lambda lp: real(lp) * (1 + factor * rtol))
    model = tiny_model()
    residuals = capture(model, _ids())
    ledger = Ledger()
    with recording(ledger), contextlib.suppress(GateViolation):
        read(model, residuals, None, 3)
    result = {r.id: r for r in ledger.gate_results()}["GATE-LENS-006"]
    assert (result.verdict is Verdict.FAIL) is fires
    assert ("entropies are not" in str(result.message)) is fires


@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_record_whose_entropies_are_not_its_readings_is_caught(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """The entropies GATE-LENS-006 held are trace.json's readings': a record edited to others (the
    recomputed twin with them, so the judge still passes) is named."""
    out = tmp_path / "rec"
    assert main(["lens", str(trained["run"]), "--prompt", PROMPT, "--out", str(out)]) == 0

    def halved(data: dict[str, object], _run_dir: Path) -> None:
        measured = gate(data, "GATE-LENS-006")["measured"]
        for key in ("reading_entropy", "recomputed_reading_entropy"):
            measured[key] = [[e / 2 for e in row] for row in measured[key]]

    assert any(
        "gates[GATE-LENS-006].measured.reading_entropy" in line for line in findings(edited(out, halved))
    )


# -- every other hyper-parameter the record states, read back from the optimizer (GATE-LENS-002 rev 4)


def _sgd_built_with(monkeypatch: pytest.MonkeyPatch, **forced: object) -> None:
    """The lens's SGD built with `forced` in place of what the settings hand it (for
    example weight_decay=0.0 whatever --weight-decay said)."""
    sgd = torch.optim.SGD

    class Forced(sgd):  # type: ignore[misc, valid-type]
        def __init__(self, params: object, **settings: object) -> None:
            super().__init__(params, **{**settings, **forced})

    monkeypatch.setattr(torch.optim, "SGD", Forced)


@pytest.mark.gate("GATE-LENS-002")
def test_a_lens_trained_without_the_weight_decay_its_record_states_stops(
    trained: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """An SGD without weight decay through `stack lens --train`: exit 3 naming GATE-LENS-002, the
    decay read back from the optimizer at every step against the 0.001 the record states."""
    _sgd_built_with(monkeypatch, weight_decay=0.0)
    argv = ["lens", str(trained["run"]), "--train", "--data", str(trained["data"]), "--steps", "3"]
    out = tmp_path / "rec"
    assert main([*argv, "--save", str(tmp_path / "l.safetensors"), "--seq-len", "16", "--out", str(out)]) == 3
    assert "GATE-LENS-002" in capsys.readouterr().err
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == "GATE-LENS-002"]
    assert result.verdict is Verdict.FAIL
    assert "first at step 1: weight_decay 0.0, stated 0.001" in str(result.message)


@pytest.mark.gate("GATE-LENS-002")
@pytest.mark.parametrize(
    "forced", [{"momentum": 0.5}, {"nesterov": False, "momentum": 0.9}], ids=["momentum", "nesterov"]
)
def test_a_lens_optimizer_with_another_momentum_or_nesterov_fires(
    trained: dict[str, Path], monkeypatch: pytest.MonkeyPatch, forced: dict[str, object]
) -> None:
    model = load_trained(trained["run"]).model
    _sgd_built_with(monkeypatch, **forced)
    with pytest.raises(GateViolation, match=r"GATE-LENS-002.*other than the record states at 4 of 4 step"):
        train_lens(model, trained["data"], QUICK, _quiet)


@pytest.mark.holds("GATE-LENS-002")
@pytest.mark.gate("GATE-INTEG-001")
def test_a_lens_record_states_the_hyperparameters_it_applied_and_the_checker_holds_them_to_its_config(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A clean lens training reads the config's decay, momentum and Nesterov flag back at every step;
    a record whose stated values are edited (the applied ones with them, so the judge passes) is
    named against its config."""
    record = read_evidence(trained["train_record"] / "metadata.json")
    (result,) = [g for g in record.gates if g.id == "GATE-LENS-002"]
    stated = {key: (record.config or {})[key] for key in ("weight_decay", "momentum", "nesterov")}
    assert result.measured["stated_hyperparameters"] == stated
    assert result.measured["applied_hyperparameters"] == [stated] * 60
    copy = tmp_path / "rec"
    shutil.copytree(trained["train_record"], copy)

    def undecayed(data: dict[str, object], _run_dir: Path) -> None:
        measured = gate(data, "GATE-LENS-002")["measured"]
        measured["stated_hyperparameters"]["weight_decay"] = 0.0
        for step in measured["applied_hyperparameters"]:
            step["weight_decay"] = 0.0

    found = findings(edited(copy, undecayed))
    assert any(
        "stated_hyperparameters.weight_decay is 0.0, but its artifacts derive 0.001" in f for f in found
    )


# -- the clip and the held-out set the record states, measured where they act --------------------


def _lens_train(trained: dict[str, Path], tmp_path: Path, *extra: str) -> tuple[int, Path]:
    """`stack lens --train` at a small size (10 steps of 4 × 32 tokens), with `extra`."""
    out = tmp_path / "rec"
    argv = ["lens", str(trained["run"]), "--train", "--data", str(trained["data"]), "--steps", "10"]
    argv += ["--batch-size", "4", "--seq-len", "32", "--save", str(tmp_path / "l.safetensors")]
    return main([*argv, *extra, "--out", str(out)]), out


def _gate_result(out: Path, gate_id: str) -> object:
    (result,) = [g for g in read_evidence(out / "metadata.json").gates if g.id == gate_id]
    return result


@pytest.mark.gate("GATE-LENS-002")
def test_a_lens_clipped_at_the_default_norm_not_the_stated_one_stops(
    trained: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: the loop clips at DEFAULT_CLIP_NORM whatever --clip-norm said; the record
    states 0.05. The gradients the optimizer steps, read from its parameters, exceed it: exit 3."""
    clip = torch.nn.utils.clip_grad_norm_
    monkeypatch.setattr(
        torch.nn.utils,
        "clip_grad_norm_",
        lambda params, _max_norm, **kw: clip(params, DEFAULT_CLIP_NORM, **kw),
    )
    code, out = _lens_train(trained, tmp_path, "--clip-norm", "0.05")
    assert code == 3 and "GATE-LENS-002" in capsys.readouterr().err
    result = _gate_result(out, "GATE-LENS-002")
    assert result.verdict is Verdict.FAIL  # type: ignore[attr-defined]
    assert "above the clip norm the record states (0.05" in str(result.message)  # type: ignore[attr-defined]


@pytest.mark.holds("GATE-LENS-002")
@pytest.mark.gate("GATE-LENS-002")
def test_the_stated_clip_holds_and_a_norm_just_beyond_clip_rtol_fires(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A clean --clip-norm 0.05 run passes, every stepped norm at most 0.05 (and some clipped to it);
    its measured values re-judged with one norm just inside clip_rtol hold, just beyond fire."""
    code, out = _lens_train(trained, tmp_path, "--clip-norm", "0.05")
    assert code == 0
    measured = dict(_gate_result(out, "GATE-LENS-002").measured)  # type: ignore[attr-defined]
    norms = measured["stepped_grad_norms"]
    assert measured["stated_clip_norm"] == 0.05 and len(norms) == 10 and max(norms) <= 0.05
    assert max(norms) > 0.05 * (1 - 1e-3)  # the clip acted: the check is not vacuous here
    rtol = load_spec().threshold("GATE-LENS-002", "clip_rtol")
    for factor, fires in ((0.5, False), (2.0, True)):
        measured["stepped_grad_norms"] = [*norms[:-1], 0.05 * (1 + factor * rtol)]
        assert bool(judge("GATE-LENS-002", measured)) is fires


@pytest.mark.gate("GATE-LENS-006")
def test_a_comparison_drawn_at_the_default_count_not_the_stated_one_stops(
    trained: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: the comparison set drawn with no count (the spec's default) whatever
    --heldout-batches said; the record states 3. The windows its forwards read are not 3 × 4: exit 3."""
    real = lens_train.heldout_batches
    monkeypatch.setattr(
        lens_train, "heldout_batches", lambda data, batch, seq, _n, **kw: real(data, batch, seq, None, **kw)
    )
    code, out = _lens_train(trained, tmp_path, "--heldout-batches", "3")
    assert code == 3 and "GATE-LENS-006" in capsys.readouterr().err
    result = _gate_result(out, "GATE-LENS-006")
    assert result.verdict is Verdict.FAIL  # type: ignore[attr-defined]
    assert "--heldout-batches × --batch-size = 12" in str(result.message)  # type: ignore[attr-defined]


@pytest.mark.holds("GATE-LENS-006")
@pytest.mark.gate("GATE-INTEG-001")
def test_the_stated_heldout_count_holds_and_the_checker_holds_clip_and_count_to_the_config(
    trained: dict[str, Path], tmp_path: Path
) -> None:
    """A clean --heldout-batches 3 run reads 12 windows and passes; a record whose stated clip norm or
    window count is edited with what it is held against (so the judge passes) is named against its
    config."""
    code, out = _lens_train(trained, tmp_path, "--heldout-batches", "3")
    assert code == 0 and findings(out) == []
    measured = _gate_result(out, "GATE-LENS-006").measured  # type: ignore[attr-defined]
    assert measured["heldout_windows_read"] == measured["heldout_windows_stated"] == 12

    def forged(data: dict, _dir: Path) -> None:
        windows = gate(data, "GATE-LENS-006")["measured"]
        windows["heldout_windows_read"] = windows["heldout_windows_stated"] = 64
        gate(data, "GATE-LENS-002")["measured"]["stated_clip_norm"] = 10.0

    found = findings(edited(out, forged))
    assert any("heldout_windows_stated is 64, but its artifacts derive 12" in f for f in found), found
    assert any("stated_clip_norm is 10.0, but its artifacts derive 1.0" in f for f in found), found


@pytest.mark.gate("GATE-DATA-001")
def test_a_lens_trained_on_another_seeds_windows_than_stated_stops(
    trained: dict[str, Path],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Planted: the lens's reader built with seed 0 whatever --seed said; the record
    states seed 5. Its first batch is not the plan of seed 5's first step: exit 3 naming GATE-DATA-001."""
    reader = lens_train.TokenReader
    monkeypatch.setattr(lens_train, "TokenReader", lambda *args, **kw: reader(*args, **{**kw, "seed": 0}))
    code, out = _lens_train(trained, tmp_path, "--seed", "5")
    assert code == 3 and "GATE-DATA-001" in capsys.readouterr().err
    result = _gate_result(out, "GATE-DATA-001")
    assert result.verdict is Verdict.FAIL  # type: ignore[attr-defined]


@pytest.mark.holds("GATE-DATA-001")
def test_a_lens_trained_on_its_stated_seeds_windows_holds(trained: dict[str, Path], tmp_path: Path) -> None:
    """The honest `--seed 5` lens: every batch it fits on is the plan of seed 5's."""
    code, out = _lens_train(trained, tmp_path, "--seed", "5")
    assert code == 0 and _gate_result(out, "GATE-DATA-001").verdict is Verdict.PASS  # type: ignore[attr-defined]
    assert findings(out) == []
