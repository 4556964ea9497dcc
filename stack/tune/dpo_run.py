"""`stack dpo`: a policy tuned on preference pairs against a frozen reference, as a new run dir.

The reference is the starting checkpoint loaded a second time (or `--reference CKPT`) and frozen
(GATE-DPO-002). Before the first update of every invocation the starting policy and the
reference score the first batch (GATE-DPO-001: ln 2, rewards 0) and the batch is scored again
with padding appended (GATE-DPO-003); every batch's mask is checked against its rows' prompt
and sequence lengths (GATE-DPO-005); at the end the reference's hash and the run's movement are
judged (GATE-DPO-002, -004). See stack.tune.rundir for the directory and the loop.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import asdict, replace
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.evidence import DataRef, sha256_file
from stack.data.sft_template import ChatTemplate, load_template
from stack.data.tokenizer import Tokenizer
from stack.model.gpt import GPT
from stack.model.moe import weighted_aux
from stack.train import checkpoint as ckpt
from stack.train.config import RunConfig
from stack.train.trained import Trained, load_trained, resolve_checkpoint
from stack.tune import dpo, frozen, rundir
from stack.tune.pairs import PairBatcher, read_pairs, tokenize_pair
from stack.tune.settings import DpoSettings

KIND = "dpo"


class DpoTask:
    """One DPO run's models, data and settings (the `Task` of stack.tune.rundir)."""

    kind = KIND

    def __init__(
        self,
        policy: Trained,
        reference: GPT,
        start_model: GPT | None,
        sources: dict[str, Any],
        batcher: PairBatcher,
        settings: DpoSettings,
    ) -> None:
        self.model: GPT = policy.model
        self.run_config: RunConfig = policy.config
        self.tokenizer: Tokenizer = policy.tokenizer
        self.reference, self.start_model = reference, start_model
        self.reference_sha256 = frozen.freeze(reference)
        self.sources, self.batcher, self.settings = sources, batcher, settings

    def record(self) -> tuple[dict[str, Any], DataRef]:
        config = {**self.sources, **asdict(self.settings)}
        return config, DataRef(
            manifest_sha256=self.sources["pairs_sha256"], tokenizer_sha256=self.tokenizer.sha256
        )

    def _scored(self, model: GPT, tokens: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        return dpo.sequence_logprobs(model, tokens, mask)

    def loss(self, first: bool) -> tuple[torch.Tensor, dict[str, float]]:
        batch = self.batcher.next_batch()
        dpo.check_scored_tokens(batch)
        with torch.no_grad():
            reference = self._scored(self.reference, batch.tokens, batch.mask)
        if first:
            start = self.model if self.start_model is None else self.start_model
            with torch.no_grad():
                at_start = dpo.dpo_terms(
                    self._scored(start, batch.tokens, batch.mask), reference, **self._loss_args()
                )
            dpo.check_start_identity(at_start)
            dpo.check_padding(self.model, batch, self.tokenizer.eot_id)
        terms = dpo.dpo_terms(
            self._scored(self.model, batch.tokens, batch.mask), reference, **self._loss_args()
        )
        # A mixture-of-experts policy keeps its routing terms, as `stack train` does; the policy's
        # forward just above is the last one its modules saw.
        aux = weighted_aux(self.model.aux_losses())
        line = terms.line()
        if isinstance(aux, torch.Tensor):
            line["aux"] = float(aux.detach())
        return terms.loss + aux, line

    def _loss_args(self) -> dict[str, float]:
        return {"beta": self.settings.beta, "label_smoothing": self.settings.label_smoothing}

    def finish(self, history: list[dict[str, float]]) -> None:
        frozen.check_reference(self.reference, self.reference_sha256)
        trainable = sum(p.numel() for p in self.model.parameters() if p.requires_grad)
        dpo.check_progress(self.settings.beta, trainable, history)

    def state(self) -> dict[str, Any]:
        return {**self.sources, "batcher": self.batcher.state_dict()}

    def position(self) -> tuple[int, dict[str, Any]]:
        return self.batcher.epoch, self.batcher.state_dict()


def _batcher(policy: Trained, pairs: Path, settings: DpoSettings, template: ChatTemplate) -> PairBatcher:
    """The pairs of `pairs` tokenized by the policy's tokenizer, batched as the settings say."""
    tokenizer = policy.tokenizer
    tokenized = [
        tokenize_pair(p, tokenizer, policy.model.config.ctx + 1) for p in read_pairs(pairs, template)
    ]
    return PairBatcher(tokenized, settings.batch_size, settings.seed, tokenizer.eot_id)


def _reference(path: Path, policy: Trained) -> GPT:
    """The reference model from `path`, refused unless it reads the policy's tokens."""
    reference = load_trained(path)
    if (
        reference.tokenizer.sha256 != policy.tokenizer.sha256
        or reference.model.config.vocab != policy.model.config.vocab
    ):
        raise BadInput(
            f"the reference {path} has another tokenizer or vocabulary than the policy; give a compatible one"
        )
    return reference.model


def start(
    source: Path,
    pairs: Path,
    out: Path,
    settings: DpoSettings,
    reference: Path | None,
    template_name: str | None,
    argv: list[str],
    evidence_dir: Path | None,
    on_step: Callable[[int, dict[str, float]], None],
) -> Path:
    """A new DPO run from `source` on the preference file `pairs` into `out`; returns its last checkpoint."""
    settings.check()
    evidence = rundir.new_evidence(KIND, argv, evidence_dir, out, fresh=True)
    with rundir.recorded(evidence, out):
        checkpoint = resolve_checkpoint(source)
        policy = load_trained(checkpoint)
        reference_path = checkpoint if reference is None else resolve_checkpoint(reference)
        reference_model = _reference(reference_path, policy)
        # A reference other than the start: the identity is checked on that checkpoint loaded again.
        start_model = None if reference is None else _reference(reference_path, policy)
        template = load_template(template_name)
        sources = {
            "template": {"path": str(template.path.resolve()), "sha256": template.sha256},
            "source": rundir.source_record(checkpoint),
            "reference": rundir.source_record(reference_path),
            "pairs": str(pairs.resolve()),
            "pairs_sha256": sha256_file(pairs),
        }
        batcher = _batcher(policy, pairs, settings, template)
        task = DpoTask(policy, reference_model, start_model, sources, batcher, settings)
        return rundir.train(task, out, evidence, policy.tokenizer, (0, [], None), on_step)


def resume(
    out: Path,
    steps: int,
    argv: list[str],
    evidence_dir: Path | None,
    on_step: Callable[[int, dict[str, float]], None],
) -> Path:
    """Continue the DPO run in `out` from its newest valid checkpoint up to `steps` in all."""
    path = rundir.latest(out, KIND)
    evidence = rundir.new_evidence(KIND, argv, evidence_dir, out, fresh=False)
    with rundir.recorded(evidence, out):
        policy = load_trained(path)
        checkpoint = policy.checkpoint
        tune = rundir.restored_tune_state(checkpoint, KIND, steps)
        with ckpt.restoring(checkpoint, "tune"):
            settings = replace(DpoSettings(**tune["settings"]), steps=steps)
            sources = {key: tune[key] for key in ("template", "source", "reference", "pairs", "pairs_sha256")}
            pairs = Path(tune["pairs"])
            template_path = Path(tune["template"]["path"])
            rundir.unchanged(pairs, tune["pairs_sha256"])
            rundir.unchanged(template_path, tune["template"]["sha256"])
            reference_path = rundir.checked_source(tune["reference"])
        batcher = _batcher(policy, pairs, settings, load_template(str(template_path)))
        batcher.load_state_dict(tune["batcher"])
        reference_model = _reference(reference_path, policy)
        task = DpoTask(
            policy, reference_model, _reference(reference_path, policy), sources, batcher, settings
        )
        return rundir.train(
            task,
            out,
            evidence,
            policy.tokenizer,
            (checkpoint.step, list(tune["history"]), checkpoint),
            on_step,
        )
