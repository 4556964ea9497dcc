"""The DPO objective (`train.task = "dpo"`): a policy tuned on preference pairs against a frozen reference.

Per pair, with log π(y|x) summed over the completion's tokens (stack.tune.dpo holds the loss,
its identities and gates):

    h = β · ((log π(y_c|x) − log π(y_r|x)) − (log π_ref(y_c|x) − log π_ref(y_r|x)))
    L = −(1 − ε) · log σ(h) − ε · log σ(−h)

The data is a DATA_DIR of `stack prepare --format prefs` (stack.data.prefs_rows): one window
per pair, its chosen row then its rejected row, so the reader, its shuffle, the held-out batches
and the resume are the loop's own. Each batch's rows are rebuilt from the label file's
supervised bits (a row's prompt ends at its first scored token, the row at its last), masked by
stack.tune.pairs.completion_mask, and judged by GATE-DPO-005 before they are scored; before that,
GATE-SFT-001's check boundary reads each pair back at those bits (contracts.pair_rows) against the
pairs of the DATA_DIR's index, so data a prepare wrote with a mask off the boundary is refused.

What the task adds is the reference: loaded from `dpo.reference` at set-up, moved to the run's
device, frozen and hashed (GATE-DPO-002 after the last step; the hash is kept in every
checkpoint, and a resume whose reference hashes otherwise is refused). Before the first step,
on the first held-out batch, the starting policy scores the pairs as the reference does
(GATE-DPO-001: loss ln 2, rewards 0) and appended padding changes nothing (GATE-DPO-003). The
margins and accuracies of every step are kept (in the checkpoints too) and GATE-DPO-004 judges
at the end that they moved. The held-out loss is the same DPO loss.

On the loop's probe cadence (`probe`), GATE-DPO-005 judges the batch the loss just used: the
sums the loss takes against a plain forward of each model, the loss and rewards against the
formula over those plain sums, and the loss's gradient with both models' logits set to zero,
where h = 0 whatever the weights: ∂L/∂log π(y_c) is then −β(1 − 2ε)/2 per pair and
∂L/∂log π(y_r) its opposite, which a loss with policy and reference swapped, β left out or the
label noise on the wrong side cannot give, however close the policy still is to the reference.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import replace
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from stack.data import sft_gates
from stack.data.manifest import load_manifest
from stack.data.prefs_rows import PREFS_FORMAT
from stack.data.sft_prepare import most_pack_len
from stack.data.sft_reader import SftBatch, SftReader, pack_len_of, sft_entry, sft_heldout_batches
from stack.data.split import read_index
from stack.data.tokenizer import load_tokenizer
from stack.model.consumed import EVAL, Consumed
from stack.model.depth_router import causal_routing
from stack.model.gpt import GPT
from stack.train.config import DpoSection, RunConfig
from stack.train.objective import Forward, Objective, StepLoss
from stack.train.tokenizer_match import check_data_tokenizer
from stack.train.trained import Trained, load_trained, resolve_checkpoint
from stack.tune import dpo, frozen, pairs


def pair_keys(data_dir: Path) -> set[int]:
    """The keys of the pairs a DATA_DIR holds: its index's rows (stack.data.split.index_row of each
    pair's identity), what GATE-SFT-001's check boundary finds each batch's pairs among."""
    manifest = load_manifest(data_dir)
    return {int(doc) for doc in read_index(data_dir / manifest.documents.path)["doc"]}


def reference_model(path: Path, device: torch.device) -> Trained:
    """The reference as the run holds it: the checkpoint at `path`, on `device`."""
    return load_trained(path, device)


