"""Bits per byte scores every token once and divides by every byte; a lossy tokenizer, windows that
skip or repeat a target, and a denominator other than the text's bytes are refused; and the text of
a split is the split's shards, document for document (GATE-EVAL-003)."""

from __future__ import annotations

import contextlib
import json
import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from torch import nn

from contracts.errors import BadInput, GateViolation
from contracts.gates import measure
from contracts.ledger import Ledger, recording
from contracts.likelihood import summed_nll
from contracts.spec import load_spec
from stack.cli import main
from stack.data.shards import MappedShard
from stack.data.tokenizer import ByteTokenizer as ByteLevel
from stack.eval import bpb, texts
from stack.eval.bpb import bits_per_byte, check_round_trip, evaluate_text
from stack.model.consumed import Consumed
from tests.support.eval_support import stride_one_past
from tests.support.train_support import MeanCrossEntropy, characters_for_bytes, prepared, smoke_args, train

GATE = "GATE-EVAL-003"
TEXT = "Held-out text with a few non-ASCII characters: naïve café, π ≈ 3.14159, 日本語.\n" * 3


class ByteTokenizer:
    """UTF-8 bytes as token ids: round-trips every text."""

    def encode(self, text: str) -> list[int]:
        return list(text.encode("utf-8"))

    def decode(self, ids: list[int]) -> str:
        return bytes(ids).decode("utf-8")


class AsciiOnlyTokenizer(ByteTokenizer):
    """The gate's origin: characters it cannot encode are silently dropped."""

    def encode(self, text: str) -> list[int]:
        return super().encode(text.encode("ascii", errors="ignore").decode("ascii"))


class BigramLM(nn.Module):
    """A stand-in with the stack's model interface; each prediction depends on one token only."""

    def __init__(self, vocab: int = 256) -> None:
        super().__init__()
        torch.manual_seed(0)
        self.embed = nn.Embedding(vocab, 16)
        self.head = nn.Linear(16, vocab)

    def forward(
        self, idx: torch.Tensor, targets: torch.Tensor | None = None
    ) -> tuple[torch.Tensor, torch.Tensor | None]:
        logits = self.head(self.embed(idx))
        loss = None if targets is None else F.cross_entropy(logits.flatten(0, 1), targets.flatten())
        return logits, loss


def test_a_round_tripping_tokenizer_passes() -> None:
    assert check_round_trip(ByteTokenizer(), TEXT) == list(TEXT.encode("utf-8"))


@pytest.mark.gate(GATE)
def test_a_tokenizer_that_drops_characters_is_refused() -> None:
    """Plant the origin's tokenizer, which drops non-ASCII characters and would flatter bits per byte."""
    dropped = sum(not ch.isascii() for ch in TEXT)
    with pytest.raises(GateViolation) as info:
        check_round_trip(AsciiOnlyTokenizer(), TEXT)
    assert info.value.measured == {
        "missing_chars": dropped,
        "extra_chars": 0,
        "first_difference": TEXT.index("ï"),
        "chars": len(TEXT),
    }


@pytest.mark.gate(GATE)
def test_evaluation_refuses_a_lossy_tokenizer() -> None:
    with pytest.raises(GateViolation):
        evaluate_text(BigramLM(), AsciiOnlyTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")


def test_bits_per_byte_divides_by_utf8_bytes_not_characters() -> None:
    text = "π≈3"  # 3 characters, 6 bytes
    assert bits_per_byte(math.log(2) * 6, text) == pytest.approx(1.0)


def test_bits_per_byte_of_empty_text_is_undefined() -> None:
    with pytest.raises(ValueError, match="empty"):
        bits_per_byte(1.0, "")


def _reference_nll(model: BigramLM, text: str) -> float:
    """Total NLL of tokens[1:] from one forward pass over the whole text, through the model's own loss."""
    ids = torch.tensor(ByteTokenizer().encode(text))
    with torch.no_grad():
        _, loss = model(ids[None, :-1], ids[None, 1:])
    return float(loss) * (len(ids) - 1)


@pytest.mark.parametrize(
    ("seq_len", "batch_size"),
    [(16, 4), (7, 3), (1, 64), (len(TEXT.encode("utf-8")) - 1, 2), (1000, 1)],
    ids=["batches", "short-final-window", "one-token-windows", "exact-fit", "longer-than-text"],
)
def test_every_token_is_scored_once(seq_len: int, batch_size: int) -> None:
    """However the text is windowed and batched, the summed NLL is the whole text's, once."""
    model = BigramLM()
    result = evaluate_text(model, ByteTokenizer(), TEXT, seq_len=seq_len, batch_size=batch_size, device="cpu")
    n_bytes = len(TEXT.encode("utf-8"))
    total = _reference_nll(model, TEXT)
    assert (result["tokens"], result["predicted_tokens"], result["bytes"]) == (n_bytes, n_bytes - 1, n_bytes)
    assert result["loss"] * result["predicted_tokens"] == pytest.approx(total, rel=1e-5)
    assert result["bits_per_byte"] == pytest.approx(total / math.log(2) / n_bytes, rel=1e-5)


@pytest.mark.parametrize(
    ("seq_len", "batch_size"),
    [(16, 4), (7, 3), (1, 64), (1000, 1)],
    ids=["batches", "short-final-window", "one-token-windows", "longer-than-text"],
)
def test_progress_counts_every_window_up_to_all_of_them(seq_len: int, batch_size: int) -> None:
    """What `stack eval` shows while it scores: after each batch, the windows
    scored so far of how many the text makes: rising, ending at all of them, each token's window once."""
    heard: list[tuple[int, int]] = []
    evaluate_text(
        BigramLM(), ByteTokenizer(), TEXT, seq_len, batch_size, "cpu", progress=lambda *p: heard.append(p)
    )
    windows = -(-(len(TEXT.encode("utf-8")) - 1) // seq_len)
    assert {total for _done, total in heard} == {windows}
    done = [d for d, _total in heard]
    assert done == sorted(set(done)) and done[-1] == windows and done[0] <= batch_size


def test_evaluation_restores_training_mode() -> None:
    model = BigramLM().train()
    evaluate_text(model, ByteTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")
    assert model.training


def test_a_one_token_text_cannot_be_scored() -> None:
    with pytest.raises(BadInput, match="at least 2"):
        evaluate_text(BigramLM(), ByteTokenizer(), "x", seq_len=16, batch_size=4, device="cpu")


# -- the positions the NLL sum took, and the bytes it is divided by --------------------------------

_real_windows = bpb.text_windows


def _stride_one_short(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The planted bug: windows overlapping by two tokens, so one target of each is scored twice."""
    full, rest = _real_windows(tokens, seq_len)
    return tokens[: len(full) * seq_len + 1].unfold(0, seq_len + 1, seq_len - 1).transpose(1, 2), rest


def _last_window_dropped(tokens: torch.Tensor, seq_len: int) -> tuple[torch.Tensor, torch.Tensor]:
    """The planted bug: the text is scored only as far as its full windows reach."""
    full, rest = _real_windows(tokens, seq_len)
    return full, rest[:, :1]


def _scored(text: str = TEXT, seq_len: int = 16) -> dict[str, object]:
    """GATE-EVAL-003's values of one scoring of `text` by the stack's own path (the gate may fire)."""
    with recording(Ledger()) as ledger, contextlib.suppress(GateViolation):
        evaluate_text(BigramLM(), ByteTokenizer(), text, seq_len=seq_len, batch_size=4, device="cpu")
    measured = ledger.results[GATE].measured
    assert isinstance(measured, dict)
    return measured


@pytest.mark.gate(GATE)
@pytest.mark.parametrize(
    ("windows", "count"),
    [
        (stride_one_past, "missing_positions"),
        (_stride_one_short, "repeated_positions"),
        (_last_window_dropped, "missing_positions"),
    ],
    ids=["stride-skips-targets", "stride-repeats-targets", "last-window-dropped"],
)
def test_windows_that_skip_or_repeat_targets_are_refused(
    monkeypatch: pytest.MonkeyPatch, windows: Callable[..., tuple[torch.Tensor, torch.Tensor]], count: str
) -> None:
    """The result still claims every token predicted; the sum's own positions say otherwise."""
    assert _scored()[count] == 0  # the stack's windows: none
    monkeypatch.setattr(bpb, "text_windows", windows)
    with pytest.raises(GateViolation, match=GATE):
        evaluate_text(BigramLM(), ByteTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")
    measured = _scored()
    assert measured[count] > 0 and measured["predicted_tokens"] == measured["tokens"] - 1  # type: ignore[operator]
    assert measured["scored_positions_sha256"] != measured["predicted_positions_sha256"]


@pytest.mark.gate(GATE)
def test_bits_per_byte_over_the_bytes_left_after_dropping_characters_is_refused(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The planted bug: the denominator counts the text's bytes once what is not ASCII is dropped."""
    monkeypatch.setattr(
        bpb, "bits_per_byte", lambda nll, text: bits_per_byte(nll, text.encode("ascii", "ignore").decode())
    )
    with pytest.raises(GateViolation, match="not over the text's"):
        evaluate_text(BigramLM(), ByteTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")


@pytest.mark.gate(GATE)
def test_a_score_just_beyond_the_tolerance_fires_and_just_inside_holds() -> None:
    """Bits per byte and the loss moved off the NLL sum by 0.9 and 1.1 times score_rtol; and each
    position count alone fires."""
    rtol = load_spec().threshold(GATE, "score_rtol")
    clean = _scored()
    assert measure(GATE, clean).ok
    for key in ("bits_per_byte", "loss"):
        value = float(clean[key])  # type: ignore[arg-type]
        assert measure(GATE, {**clean, key: value * (1 + 0.9 * rtol)}).ok
        assert not measure(GATE, {**clean, key: value * (1 + 1.1 * rtol)}).ok
    for key in ("missing_positions", "repeated_positions", "first_token_scored", "misaligned_targets"):
        assert not measure(GATE, {**clean, key: 1}).ok
    assert not measure(GATE, {**clean, "scored_positions_sha256": "0" * 64}).ok
    assert not measure(GATE, {**clean, "bytes": int(clean["bytes"]) - 1}).ok  # type: ignore[call-overload]


# -- the text of a split (`stack eval --split val`) ------------------------------------------


@pytest.fixture(scope="module")
def scored_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A smoke run of two steps on the generated corpus: what `stack eval --split val` scores."""
    root = tmp_path_factory.mktemp("split-eval")
    run = root / "run"
    cadence = ["train.steps=2", "eval.every=2", "ckpt.every=2", "monitor.sample_every=2"]
    assert train(smoke_args(prepared(root), run, *cadence)) == 0
    return run


def _eval_split(run: Path, record: Path, *extra: str) -> int:
    return main(["eval", str(run), "--split", "val", "--record", str(record), *extra])


def _split_check(record: Path) -> dict[str, Any]:
    """GATE-EVAL-003's measured values in an eval record."""
    gates = json.loads((record / "metadata.json").read_text())["gates"]
    return next(g for g in gates if g["id"] == GATE)["measured"]


def _reading_the_train_split(real: Callable[..., str]) -> Callable[..., str]:
    """Planted: `stack eval --split val` scores the train split."""

    def planted(data_dir: Path, split: str, max_bytes: int | None = None) -> str:
        return real(data_dir, "train", max_bytes)

    return planted


def _without_each_last_document(real: Callable[..., list[MappedShard]]) -> Callable[..., list[MappedShard]]:
    """Planted: the texts of a split lose the last document of each shard (its tokens end
    at the end-of-text id before that document's)."""

    def planted(*args: Any) -> list[MappedShard]:
        cut = []
        for shard in real(*args):
            ends = np.flatnonzero(np.asarray(shard.tokens) == ByteLevel().eot_id)
            cut.append(MappedShard(shard.entry, shard.tokens[: ends[-2] + 1]))
        return cut

    return planted


@pytest.mark.gate(GATE)
def test_an_evaluation_of_val_that_scores_the_train_split_is_refused(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setattr(texts, "split_text", _reading_the_train_split(texts.split_text))
    code = _eval_split(scored_run, tmp_path / "scored")
    err = capsys.readouterr().err
    assert code == 3 and GATE in err and "not the heldout split's" in err and "Traceback" not in err, err
    measured = _split_check(tmp_path / "scored")
    assert measured["text_sha256"] != measured["split_text_sha256"]


@pytest.mark.gate(GATE)
def test_an_evaluation_that_drops_the_last_document_of_each_shard_is_refused(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Every other document is scored, each token once and over its bytes: only the split, read
    again from its shards, shows the documents missing."""
    monkeypatch.setattr(texts, "open_split", _without_each_last_document(texts.open_split))
    code = _eval_split(scored_run, tmp_path / "scored")
    err = capsys.readouterr().err
    assert code == 3 and GATE in err and "documents lost or added" in err, err
    measured = _split_check(tmp_path / "scored")
    assert measured["documents_scored"] == measured["split_documents"] == measured["documents_read"]


@pytest.mark.holds(GATE)
@pytest.mark.parametrize("budget", [None, "2000"], ids=["whole-split", "max-bytes"])
def test_the_split_scored_whole_or_up_to_max_bytes_holds(
    scored_run: Path, tmp_path: Path, budget: str | None
) -> None:
    """With --max-bytes the text holds the split's first whole documents, fewer than all of them."""
    assert _eval_split(scored_run, tmp_path / "scored", *(["--max-bytes", budget] if budget else [])) == 0
    measured = _split_check(tmp_path / "scored")
    assert measured["text_sha256"] == measured["split_text_sha256"]
    assert measured["documents_read"] == measured["split_documents"] > 1
    assert (measured["documents_scored"] < measured["split_documents"]) is (budget is not None)


# -- check nll: the NLL held, batch by batch, to the logits each forward taped (contracts.likelihood) --

ACCENTED = "Le café était animé ; une naïve façade, déjà vue, où l'on dîne à côté.\n" * 4


def _eval_file(run: Path, record: Path, text: str, where: Path) -> int:
    """`stack eval RUN --text FILE --record RECORD` of `text`, written to `where` first."""
    where.write_text(text, encoding="utf-8")
    return main(["eval", str(run), "--text", str(where), "--record", str(record)])


@pytest.mark.gate(GATE)
@pytest.mark.parametrize("source", ["text", "split"])
def test_an_nll_summed_from_each_batchs_mean_is_refused(
    scored_run: Path,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
    source: str,
) -> None:
    """Planted: the sum takes cross-entropy's mean over each batch (README.md scored 0.031
    bits per byte for 7.68). The positions, the loss and bits per byte all agree with that wrong
    sum; the logits each batch's forward taped do not. Exit 3, on --text and --split alike."""
    monkeypatch.setattr(bpb, "F", MeanCrossEntropy())
    record = tmp_path / "scored"
    if source == "text":
        code = _eval_file(scored_run, record, ACCENTED, tmp_path / "accented.txt")
    else:
        code = _eval_split(scored_run, record)
    err = capsys.readouterr().err
    assert code == 3 and GATE in err and "a mean for a sum?" in err and "Traceback" not in err, err
    measured = _split_check(record)
    assert measured["missing_positions"] == measured["repeated_positions"] == 0
    assert measured["nll_nats"] < measured["nll_taped"] / 10 and measured["nll_batch_deviation"] > 0.9


@pytest.mark.gate(GATE)
def test_bytes_counted_as_characters_wherever_the_scorer_counts_them_are_refused(
    scored_run: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """Planted in `stack eval`: every UTF-8 byte count the scorer makes counts characters,
    so its result's bytes, the bytes the scored check holds them to and bits per byte agree with one
    another; the UTF-8 bytes of the text the scored tokens decode to, counted by
    contracts.likelihood, do not."""
    monkeypatch.setattr(bpb, "len", characters_for_bytes, raising=False)
    record = tmp_path / "scored"
    code = _eval_file(scored_run, record, ACCENTED, tmp_path / "accented.txt")
    err = capsys.readouterr().err
    assert code == 3 and GATE in err and "characters counted for bytes?" in err, err
    measured = _split_check(record)
    assert measured["bytes"] == measured["text_bytes"] == len(ACCENTED) < measured["bytes_decoded"]
    assert measured["bytes_decoded"] == len(ACCENTED.encode("utf-8"))


@pytest.mark.holds(GATE)
def test_an_accented_file_is_scored_over_its_utf8_bytes_and_its_taped_nll(
    scored_run: Path, tmp_path: Path
) -> None:
    """Unplanted: the NLL is the taped logits' (every batch within a rounding of float32), the bytes
    the file's UTF-8 bytes, not its characters."""
    record = tmp_path / "scored"
    assert _eval_file(scored_run, record, ACCENTED, tmp_path / "accented.txt") == 0
    measured = _split_check(record)
    rtol = load_spec().threshold(GATE, "nll_rtol")
    assert measured["bytes"] == measured["bytes_decoded"] == len(ACCENTED.encode("utf-8")) > len(ACCENTED)
    assert measured["nll_batch_deviation"] < rtol / 100
    assert measured["nll_nats"] == pytest.approx(measured["nll_taped"], rel=rtol / 100)


def _first_batch_off_by(factor: float) -> Callable[..., float]:
    """The stack's batch sum, the first batch's moved by `factor` × nll_rtol of itself."""
    real, rtol, calls = bpb._nll_sum, load_spec().threshold(GATE, "nll_rtol"), []

    def planted(*args: Any) -> float:
        calls.append(1)
        nll = real(*args)
        return nll * (1 + factor * rtol) if len(calls) == 1 else nll

    return planted


@pytest.mark.parametrize(
    ("factor", "fires"),
    [
        pytest.param(1.1, True, marks=pytest.mark.gate(GATE)),
        pytest.param(0.9, False, marks=pytest.mark.holds(GATE)),
    ],
)
def test_one_batch_off_its_taped_nll_just_beyond_nll_rtol_fires_and_just_inside_holds(
    monkeypatch: pytest.MonkeyPatch, factor: float, fires: bool
) -> None:
    """One batch of several states its NLL 1.1 × nll_rtol off the sum its taped logits give: the
    total is off by less (the other batches dilute it), the batch itself is not; 0.9 × holds."""
    monkeypatch.setattr(bpb, "_nll_sum", _first_batch_off_by(factor))
    scoring = contextlib.nullcontext() if not fires else pytest.raises(GateViolation, match="a batch's NLL")
    with scoring:
        evaluate_text(BigramLM(), ByteTokenizer(), TEXT, seq_len=16, batch_size=4, device="cpu")


@pytest.mark.gate(GATE)
def test_the_taped_total_and_the_decoded_bytes_just_beyond_nll_rtol_fire() -> None:
    """The clean scoring's check nll holds; the taped total moved 0.9 × nll_rtol holds and 1.1 ×
    fires (the NLL summed and bits per byte both leave it), as does a batch deviation past it, and
    one byte more in the decoded text."""
    rtol = load_spec().threshold(GATE, "nll_rtol")
    clean = _scored()
    assert measure(GATE, clean).ok
    taped = float(clean["nll_taped"])  # type: ignore[arg-type]
    assert measure(GATE, {**clean, "nll_taped": taped * (1 + 0.9 * rtol)}).ok
    assert not measure(GATE, {**clean, "nll_taped": taped * (1 + 1.1 * rtol)}).ok
    assert measure(GATE, {**clean, "nll_batch_deviation": 0.9 * rtol}).ok
    assert not measure(GATE, {**clean, "nll_batch_deviation": 1.1 * rtol}).ok
    assert not measure(GATE, {**clean, "bytes_decoded": int(clean["bytes_decoded"]) + 1}).ok  # type: ignore[call-overload]


@pytest.mark.parametrize("vocab", [257, 50_000])
def test_a_taped_sum_is_the_statutes_whatever_the_chunks(vocab: int) -> None:
    """The taped sum, read in bounded chunks of positions row by row, is contracts.likelihood's over
    the whole tape at once (and NaN for a tape without logits)."""
    generator = torch.Generator().manual_seed(0)
    logits = torch.randn(2, 300, vocab, generator=generator)
    targets = torch.randint(vocab, (2, 300), generator=generator)
    consumed = Consumed(targets, targets, logits=logits)
    assert bpb.taped_sum(consumed) == pytest.approx(summed_nll(logits, targets), rel=1e-12)
    assert math.isnan(bpb.taped_sum(Consumed(targets, targets)))