def pair_rows(batch: SftBatch) -> pairs.PairBatch:
    """A batch of pair windows as 2B rows, chosen rows first, with the stack's completion mask."""
    width = batch.tokens.shape[1] // 2  # a window is 2·L tokens, plus the one the reader reads past
    tokens, labels = batch.tokens[:, : 2 * width], batch.labels[:, : 2 * width]
    rows = torch.cat([tokens[:, :width], tokens[:, width:]])
    scored = (torch.cat([labels[:, :width], labels[:, width:]]) & 1).bool()
    if not scored.any(dim=1).all():
        raise BadInput("a preference row scores no token; prepare the pairs again with --format prefs")
    positions = torch.arange(width, device=scored.device)
    firsts = torch.where(scored, positions, width).min(dim=1).values
    lasts = torch.where(scored, positions, -1).max(dim=1).values
    return pairs.rows_batch(rows, tuple(firsts.tolist()), tuple((lasts + 1).tolist()))


def stated_rows(batch: SftBatch) -> tuple[torch.Tensor, torch.Tensor]:
    """The 2B rows of a batch of pair windows (chosen rows first) and their scored positions, read
    straight from the label file's supervised bits (`example * 2 + supervised`): what the data
    states, independently of `pair_rows`, which the loss reads through."""
    half = batch.tokens.shape[1] // 2
    tokens, labels = batch.tokens[:, : 2 * half], batch.labels[:, : 2 * half]
    rows = torch.cat([tokens[:, :half], tokens[:, half:]])
    scored = torch.cat([labels[:, :half], labels[:, half:]]) % 2 == 1
    return rows, scored


@torch.no_grad()
def plain_logprobs(model: torch.nn.Module, rows: torch.Tensor, scored: torch.Tensor) -> torch.Tensor:
    """Each row's summed log-probability of its scored tokens by a plain forward of `model` over the
    whole row: the independent path GATE-DPO-005 checks the loss's sums against."""
    logits, _ = model(rows[:, :-1])
    logp = torch.log_softmax(logits.float(), dim=-1)
    picked = logp.gather(-1, rows[:, 1:].unsqueeze(-1)).squeeze(-1)
    return picked.masked_fill(~scored[:, 1:], 0.0).sum(dim=-1)


def recompute_measured(
    consumed: tuple[torch.Tensor, torch.Tensor], recomputed: list[torch.Tensor]
) -> dict[str, float | int]:
    """The largest difference between the sums the loss consumed (policy, reference) and the same
    sums recomputed by `plain_logprobs`, over every row of both models."""
    diffs = [(got.float() - want).abs().max() for got, want in zip(consumed, recomputed, strict=True)]
    return {
        "max_abs_logprob_diff": float(torch.stack(diffs).max()),
        "rows_compared": int(consumed[0].numel()),
    }


def loss_measured(terms: dpo.DpoTerms, recomputed: list[torch.Tensor]) -> dict[str, Any]:
    """The loss and rewards the objective gives a batch, beside the plain sums (policy, reference)
    GATE-DPO-005's judge writes the formula out over."""
    return {
        "loss": float(terms.loss.detach()),
        "chosen_rewards": terms.chosen_rewards.tolist(),
        "rejected_rewards": terms.rejected_rewards.tolist(),
        "policy_logps": recomputed[0].tolist(),
        "reference_logps": recomputed[1].tolist(),
    }


@contextmanager
def zero_logits(
    policy_head: torch.nn.Module, reference_head: torch.nn.Module
) -> Iterator[list[torch.Tensor]]:
    """Inside the block every output of both heads is float32 zeros, so each model's distribution is
    uniform; the policy's require a gradient and are collected, in the order they were made."""
    made: list[torch.Tensor] = []

    def policy(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        made.append(torch.zeros(output.shape, dtype=torch.float32, device=output.device, requires_grad=True))
        return made[-1]

    def reference(_module: torch.nn.Module, _inputs: Any, output: torch.Tensor) -> torch.Tensor:
        return torch.zeros(output.shape, dtype=torch.float32, device=output.device)

    handles = [policy_head.register_forward_hook(policy), reference_head.register_forward_hook(reference)]
    try:
        yield made
    finally:
        for handle in handles:
            handle.remove()


class Dpo(Objective):
    """The DPO loss of preference pairs against a frozen reference (see the module docstring)."""

    name = "dpo"
    data = "data-prefs"
    metric_names = ("chosen_reward", "rejected_reward", "margin", "accuracy")
    first_loss_is_ln_vocab = False  # the DPO loss starts at ln 2, by GATE-DPO-001
    logs_forward_loss = False  # its sums are scored by sequence_logprobs, with no cross-entropy

    def bind(self, config: RunConfig, data_dir: Path, device: torch.device) -> None:
        """Load the reference onto the run's device, once the data is found to be pairs in its tokens."""
        if config.dpo is None:
            raise BadInput(
                "train.task=dpo needs a reference: --set dpo.reference=RUN_DIR|CKPT, or `stack dpo`"
            )
        self.settings: DpoSection = config.dpo
        entry = sft_entry(data_dir, load_manifest(data_dir))
        if entry.format != PREFS_FORMAT:
            raise BadInput(
                f"{data_dir} holds {entry.format} examples, not preference pairs; prepare them with "
                "`stack prepare PREFS.jsonl --format prefs --out DATA_DIR`"
            )
        tokenizer = load_tokenizer(data_dir)
        self.tokenizer = tokenizer
        self.pair_keys = pair_keys(data_dir)
        self.pad_id = tokenizer.eot_id
        self.reference_path = resolve_checkpoint(Path(self.settings.reference))
        reference = reference_model(self.reference_path, device)
        check_data_tokenizer(tokenizer, reference.checkpoint)  # GATE-DATA-007 on the reference
        self.reference: GPT = reference.model
        self.reference_sha256 = frozen.freeze(self.reference)
        self.reference_watch = frozen.ForwardWatch(self.reference)  # GATE-DPO-002: how it ran
        self.started_sha256 = self.reference_sha256  # the run's start; a resume restores it
        self.device = device
        self.resumed = False
        self.margins: list[float] = []
        self.accuracies: list[float] = []

    def window(self, data_dir: Path, ctx: int) -> int:
        """A pair's window: two rows, each at most the context plus the token it predicts last."""
        pack_len = pack_len_of(data_dir)
        if pack_len // 2 > most_pack_len(PREFS_FORMAT, ctx):
            raise BadInput(
                f"{data_dir} holds sequences of {pack_len // 2} tokens, more than the model's ctx {ctx} + 1; "
                f"prepare again with --pack-len {ctx + 1} or less"
            )
        return pack_len

    def open_reader(self, data_dir: Path, **options: Any) -> SftReader:
        return SftReader(data_dir, split="train", **options)

    def heldout(self, data_dir: Path, batch_size: int, seq_len: int, n_batches: int | None) -> list[Any]:
        return sft_heldout_batches(data_dir, batch_size, seq_len, n_batches)

    def tokens(self, batch: SftBatch) -> torch.Tensor:
        return batch.tokens

    def to_device(self, batch: SftBatch, device: torch.device) -> SftBatch:
        return batch.to(device)

    def _loss_args(self) -> dict[str, float]:
        return {"beta": self.settings.beta, "label_noise": self.settings.label_noise}

    def _logprobs(self, forward: Forward, rows: pairs.PairBatch) -> tuple[torch.Tensor, torch.Tensor]:
        """Each row's summed completion log-probability under the policy and under the reference:
        the reference scores first, the policy last (the loop reads the experts' auxiliary losses of
        the policy's forward next). Mixture-of-depths blocks of either route each token by its
        threshold (`causal_routing`): a row's score then depends on the row alone, whatever its
        padding, and the two models route alike in any mode."""
        with torch.no_grad(), causal_routing(self.reference):
            reference = dpo.sequence_logprobs(self.reference, rows.tokens, rows.mask)
        with causal_routing(forward):  # type: ignore[arg-type]
            policy = dpo.sequence_logprobs(forward, rows.tokens, rows.mask)  # type: ignore[arg-type]
        return policy, reference

    def _terms(self, forward: Forward, rows: pairs.PairBatch) -> dpo.DpoTerms:
        """The DPO loss of the pairs, from the log-probabilities `_logprobs` sums."""
        return dpo.dpo_terms(*self._logprobs(forward, rows), **self._loss_args())

    def check_boundary(self, batch: SftBatch) -> None:
        """GATE-SFT-001's check boundary on a batch the loss reads: each pair's rows, read at the label
        file's supervised bits the loss scores by, give back a pair the DATA_DIR's index holds."""
        tokens, labels = batch.tokens.cpu().numpy(), batch.labels.cpu().numpy()
        sft_gates.check_boundary(tokens, labels, self.pair_keys, self.tokenizer)

    def loss(self, forward: Forward, model: torch.nn.Module, batch: SftBatch) -> StepLoss:
        self.check_boundary(batch)
        rows = pair_rows(batch)
        dpo.check_scored_tokens(rows)  # GATE-DPO-005, on every batch before it is scored
        terms = self._terms(forward, rows)
        self.margins.append(terms.margin)
        self.accuracies.append(terms.accuracy)
        chosen, rejected = terms.chosen_rewards, terms.rejected_rewards
        metrics = {
            "chosen_reward": chosen.mean(),
            "rejected_reward": rejected.mean(),
            "margin": (chosen - rejected).mean(),
            "accuracy": (chosen > rejected).float().mean(),
        }
        return StepLoss(backprop=terms.loss, logged=terms.loss, metrics=metrics)

    def loss_again(self, forward: Forward, model: torch.nn.Module, batch: SftBatch) -> torch.Tensor:
        """The pairs' DPO loss, computed again without keeping its margin and accuracy as the step's
        a second time (the loss's own checks of the batch ran when it was scored)."""
        return self._terms(forward, pair_rows(batch)).loss

    def stated(self, batch: SftBatch) -> list[Consumed]:
        """The reference's scoring, then the policy's, each of the pairs' rows as the label file
        marks them: a row's targets are its next tokens where their supervised bit is set. The
        reference is frozen: a training step scores with it in evaluation mode (GATE-DPO-002)."""
        rows, scored = stated_rows(batch)
        targets = torch.where(scored[:, 1:], rows[:, 1:], torch.full_like(rows[:, 1:], -1))
        rows_read = Consumed(inputs=rows[:, :-1], targets=targets)
        return [replace(rows_read, mode=EVAL), rows_read]

    def probe(self, model: torch.nn.Module, batch: SftBatch, step: int) -> None:
        """GATE-DPO-005 on the batch the loss just used: the log-probability sums the loss takes
        (its own path, from `pair_rows`) against a plain forward of each model over the rows,
        masked by the labels' supervised bits; the loss and rewards it gives, for the judge to hold
        against the formula over those plain sums; and its gradient at zero logits
        (`_gradient_at_zero_logits`)."""
        rows = pair_rows(batch)
        measured = {
            **self._formula_measured(model, batch),
            **dpo.gradient_reading(
                self._gradient_at_zero_logits(model, rows), self.stated(batch)[-1].targets
            ),
        }
        dpo.check_recomputed(measured, step)

    def _formula_measured(self, model: torch.nn.Module, batch: SftBatch) -> dict[str, Any]:
        """What GATE-DPO-005 holds to DPO's formula on `batch`: the run's β and ε, the sums the loss
        takes against a plain forward of each model (masked by the labels), and the loss and
        rewards the objective gives beside those plain sums."""
        rows = pair_rows(batch)
        policy, reference = self._logprobs(model, rows)
        stated, scored = stated_rows(batch)
        recomputed = [plain_logprobs(m, stated, scored) for m in (model, self.reference)]
        return {
            "beta": self.settings.beta,
            "label_noise": self.settings.label_noise,
            **recompute_measured((policy, reference), recomputed),
            **loss_measured(self._terms(model, rows), recomputed),
        }

    def _gradient_at_zero_logits(self, model: torch.nn.Module, rows: pairs.PairBatch) -> torch.Tensor:
        """The gradient of the loss, by the objective's own path, at the policy's logits, with both
        models' logits set to zero (`zero_logits`); zeros where the loss does not reach them."""
        with torch.enable_grad(), zero_logits(model.lm_head, self.reference.lm_head) as logits:
            loss = self._terms(model, rows).loss
            grads = torch.autograd.grad(loss, logits, allow_unused=True) if loss.requires_grad else ()
        width, vocab = rows.tokens.shape[1] - 1, model.config.vocab
        grad = grads[-1] if grads else None  # the policy scores once, after the reference
        return grad if grad is not None else torch.zeros(rows.tokens.shape[0], width, vocab)

    def heldout_loss(self, model: torch.nn.Module, batch: SftBatch) -> torch.Tensor:
        """The held-out DPO loss: the same pairs' loss, scored as training scores them."""
        self.check_boundary(batch)
        return self._terms(model, pair_rows(batch)).loss

    def check_heldout(self, model: torch.nn.Module, batch: SftBatch, loss: torch.Tensor, step: int) -> None:
        """GATE-DPO-005 (check loss) on a held-out batch: the loss the evaluation took of it against
        DPO's formula over both models' plain sums, as `probe` holds a training batch's. A held-out
        loss scored another way (the models swapped, β dropped) would steer early stopping and the
        overfit detector with every training gate green."""
        measured = self._formula_measured(model, batch)
        measured["loss"] = float(loss.detach())  # the evaluation's, not the terms' made again here
        dpo.check_recomputed(measured, step)

    def start(self, model: torch.nn.Module, heldout: list[Any]) -> None:
        """GATE-DPO-001, -003 and -005 on the first held-out batch, before the first step."""
        if model.config.vocab != self.reference.config.vocab:
            raise BadInput(
                f"the reference {self.reference_path} has {self.reference.config.vocab} ids, the policy "
                f"{model.config.vocab}; give a reference of the policy's vocabulary"
            )
        rows = pair_rows(self.to_device(heldout[0], self.device))
        dpo.check_scored_tokens(rows)
        with torch.no_grad():
            dpo.check_start_identity(self._terms(self._starting_policy(model), rows))
        with causal_routing(model):  # as `_terms` scores every row
            dpo.check_padding(model, rows, self.pad_id)

    def _starting_policy(self, model: torch.nn.Module) -> torch.nn.Module:
        """What GATE-DPO-001 scores against the reference: the policy itself when a fresh run starts
        from the reference's weights, else the reference checkpoint loaded a second time (a resumed
        policy has moved, and a named reference is another model than the start)."""
        plain = load_trained(self.reference_path, self.device).model
        if not self.resumed and frozen.weights_sha256(model) == frozen.weights_sha256(plain):
            return model
        return plain.eval()

    def finish(self, model: torch.nn.Module) -> None:
        """GATE-DPO-002 on the reference and GATE-DPO-004 over every step of the run."""
        frozen.check_reference(self.reference, self.reference_sha256, self.reference_watch)
        trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
        lines = [{"margin": m, "accuracy": a} for m, a in zip(self.margins, self.accuracies, strict=True)]
        dpo.check_progress(self.settings.beta, trainable, lines)

    def state(self) -> dict[str, Any]:
        """The reference's sha256 at the start, and the margins and accuracies so far."""
        return {
            "reference_sha256": self.started_sha256,
            "margins": self.margins,
            "accuracies": self.accuracies,
        }

    def restore(self, state: dict[str, Any] | None) -> None:
        """Refuse a resume whose reference hashes otherwise than at the start; take the run's history."""
        if state is None:
            raise BadInput("the checkpoint holds no DPO state; resume it with the command that wrote it")
        self.resumed = True
        self.started_sha256 = state["reference_sha256"]
        if self.started_sha256 != self.reference_sha256:
            raise BadInput(
                f"the reference {self.settings.reference} changed since the run began (weights sha256 "
                f"{self.reference_sha256[:12]}, recorded {self.started_sha256[:12]}): restore it to resume, "
                "or start a new run with --out"
            )
        self.margins, self.accuracies = list(state["margins"]), list(state["accuracies"])
