"""The gated training loop.

One optimizer step, in order: gather `grad_accum` micro-batches from the reader (hashing their
token ids), forward and backward (recording what each loss consumed, stack.model.consumed),
clip the global gradient norm, read loss, gradient norm and the consumption counts to the host
once, check that every loss consumed what its batch states (GATE-TRAIN-007) and that loss and
norm are finite (GATE-TRAIN-003), step AdamW at the scheduled learning rate, write the step's
metrics line (GATE-TRAIN-001), watch for spikes (GATE-TRAIN-006). Where AdamW is fused (on CUDA)
the read and the checks come after the optimizer's step, which skips itself on the device if the
loss or the norm is not finite, and `run` queues the next step's work before judging this one, so
that the GPU does not wait for the host's checks (stack.train.queued says what that keeps). On
the first step of each invocation and at every evaluation, the objective's probe checks its
identities on the batch the loss just used. On a cadence: held-out evaluation with early
stopping and overfit detection (GATE-EVAL-001…004) and, with experts, routing balance and
collapse (GATE-ARCH-002, -012), coherence samples (GATE-TRAIN-005) and checkpoints
(GATE-CKPT-001/002). Everything the loop keeps between steps is in `TrainState` and goes into
every checkpoint, which is what makes a resume exact (GATE-CKPT-003).

The end of the corpus: with data.wrap=false the loop stops before a step the corpus cannot
finish and checkpoints the last one (status `exhausted`); with data.wrap=true each wrap to a
new epoch is an event line in metrics.jsonl and is said on stderr.
"""

from __future__ import annotations

import contextlib
import copy
import functools
import json
import shutil
import signal
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contracts.coherence import coherence_score, sample_length, sample_score
from contracts.derive.training import CLIPPED_NORM, mean_and_stderr, overflowed, reached_steps
from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes, sha256_file
from contracts.heldout import heldout_set_batches
from contracts.judges.train import COMPUTE_DTYPES
from contracts.plan import step_sha256
from contracts.replay import STATE_KEY, digests_state, replay_plan
from contracts.schedule import SCHEDULE_KEYS, lr_at
from contracts.seeds import monitor_seed
from contracts.spec import load_spec
from stack.data import chat_jinja
from stack.data.adequacy import CorpusAdequacy, corpus_adequacy
from stack.data.hashing import batch_sha256
from stack.data.heldout import (
    check_heldout,
    heldout_split_windows,
    repeated_windows_remedy,
    set_size_measured,
)
from stack.data.policy import build_policy, check_paid, source_heldout, tallied_measured
from stack.data.reader import check_fingerprint, check_served, planned_sha256
from stack.data.tokenizer import Tokenizer
from stack.data.tokenizer_record import tokenizer_state
from stack.model.checks import check_architecture, check_attention_paths, runnable_paths
from stack.model.consumed import Consumed, recording
from stack.model.diff_checks import check_diff_attention
from stack.model.gpt import GPT
from stack.model.initialisation import check_initialisation
from stack.model.lora import adapters as lora_adapters
from stack.model.lora_checks import check_identity, identity_measured
from stack.model.mod_checks import (
    check_depth_routing,
    check_inference_capacity,
    check_inference_threshold,
    inference_routed,
    reset_inference_routed,
    threshold_split,
)
from stack.model.moe import AUX_TERMS, weighted_aux
from stack.model.moe_checks import (
    AuxGradients,
    ReceivedTokens,
    aux_terms,
    check_aux_in_loss,
    check_expert_shares,
    check_mixtures,
    check_router_collapse,
    defined_terms,
    reset_routed,
    routed_counts,
)
from stack.model.sampling_checks import (
    PROBE_TOKENS,
    DrawTally,
    Sampler,
    SpreadLogits,
    check_drawn,
    drawn_or_stop,
    probe_width,
    sample_watched,
)
from stack.model.structure import check_structure
from stack.outputs.lock import running_command
from stack.train import checkpoint as ckpt
from stack.train import determinism, distributed, rng
from stack.train.best_kept import BestWatch, check_best_kept
from stack.train.coherence import CoherenceMonitor, check_scored
from stack.train.config import DataSection, RunConfig, training_window
from stack.train.consumption import COUNTS as CONSUMED_COUNTS
from stack.train.consumption import Tally, check_consumed, check_logged, forward_loss
from stack.train.dropout_reads import check_dropout, measure_dropout
from stack.train.early_stop import (
    EarlyStopper,
    check_aggregated,
    check_early_stop_config,
    check_heldout_noise,
    judge_heldout_set,
)
from stack.train.guards import (
    check_clipped,
    check_counted,
    check_decay_groups,
    check_finite,
    check_first_loss,
    check_stability,
    check_warmup_lr,
)
from stack.train.heldout_reads import COUNTS as HELDOUT_READS
from stack.train.heldout_reads import (
    HeldoutReads,
    check_heldout_reads,
    to_host,
    window_digests,
    windows_sha256,
)
from stack.train.lora_setup import StartWeights, adapter_parameters, adapter_settings, start_weights
from stack.train.lora_setup import attach as attach_lora
from stack.train.metrics import MetricsLog
from stack.train.overfit import OverfitDetector, check_compared
from stack.train.queued import QueuedStep, step_unless
from stack.train.readback import Readback
from stack.train.resume_check import Rehearsal, check_replay, check_restored, end_state, state_digest
from stack.train.spikes import SpikeDetector
from stack.train.stepping import (
    AdamWSettings,
    Draws,
    GradientReference,
    StepProbe,
    applied_lr,
    check_gradient,
    check_held,
    check_moved,
    check_start,
    check_step_start,
    check_update,
    drawn_start,
    held_measured,
    stale_gradients,
    start_measured,
    trained,
)
from stack.train.tasks import objective_for
from stack.train.tensorboard import Board

# Where a polish pivot keeps the mixture and policy state it replaced, inside the run directory.
POLICY_ARCHIVE = "policy-archive"
COMMAND = "stack train"  # the run directory's writer, and the speaker outside a command's block


def speaker() -> str:
    """How the run's lines on stderr and stdout begin: the command typed, so that a `stack sft`
    run speaks as `stack sft` (it said `stack train`, a command its user never typed)."""
    return running_command(COMMAND)


def pick_device(requested: str, local_rank: int = 0) -> torch.device:
    """`auto` is CUDA when present, else CPU; asking for CUDA without one is bad input."""
    if requested == "auto":
        requested = "cuda" if torch.cuda.is_available() else "cpu"
    if requested == "cuda" and not torch.cuda.is_available():
        raise BadInput("train.device=cuda but no CUDA device is visible; use train.device=auto or cpu")
    return torch.device("cuda", local_rank) if requested == "cuda" else torch.device("cpu")


def check_runnable(path: str, device: torch.device, head_dim: int, task: str | None = None) -> None:
    """Refuse at set-up, eager or compiled, an attention path this device cannot run, or one without
    the document mask a task packing several documents per window needs, rather than at the first
    step's forward (the Triton kernel needs CUDA or Triton's interpreter, and masks no documents)."""
    objective = objective_for(task)
    if path == "triton" and objective.document_masks:
        raise BadInput(
            f"model.attention='triton' has no document mask, and train.task={objective.name} packs "
            "several examples into each window, which must not see each other; use --set "
            "model.attention=sdpa (the same numbers, GATE-MODEL-001)"
        )
    if path not in runnable_paths(device, head_dim):
        raise BadInput(
            f"model.attention='{path}' cannot run on {device.type} at head_dim {head_dim}: the Triton kernel "
            "needs a CUDA device (or TRITON_INTERPRET=1 set before triton is imported) and a head_dim it "
            "is built for (stack.kernels.flash_attention.HEAD_DIMS); use --set model.attention=sdpa"
        )


def group_settings(config: RunConfig, adapters: bool) -> list[dict[str, Any]]:
    """What each parameter group of the run's AdamW steps with, in the order `build_optimizer` makes
    the groups: matrices decayed at train.weight_decay, norms and biases not decayed, then (with
    `adapters`) LoRA adapters at lora.weight_decay; every group with the run's betas and eps. A
    resume sets them on the restored groups (`apply_settings`), so a setting the resume changes is
    the one the optimizer steps with."""
    train = config.train
    common = {"betas": (train.beta1, train.beta2), "eps": train.eps}
    groups = [{**common, "weight_decay": train.weight_decay}, {**common, "weight_decay": 0.0}]
    if adapters:
        assert config.lora is not None, "adapters without a [lora] section"
        groups.append({**common, "weight_decay": config.lora.weight_decay})
    return groups


def fused_adamw(device: torch.device) -> bool:
    """Whether AdamW steps fused on `device`: on CUDA, one kernel for every parameter, which can skip
    a step on the device (stack.train.queued); on the CPU the foreach step, whose bits the CPU's
    runs and records were made with."""
    return device.type == "cuda"


def build_optimizer(model: torch.nn.Module, config: RunConfig, device: torch.device) -> torch.optim.AdamW:
    """AdamW with decoupled weight decay on matrices only; norms and biases are not decayed. LoRA
    adapters' A and B are a third group, decayed at lora.weight_decay (default 0)."""
    adapters = adapter_parameters(model)
    trained = [p for p in model.parameters() if p.requires_grad and id(p) not in adapters]
    params = [[p for p in trained if p.dim() >= 2], [p for p in trained if p.dim() < 2]]
    if adapters:
        params.append([p for p in model.parameters() if id(p) in adapters])
    settings = group_settings(config, bool(adapters))
    fused = fused_adamw(device)
    return torch.optim.AdamW(
        [{"params": group, **setting} for group, setting in zip(params, settings, strict=True)],
        lr=config.train.lr,
        fused=fused,
        foreach=None if fused else True,
    )


def apply_settings(optimizer: torch.optim.Optimizer, settings: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Set each parameter group's hyper-parameters to `settings` (`group_settings`, in order); each
    one that changed, as {group, key, was, now}. A restored group's betas come back from JSON as a
    list: the same betas as the tuple."""
    changed = []
    for number, (group, wanted) in enumerate(zip(optimizer.param_groups, settings, strict=True)):
        for key, now in wanted.items():
            was = tuple(group[key]) if isinstance(group[key], list) else group[key]
            if was != now:
                changed.append({"group": number, "key": key, "was": was, "now": now})
            group[key] = now
    return changed


@dataclass
class TrainState:
    """Everything the loop carries from one step to the next, besides weights and optimizer."""

    step: int = 0
    # Micro-batches taken from the reader since the run began, counted by the loop and set from the
    # checkpoint's saved reader on a resume: the run's own count, which GATE-DATA-001 holds the
    # live reader's count of batches served to (`check_served`).
    batches_taken: int = 0
    tokens_seen: int = 0
    last_heldout: float | None = None
    best_heldout: float | None = None
    best_checkpoint: str | None = None
    stop_reason: str | None = None
    monitor: CoherenceMonitor = field(default_factory=CoherenceMonitor)
    early_stop: EarlyStopper | None = None
    overfit: OverfitDetector = field(default_factory=OverfitDetector)
    spikes: SpikeDetector = field(default_factory=SpikeDetector)
    recent_train_losses: list[float] = field(default_factory=list)
    last_warmup_lr: float | None = None
    # The experts' assignment counts of the latest evaluation windows (GATE-ARCH-012's history).
    routed_windows: list[dict[str, list[int]]] = field(default_factory=list)
    # Each bandit arm's held-out loss as the loop measured and logged it at the last payment: what
    # GATE-DATA-008 pays the next one against, the loop's own account, not the bandit's memory.
    paid_losses: dict[str, float] = field(default_factory=dict)

    def monitors_state(self) -> dict[str, Any]:
        assert self.early_stop is not None
        return {
            "coherence": self.monitor.state_dict(),
            "early_stop": self.early_stop.state_dict(),
            "overfit": self.overfit.state_dict(),
            "spikes": self.spikes.state_dict(),
            "recent_train_losses": self.recent_train_losses,
            "last_heldout": self.last_heldout,
            "best_heldout": self.best_heldout,
            "best_checkpoint": self.best_checkpoint,
            "tokens_seen": self.tokens_seen,
            "last_warmup_lr": self.last_warmup_lr,
            # Only with experts: a dense run's checkpoints hold what they held before.
            **({"routed_windows": self.routed_windows} if self.routed_windows else {}),
            # Only with a bandit, likewise.
            **({"paid_losses": self.paid_losses} if self.paid_losses else {}),
        }

    def load_monitors(self, state: dict[str, Any]) -> None:
        assert self.early_stop is not None
        self.monitor.load_state_dict(state["coherence"])
        self.early_stop.load_state_dict(state["early_stop"])
        self.overfit.load_state_dict(state["overfit"])
        self.spikes.load_state_dict(state["spikes"])
        self.recent_train_losses = list(state["recent_train_losses"])
        self.last_heldout = state["last_heldout"]
        self.best_heldout = state["best_heldout"]
        self.best_checkpoint = state["best_checkpoint"]
        self.tokens_seen = state["tokens_seen"]
        self.last_warmup_lr = state.get("last_warmup_lr")
        self.routed_windows = list(state.get("routed_windows", []))
        self.paid_losses = dict(state.get("paid_losses", {}))


class Signals:
    """SIGTERM / Ctrl-C ask for a checkpoint and a clean stop; SIGUSR1 for a checkpoint now."""

    def __init__(self) -> None:
        self.stop: str | None = None
        self.save_now = False

    @contextlib.contextmanager
    def installed(self) -> Iterator[Signals]:
        def on_stop(signum: int, _frame: object) -> None:
            self.stop = signal.Signals(signum).name

        def on_usr1(_signum: int, _frame: object) -> None:
            self.save_now = True

        previous = {s: signal.getsignal(s) for s in (signal.SIGTERM, signal.SIGINT, signal.SIGUSR1)}
        signal.signal(signal.SIGTERM, on_stop)
        signal.signal(signal.SIGINT, on_stop)
        signal.signal(signal.SIGUSR1, on_usr1)
        try:
            yield self
        finally:
            for sig, handler in previous.items():
                signal.signal(sig, handler)


class Trainer:
    """Runs the loop for one run directory; `on_event` receives evidence-worthy moments."""

    def __init__(
        self,
        config: RunConfig,
        data_dir: Path,
        run_dir: Path,
        tokenizer: Tokenizer,
        on_event: Callable[[str, Trainer], None],
        progress: Callable[[int, dict[str, Any]], None],
    ) -> None:
        self.config = config
        self.data_dir = Path(data_dir)
        self.run_dir = Path(run_dir)
        self.tokenizer = tokenizer
        self.on_event = on_event
        self.progress = progress
        train = config.train
        self.world = distributed.join(pick_device(train.device).type)
        self.device = pick_device(train.device, self.world.local_rank)
        # What PyTorch reports of non-deterministic ops (`stack train` hands in its run's), and the
        # switches in force at the first step.
        self.alerts = determinism.Alerts()
        self.switches: determinism.Switches | None = None
        self.replay_steps = self._replay_plan()
        self.replayed_until = 0  # the last step this invocation replays (`run` sets it)
        self.repeatability: dict[str, Any] | None = None  # what the replay compared and cost
        self.update_judged = False  # GATE-TRAIN-008 watches each invocation's first update it can judge
        self.in_flight = 0  # steps queued and not yet judged (`queue_step`, `judge`): 0 or 1
        self.last_judged = 0.0  # time.perf_counter() as the last step was judged
        self.logged_shares: dict[str, float] | None = None  # the policy's shares the log last said
        check_stability(train.clip_norm, train.warmup_steps, train.weight_decay)
        if config.eval.early_stop:
            check_early_stop_config(config.eval.patience, config.eval.min_epochs)
        torch.manual_seed(train.seed)
        self.model = GPT(config.model, seed=train.seed).to(self.device)
        check_initialisation(self.model)  # as drawn, before any checkpoint is loaded over it
        check_attention_paths(self.model)
        check_runnable(config.model.attention, self.device, config.model.head_width, train.task)
        if config.model.moe:
            check_mixtures(config.model)
        if config.model.diff_attn:
            check_diff_attention(self.model)
        if config.model.mod:
            check_depth_routing(self.model)
        wrapped: torch.nn.Module = self.model
        self.sharded = self.world.distributed and train.parallel == "fsdp"
        self.fine_tuning = False
        self.lora = attach_lora(self.model, config, self.sharded)  # [lora]: adapters, base frozen
        # GATE-MODEL-003 (check structure): every tensor the model and its adapters hold, and which
        # train, are those the resolved config implies (contracts.model_parameters)
        lora_table = None if config.lora is None else config.lora.model_dump()
        check_structure(self.model, config.model.model_dump(), lora_table)
        check_architecture(self.model, adapters=adapter_settings(config))  # the adapters it trains included
        # GATE-TRAIN-008 (check start): what the model holds now is GPT's initialisation drawn again from
        # train.seed in a fresh generator (an --init-from start and a resume load over it later)
        self._check_start(drawn_start(config.model, train.seed), "seed", self.model)
        if self.sharded:
            distributed.shard(self.model, self.model.layers)  # in place: parameters become shards
        elif self.world.distributed:
            ids = [self.device.index] if self.device.type == "cuda" else None
            wrapped = torch.nn.parallel.DistributedDataParallel(self.model, device_ids=ids)
        self.forward_model: Callable[..., Any] = torch.compile(wrapped) if train.compile else wrapped
        self.optimizer = build_optimizer(self.model, config, self.device)
        # Listed once, in the model's order (the norms' summation order): every step clips them.
        self.trained_parameters = [p for p in self.model.parameters() if p.requires_grad]
        lora_decay = config.lora.weight_decay if config.lora is not None else None
        check_decay_groups(self.optimizer, adapter_parameters(self.model), lora_decay)
        self._check_held()
        # fp16 needs loss scaling on any device; torch's GradScaler has a CPU implementation too.
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=train.precision == "fp16")
        # The task's objective owns the reader, the held-out batches and the loss (stack.train.objective).
        self.objective = objective_for(train.task)
        self.objective.bind(config, self.data_dir, self.device)  # a frozen teacher, on this device
        # The chat format the data taught (stack.data.chat_jinja), which the checkpoints carry.
        self.chat_template = chat_jinja.data_template(self.data_dir)
        seq_len = self.seq_len = self.objective.window(self.data_dir, training_window(config))
        self.reader = self.objective.open_reader(
            self.data_dir,
            batch_size=train.batch_size,
            seq_len=seq_len,
            seed=train.seed,
            rank=self.world.rank,
            world_size=self.world.size,
            wrap=config.data.wrap,
            source_weights=config.data.weights or None,
            exclude=config.data.exclude or None,
        )
        self.heldout = self.objective.heldout(self.data_dir, train.batch_size, seq_len, config.eval.batches)
        # The set the recorded config asks for, by the rule apart from the reader, given the distinct
        # windows the set holds (one on the split's copies is read one window a batch; GATE-EVAL-002 asked).
        minimum = load_spec().threshold("GATE-EVAL-001", "min_heldout_batches")
        split = heldout_split_windows(self.data_dir, seq_len)
        tokens = [self.objective.tokens(batch) for batch in self.heldout]
        distinct = set_size_measured([t.cpu().numpy() for t in tokens])["distinct_windows"]
        self.asked_batches = heldout_set_batches(
            config.eval.batches, minimum, split, train.batch_size, distinct
        )
        judge_heldout_set(
            tokens,
            lambda: repeated_windows_remedy(self.data_dir, train.batch_size, seq_len, config.eval.batches),
        )
        # The distinct windows the set's batches state: what every evaluation must read (GATE-EVAL-001).
        self.heldout_windows = len(window_digests(s for b in self.heldout for s in self.objective.stated(b)))
        self.state = TrainState(early_stop=EarlyStopper(config.eval.patience, config.eval.min_epochs))
        self.early_stop_noted: str | None = None  # the note the terminal has had of early stopping off
        self.metrics: MetricsLog | None = None
        self.best_watch: BestWatch | None = None  # GATE-CKPT-002's best, from the log run() opens
        # The checkpoints the run's log records writing (name → its manifest's sha256), what a prune
        # may count and delete, and the one this invocation resumed from, which no prune deletes.
        self.written: dict[str, str | None] = {}
        self.resumed_from: str | None = None
        self.interrupted_by: str | None = None  # the signal that stopped the loop (SIGINT, SIGTERM)
        self.board: Board | None = None  # train.tensorboard: opened by `stack train` with the run dir
        self.adequacy: CorpusAdequacy | None = None  # judged once the start is known (`judge_adequacy`)
        # The mixture policy: caps, floors, phases, a bandit (docs/training.md); inactive by default.
        data, bandit = config.data, config.data.bandit_settings()
        self.policy = build_policy(
            self.reader, data.curriculum(), data.exclude, active=data.configured, bandit=bandit
        )
        if self.policy.active:
            self.policy.profile_sources(tokenizer.decode, coherence_score)
        self.source_heldout = {}
        if bandit is not None and self.policy.bandit is not None:
            arms, per_arm = self.policy.bandit.arms, bandit["heldout_batches"]
            self.source_heldout = source_heldout(self.data_dir, arms, train.batch_size, seq_len, per_arm)
            sources = self.reader.manifest.sources
            for arm, batches in self.source_heldout.items():  # the bandit is paid on each arm's own text
                others = [name for name in sources if name != arm]
                check_heldout(self.reader, batches, others, split=f"heldout:{arm}")
        # The held-out split's windows, read from its shards; judged last so the record keeps them.
        check_heldout(self.reader, self.heldout)
        self.policy_archive: Path | None = None  # where a polish pivot put the replaced policy's state
        # The optimizer settings a resume changed on the restored groups (`apply_settings`).
        self.optimizer_changes: list[dict[str, Any]] = []
        self.last_batch: Any = None  # the last micro-batch a loss consumed, on the device

    @property
    def tokens_per_step(self) -> int:
        """Tokens of one optimizer step over all ranks, as planned (corpus adequacy, GATE-DATA-004);
        GATE-TRAIN-001 holds the tokens every step serves to it."""
        train = self.config.train
        return train.batch_size * train.grad_accum * self.seq_len * self.world.size

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        precision = self.config.train.precision
        if precision == "fp32":
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=getattr(torch, COMPUTE_DTYPES[precision]))

    # -- resume -------------------------------------------------------------------------

    def restore(self, checkpoint: ckpt.Checkpoint) -> None:
        """Continue exactly where `checkpoint` left off."""
        state = checkpoint.state
        self.objective.restore(state.get("objective"))  # a changed teacher or reference: refused first
        self.chat_template = self.chat_template or state.get(chat_jinja.STATE_KEY)
        if self.sharded:
            plain_model, plain_optimizer = self._plain_twins()
            ckpt.load_weights(checkpoint, plain_model)
            ckpt.load_optimizer(checkpoint, plain_optimizer)
            distributed.scatter_full(self.model, self.optimizer, plain_model, plain_optimizer)
        else:
            ckpt.load_weights(checkpoint, self.model)
            ckpt.load_optimizer(checkpoint, self.optimizer)
        self._check_held()  # the loaded model is the one the optimizer steps
        if state["scaler"] is not None:
            with ckpt.restoring(checkpoint, "scaler"):
                self.scaler.load_state_dict(state["scaler"])
        with ckpt.restoring(checkpoint, "reader"):
            self.reader.load_state_dict(state["reader"])
            self.state.batches_taken = int(state["reader"]["step"])
        self.state.step = checkpoint.step
        with ckpt.restoring(checkpoint, "monitors"):
            self.state.load_monitors(state["monitors"])
        with ckpt.restoring(checkpoint, "rng"):
            rng.restore(state["rng"])
        check_restored(checkpoint, self._restored_states())
        saved, train = state["config"]["train"], self.config.train
        if (saved.get("warmup_steps"), saved.get("lr")) != (train.warmup_steps, train.lr):
            self.state.last_warmup_lr = None  # the rate before followed another warmup: it rises afresh
        # The restored groups step with the settings of this invocation's config (a resume may change
        # train.weight_decay, beta1, beta2, eps or lora.weight_decay); run.py records what changed.
        adapters = bool(adapter_parameters(self.model))
        self.optimizer_changes = apply_settings(self.optimizer, group_settings(self.config, adapters))
        saved_mixture = DataSection.mixture_of(state["config"]["data"])
        if DataSection.mixture_of(self.config.as_dict()["data"]) != saved_mixture:
            self._pivot(checkpoint)  # recorded as a change by run.py
        elif self.policy.active:
            with ckpt.restoring(checkpoint, "policy"):
                self.policy.load_state_dict(state.get("policy"), checkpoint.step)
            bandit = self.policy.bandit
            if bandit is not None and "paid_losses" not in state["monitors"]:  # a checkpoint of before 1.26.0
                self.state.paid_losses = {a: v for a, v in bandit.last_loss.items() if v is not None}

    def _pivot(self, checkpoint: ckpt.Checkpoint) -> None:
        """The polish pivot: a resume with a new mixture keeps weights, optimizer and loss history,
        starts the new policy fresh, and archives the replaced mixture and policy state in the run
        directory (RUN_DIR/policy-archive/<checkpoint>.json), where run.py's evidence points."""
        if self.world.is_main:
            # Derived from the checkpoint alone, so a second pivot from it writes the same bytes.
            path = self.run_dir / POLICY_ARCHIVE / f"{checkpoint.path.name}.json"
            replaced = {
                "step": checkpoint.step,
                "data": checkpoint.state["config"]["data"],
                "policy": checkpoint.state.get("policy"),
            }
            atomic_write_bytes(path, (json.dumps(replaced, indent=1, sort_keys=True) + "\n").encode("utf-8"))
            self.policy_archive = path
        self.state.paid_losses = {}  # the new policy's bandit, if any, has paid nothing yet
        if not self.policy.active:
            self.reader.reweight(self.config.data.weights)

    def _restored_states(self) -> dict[str, Callable[[], Any]]:
        """What GATE-CKPT-003 compares after a resume; sharded weights are compared on their twins."""
        live: dict[str, Callable[[], Any]] = {
            "rng": rng.capture,
            "reader": self.reader.state_dict,
            "monitors": self.state.monitors_state,
            "scaler": lambda: self.scaler.state_dict() if self.scaler.is_enabled() else None,
        }
        if not self.sharded:  # an FSDP model holds shards; its full state was loaded into twins
            live["model"] = self.model.state_dict
            live["optimizer"] = lambda: ckpt.optimizer_tensors(self.optimizer)[0]
        return live

    def checkpoint_state(self) -> dict[str, Any]:
        """The JSON half of a checkpoint (GATE-CKPT-001 lists what it must hold)."""
        return {
            "epoch": self.reader.epoch,
            "scheduler": {"kind": "warmup_cosine", "step": self.state.step},
            "scaler": self.scaler.state_dict() if self.scaler.is_enabled() else None,
            "rng": rng.capture(),
            "reader": self.reader.state_dict(),
            "monitors": self.state.monitors_state(),
            **({"policy": self.policy.state_dict(self.state.step)} if self.policy.active else {}),
            "config": self.config.as_dict(),
            "spec_version": load_spec().version,
            "heldout_loss": self.state.last_heldout,
            "tokenizer": tokenizer_state(self.tokenizer),
            **({"objective": bound} if (bound := self.objective.state()) else {}),
            **({chat_jinja.STATE_KEY: self.chat_template} if self.chat_template else {}),
        }

    def start_from(self, checkpoint: ckpt.Checkpoint) -> StartWeights:
        """Begin a new run from another run's (or an imported model's) weights: fine-tuning. A LoRA
        run's adapter is merged in memory or continued (stack.train.lora_setup.start_weights);
        returns what the run started from, for the record and the command's line."""
        start = start_weights(checkpoint, self.config)
        if self.sharded:  # the start is judged on the plain twin the shards are scattered from
            plain_model, _ = self._plain_twins()
            start.load(plain_model)
            self._check_start(start.tensors(), "checkpoint", plain_model)
            distributed.scatter_model(self.model, plain_model)
        else:
            start.load(self.model)
            self._check_start(start.tensors(), "checkpoint", self.model)
            if self.lora is not None and start.mode != "continued":  # GATE-LORA-001 again, on the real base
                check_identity(identity_measured(self.model))
        self._check_held()  # the loaded model is the one the optimizer steps
        self.fine_tuning = True
        shipped = checkpoint.state.get(chat_jinja.STATE_KEY)
        chat_jinja.check_template_change(self.chat_template, shipped, self.config.data.chat_template_change)
        self.chat_template = self.chat_template or shipped  # inherited
        return start

    def judge_adequacy(self) -> CorpusAdequacy:
        """GATE-DATA-004 on the planned run, once its weights are in place: a run whose weights a
        checkpoint gave (`start_from`, or a resumed fine-tune the caller marks `fine_tuning`) is
        judged on repeats alone, since Chinchilla's ratio sizes pretraining."""
        self.adequacy = corpus_adequacy(
            planned_tokens=self.config.train.steps * self.tokens_per_step,
            unique_train_tokens=self.reader.unique_tokens,
            n_params=self.model.num_params(),
            start_from="checkpoint" if self.fine_tuning else "seed",
        )
        return self.adequacy

    def _plain_twins(self) -> tuple[GPT, torch.optim.Optimizer]:
        """An unsharded CPU model and optimizer of this run's shape (FSDP checkpoints go through them)."""
        plain = GPT(self.config.model, seed=self.config.train.seed)  # no draw from the global RNG
        return plain, build_optimizer(plain, self.config, torch.device("cpu"))

    def _check_start(self, stated: dict[str, torch.Tensor], origin: str, model: torch.nn.Module) -> None:
        """GATE-TRAIN-008's check start: `model`'s tensors are the `stated` start's (`origin`: "seed"
        for a fresh run's initialisation, "checkpoint" for --init-from's weights)."""
        check_start(start_measured(model.state_dict(), stated, origin, self.config.train.seed))

    def _check_held(self, step: int | None = None) -> None:
        """GATE-TRAIN-008: the optimizer and the loop's list of trained parameters hold the model's own."""
        check_held(held_measured(self.model, self.optimizer, self.trained_parameters), step)

    def _adamw(self, lr: float) -> AdamWSettings:
        """The AdamW step the configuration asks for at the schedule's rate `lr` (GATE-TRAIN-008)."""
        train, lora = self.config.train, self.config.lora
        return AdamWSettings(
            lr=lr,
            beta1=train.beta1,
            beta2=train.beta2,
            eps=train.eps,
            weight_decay=train.weight_decay,
            adapter_weight_decay=lora.weight_decay if lora is not None else 0.0,
            adapters=frozenset(adapter_parameters(self.model)),
        )

    def save(self) -> Path:
        """Write a checkpoint of the current step (rank 0), prune old ones, and tell the evidence."""
        path = ckpt.step_dir(self.run_dir, self.state.step)
        model, optimizer = self.model, self.optimizer
        if self.sharded:  # every rank takes part in gathering the full state; rank 0 receives it
            model, optimizer = self._plain_twins() if self.world.is_main else (None, None)
            distributed.gather_full(self.world, self.model, self.optimizer, model, optimizer)
        if self.world.is_main:
            assert model is not None and optimizer is not None
            started = time.perf_counter()
            path = ckpt.save_checkpoint(
                self.run_dir, self.state.step, model, optimizer, self.checkpoint_state()
            )
            seconds = round(time.perf_counter() - started, 3)  # the write's cost, logged with it
            ckpt.check_holds_trained(path, model, optimizer)
            if self.state.last_heldout is not None and self.state.last_heldout == self.state.best_heldout:
                self.state.best_checkpoint = path.name
            manifest = sha256_file(path / ckpt.MANIFEST)
            self.metrics_log.write(
                "event",
                step=self.state.step,
                event="checkpoint",
                path=path.name,
                seconds=seconds,
                manifest_sha256=manifest,
            )
            self.written.pop(path.name, None)
            self.written[path.name] = manifest  # the newest, in the order of writing
            protected = {name for name in (self.state.best_checkpoint, self.resumed_from) if name}
            pruned = ckpt.prune(self.run_dir, self.config.ckpt.keep_last, self.written, protected)
            self.said_aside(pruned.set_aside)
            assert self.best_watch is not None, "run() opens the log the best is read from"
            check_best_kept(self.run_dir, self.best_watch, self.config.ckpt.keep_last, self.state.step)
            self.on_event("checkpoint", self)
        distributed.barrier(self.world)  # nobody moves on before the checkpoint is complete
        return path

    def adopt(self, name: str) -> None:
        """Log the `checkpoint` event of the checkpoint this resume continues from, which its save
        never logged (ckpt.adoption_note): the log names it as written, with its manifest's sha256,
        so a prune counts it and GATE-CKPT-002 and the checker read the checkpoint the run resumed
        from in its log. No write time: none was measured."""
        manifest = sha256_file(self.run_dir / ckpt.CKPT_DIR / name / ckpt.MANIFEST)
        self.metrics_log.write(
            "event",
            step=self.state.step,
            event="checkpoint",
            path=name,
            manifest_sha256=manifest,
            adopted=ckpt.ADOPTED,
        )
        self.written[name] = manifest  # the newest: every one the log names is older

    def said_aside(self, aside: list[ckpt.SetAside]) -> None:
        """Tell of each checkpoint set aside, on stderr and as a `set_aside` event of the log, and stop
        counting it as one the run wrote, kept as its best or resumed from."""
        for entry in aside:
            print(f"{speaker()}: {entry.line()}", file=sys.stderr)
            self.metrics_log.write(
                "event",
                step=self.state.step,
                event="set_aside",
                path=entry.name,
                to=entry.to,
                reason=entry.why,
            )
            self.written.pop(entry.name, None)
            if self.state.best_checkpoint == entry.name:
                self.state.best_checkpoint = None
            if self.resumed_from == entry.name:
                self.resumed_from = None

    @property
    def metrics_log(self) -> MetricsLog:
        assert self.metrics is not None, "the loop opens the metrics log in run()"
        return self.metrics

    # -- the step -----------------------------------------------------------------------

    @property
    def schedule(self) -> dict[str, Any]:
        """The train settings this invocation's rates follow (a resume may change them): logged at its
        start for the checker, and what GATE-TRAIN-008 holds every step's rate to."""
        return {key: getattr(self.config.train, key) for key in SCHEDULE_KEYS}

    def train_step(self) -> dict[str, Any]:
        """One optimizer step, judged before it returns; returns its metrics line (already checked and
        written). `run` queues the next step before judging this one wherever it may (`queue_step`)."""
        return self.judge(self.queue_step())

    def judges_late(self, watched: bool) -> bool:
        """Whether a step is judged after its optimizer step is queued (and, in `run`, after the next
        step's work is): where the optimizer can skip a step on the device (a fused AdamW's
        found_inf), so that a step whose loss or gradient norm is not finite changes nothing, with
        no loss scaler (whose own skip reads the device), not under FSDP (whose sharded parameters
        no test here has stepped with a found_inf), and not at a probe, which compares the
        optimizer's step with its inputs as it begins (GATE-TRAIN-008)."""
        fused = bool(self.optimizer.defaults.get("fused"))
        return fused and not self.scaler.is_enabled() and not self.sharded and not watched

    def queue_step(self) -> QueuedStep:
        """One optimizer step's work, queued: its micro-batches' forwards and backwards, the clip, and
        the step's measurements. Where the step is judged late (`judges_late`), the optimizer's step
        too, skipped on the device if the loss or the gradient norm is not finite, and the step is
        returned unjudged, its measurements on their way to the host; otherwise it is judged here,
        before the optimizer's step, and returned with its line."""
        train = self.config.train
        step = self.state.step + 1 + self.in_flight
        started = time.perf_counter()
        lr = lr_at(
            step, lr=train.lr, min_lr=train.min_lr, warmup_steps=train.warmup_steps, total_steps=train.steps
        )
        for group in self.optimizer.param_groups:
            group["lr"] = lr
        applied = applied_lr(self.optimizer, lr)  # what AdamW will use, not the config
        check_step_start(self.optimizer, self.schedule, stale_gradients(self.trained_parameters), step)
        if step <= train.warmup_steps:
            previous = self.state.last_warmup_lr if step > 1 else None
            check_warmup_lr(applied, previous, step, train.warmup_steps, train.lr)
            self.state.last_warmup_lr = applied
        if not self.model.training:  # evaluation and sampling leave it in eval mode; a walk of every module
            self.model.train()
        # GATE-TRAIN-008 probes the step's arithmetic at the first step of the invocation it can
        # judge and at every evaluation: a reference gradient is taken from each micro-batch's
        # objective before the loop back-propagates it, and the optimizer's inputs as its step begins.
        watched = self.watches(step)
        # Read from the device only at a probe: the scale this step's backward runs at.
        loss_scale = self.scaler.get_scale() if watched and self.scaler.is_enabled() else 1.0
        reference = None
        if watched and not self.sharded:
            reference = GradientReference(trained(self.model), train.grad_accum, loss_scale)
        phase = self.policy.before_step(step)  # the curriculum's phase and the policy's shares
        epoch = self.reader.epoch
        hashes, planned, served_tokens = [], [], 0
        total = torch.zeros((), device=self.device)
        forwards = torch.zeros((), device=self.device)  # the cross-entropy each forward made, summed
        # With experts: the back-propagated loss and each auxiliary term, summed over micro-batches.
        aux_totals = torch.zeros(1 + len(AUX_TERMS) if self.config.model.moe else 0, device=self.device)
        aux_gradients = AuxGradients(self.device, self.config.model.moe)  # what the backward applied to each
        # With experts: each term as defined, recomputed from the router logits, summed likewise.
        defined_totals = torch.zeros(len(AUX_TERMS) if self.config.model.moe else 0, device=self.device)
        # The objective's extra scalars (none for pretraining), summed over micro-batches.
        extra_names = self.objective.metric_names
        extra_totals = torch.zeros(len(extra_names), device=self.device)
        tally = Tally(self.device, train.precision)  # what each micro-batch's loss consumed (GATE-TRAIN-007)
        moe = False
        for _ in range(train.grad_accum):
            served = self.reader.next_batch()
            self.state.batches_taken += 1
            tokens = self.objective.tokens(served)
            batch = self.objective.to_device(served, self.device)
            stated = self.objective.stated(batch)  # before the loss, which could change the batch
            drawn = Draws.now(self.device) if reference is not None else None  # what the forward draws from
            with self._autocast():
                with recording() as tape:
                    step_loss = self.objective.loss(self.forward_model, self.model, batch)
                aux = self.model.aux_losses()
                objective = step_loss.backprop + weighted_aux(aux)
                if aux:
                    defined_totals += defined_terms(module for _, module in self.model.moe_layers())
            moe = bool(aux)
            if aux:
                aux_gradients.watch(step_loss.backprop, self.model)  # hooks, read by the backward below
            self.scaler.scale(objective / train.grad_accum).backward()
            tally.add(tape, stated)
            forwards += forward_loss(tape)
            self.last_batch = batch  # what a probe of the objective's identities reads (`probe`)
            # Checked against the step's planned windows and hashed on the host while the device
            # works through the kernels just queued, before the optimizer steps on them; the hash
            # is of the global batch, so it is the same whatever the world size.
            check_served(self.reader, served, self.state.batches_taken, train.seed)
            planned.append(planned_sha256(self.reader, train.seed))  # the plan's global batch, every rank's
            rows = distributed.gather_rows(self.world, tokens)  # the global batch: every rank's rows
            hashes.append(batch_sha256(rows))
            served_tokens += rows.shape[0] * (rows.shape[1] - 1)  # each row's inputs
            total += step_loss.logged.detach()
            if aux:
                aux_totals += torch.stack([objective.detach(), *(aux[n][1].detach() for n in AUX_TERMS)])
            if extra_names:
                extra_totals += torch.stack([step_loss.metrics[n].detach().float() for n in extra_names])
            if reference is not None and drawn is not None:
                reference.add(self._objective_again(batch, drawn))  # the loop's graph freed by its backward
        self.policy.after_step()
        self.scaler.unscale_(self.optimizer)
        grad_norm = distributed.local_value(
            torch.nn.utils.clip_grad_norm_(self.trained_parameters, train.clip_norm)
        )
        # The norm the optimizer will actually see, measured again after the clip.
        grads = [p.grad for p in self.trained_parameters if p.grad is not None]
        clipped = distributed.local_value(torch.nn.utils.get_total_norm(grads))
        measured = torch.cat(
            [
                torch.stack([total / train.grad_accum, grad_norm, clipped, forwards / train.grad_accum]),
                aux_totals / train.grad_accum,
                aux_gradients.sums(),
                defined_totals / train.grad_accum,
                extra_totals / train.grad_accum,
                tally.counts.float(),
            ]
        )
        measured = distributed.mean_across(self.world, measured)
        queued = QueuedStep(
            step=step,
            started=started,
            applied=applied,
            phase=phase,
            epoch_before=epoch,
            epoch=self.reader.epoch,
            shares=dict(self.policy.shares),
            hashes=hashes,
            planned=planned,
            served_tokens=served_tokens,
            tally=tally,
            moe=moe,
            aux_count=len(aux_totals),
            defined_count=len(defined_totals),
            extra_names=tuple(extra_names),
            aux_gradients=aux_gradients,
            measured=Readback(measured),  # the step's one read
        )
        if self.judges_late(watched):
            # GATE-TRAIN-003 on the device: the fused step skips itself (weights, moments and its
            # count) where the loss or the gradient norm it was measured with is not finite.
            step_unless(self.optimizer, measured[:2].isfinite().all().logical_not())
            self.optimizer.zero_grad(set_to_none=True)
            self.in_flight += 1
            return queued
        assert not self.in_flight, "a step judged as it is queued must not pass an unjudged one"
        line, skipped, terms = self._judged_values(queued)
        probe = self._armed_probe(reference, line["grad_norm"], step) if watched and not skipped else None
        self.scaler.step(self.optimizer)
        self.scaler.update()
        if skipped:
            check_finite(line["loss"], line["grad_norm"], step, float(self.scaler.get_scale()))
        if probe is not None:
            probe.close()
            if not self.scaler.is_enabled() or self.scaler.get_scale() >= loss_scale:  # the scaler stepped
                self._judge_update(probe, lr, step)
        self.optimizer.zero_grad(set_to_none=True)
        queued.line = self._finish(queued, line, terms)
        return queued

    def watches(self, step: int) -> bool:
        """Whether GATE-TRAIN-008 probes `step`: the invocation's first step whose update it can
        judge, every evaluation's step and the last."""
        train = self.config.train
        return not self.update_judged or step % self.config.eval.every == 0 or step == train.steps

    def queues_ahead(self, queued: QueuedStep, probed: bool, signals: Signals) -> bool:
        """Whether `run` may queue the step after `queued` before judging it: both are judged late
        (the next is no probe, which is judged as it is queued), the reader can serve the next, and
        nothing after `queued` reads or keeps what it made (the invocation's first probe, an
        evaluation, a sample, a checkpoint, a state digest, a signal's save or stop)."""
        step = queued.step
        keeps = (
            not probed
            or self.evaluates_after(step)
            or step % self.config.monitor.sample_every == 0
            or step % self.config.ckpt.every == 0
            or digests_state(step, self.replayed_until, self.world.distributed)
            or signals.save_now
            or signals.stop is not None
        )
        due = step < self.config.train.steps and self.judges_late(self.watches(step + 1))
        return queued.line is None and due and not keeps and not self.exhausted()

    def judge(self, queued: QueuedStep) -> dict[str, Any]:
        """The step's metrics line, judged: at once for a step `queue_step` judged already; else its
        measurements read (waiting for no work queued after them) and held to the gates as a step
        judged before its optimizer step is (`_judged_values`)."""
        if queued.line is not None:
            return queued.line
        self.in_flight -= 1
        line, _, terms = self._judged_values(queued)
        queued.line = self._finish(queued, line, terms)
        return queued.line

    def _judged_values(self, queued: QueuedStep) -> tuple[dict[str, Any], bool, dict[str, Any]]:
        """The step's measurements read back, its line made from them, and the checks a step passes
        before anything keeps what it made: (line, whether an fp16 scaler skips it, the mixture's
        auxiliary terms)."""
        train, step = self.config.train, queued.step
        values = queued.measured.values()
        consumed = [v * self.world.size for v in values[len(values) - len(CONSUMED_COUNTS) :]]
        loss_value, grad_value, clipped_value, forward_value, *rest = (
            float(v) for v in values[: len(values) - len(CONSUMED_COUNTS)]
        )
        aux_count = queued.aux_count  # the objective and each term's mean, then the gradients they received
        aux_values, gradient_sums = rest[:aux_count], rest[aux_count : 2 * aux_count]
        defined_values = rest[2 * aux_count : 2 * aux_count + queued.defined_count]
        queued.extra_values = rest[2 * aux_count + queued.defined_count :]
        # The step's line, made before any judge reads it: the judges below read the values it
        # logs, so a line cannot say other numbers than those judged (GATE-TRAIN-001).
        consumption = queued.tally.measured(consumed)
        line: dict[str, Any] = {
            "step": step,
            "epoch": queued.epoch,
            "loss": loss_value,
            "lr": queued.applied,  # read back from the optimizer (GATE-TRAIN-008 re-derives its schedule)
            "grad_norm": grad_value,
            CLIPPED_NORM: clipped_value,  # what GATE-TRAIN-002's clip check judged, re-derived from here
            "tokens": queued.served_tokens,  # counted from the batches served (GATE-TRAIN-001, counted)
            "batch_sha256": step_sha256(queued.hashes),
            "targets": consumption["targets"],  # what the loss scored, and its hash (GATE-TRAIN-007)
            "targets_sha256": consumption["targets_sha256"],
        }
        # What the loss read comes first: a loss that scored nothing is NaN because of it.
        check_consumed(consumption, step)
        if self.objective.logs_forward_loss:
            check_logged(line["loss"], forward_value, step)
        # An fp16 step whose gradient overflowed is skipped by the scaler, which lowers the scale:
        # nothing of it reaches the weights, so it is judged after the step (GATE-TRAIN-003).
        scale = float(self.scaler.get_scale()) if self.scaler.is_enabled() else None
        skipped = overflowed(line["loss"], line["grad_norm"], scale)
        if not skipped:
            check_finite(line["loss"], line["grad_norm"], step)
        check_counted(line["tokens"], self.tokens_per_step, step)
        check_fingerprint(line["batch_sha256"], queued.planned, step)
        # aux_values is empty for a dense model, and then so are the terms.
        terms = (
            aux_terms(
                self.config.model,
                aux_values[1:],
                queued.aux_gradients.derivatives(gradient_sums),
                defined_values,
            )
            if queued.moe and not skipped
            else {}
        )
        if terms:
            check_aux_in_loss(aux_values[0], line["loss"], terms, step)
        if not skipped:
            check_clipped(line[CLIPPED_NORM], train.clip_norm, step)
        # A trained start is meant to be far below ln(vocab); a distillation loss is not that loss.
        if step == 1 and not self.fine_tuning and self.objective.first_loss_is_ln_vocab:
            check_first_loss(line["loss"], self.config.model.vocab, step)
        return line, skipped, terms

    def _finish(self, queued: QueuedStep, line: dict[str, Any], terms: dict[str, Any]) -> dict[str, Any]:
        """A judged step into the state and the log: its line written, its events, its spikes."""
        step = queued.step
        self.state.step = step
        self.state.tokens_seen += line["tokens"]
        # Over the time since the step began, or since the step before it was judged if that is
        # later: with the host a step ahead of its judges, the time between two judgements is the
        # device's time for a step.
        now = time.perf_counter()
        line["tokens_per_s"] = line["tokens"] / max(now - max(queued.started, self.last_judged), 1e-9)
        self.last_judged = now
        if digests_state(step, self.replayed_until, self.world.distributed):  # timed apart: not the step's
            line[STATE_KEY] = state_digest(self.model, self.optimizer)
        for name, term in terms.items():  # logged apart from `loss`, which stays the cross-entropy
            line[f"moe_{name}"] = term["value"]
            line[f"moe_{name}_defined"] = term["defined"]  # GATE-ARCH-001 re-derives its check from here
        line.update(zip(queued.extra_names, queued.extra_values, strict=True))
        if self.scaler.is_enabled():
            line["loss_scale"] = float(self.scaler.get_scale())
        self.metrics_log.step(line)
        if queued.phase is not None:  # a curriculum switch (GATE-DATA-009 judged it)
            self.metrics_log.write("event", step=step, event="phase", phase=queued.phase)
        if queued.shares != self.logged_shares:  # from this step on; the checker derives
            self.logged_shares = queued.shares  # GATE-DATA-008's expected shares from these
            self.metrics_log.write("event", step=step, event="shares", shares=self.logged_shares)
        if queued.epoch != queued.epoch_before:  # the reader wrapped (data.wrap=true): said, not only logged
            self.metrics_log.write("event", step=step, event="wrap", epoch=queued.epoch)
            self.on_event("wrap", self)
        if self.state.spikes.observe(line["loss"], step):
            self.metrics_log.write("event", step=step, event="loss_spike", loss=line["loss"])
        self.state.recent_train_losses = [*self.state.recent_train_losses, line["loss"]][
            -self.config.eval.every :
        ]
        return line

    def _objective_again(self, batch: Any, drawn: Draws) -> torch.Tensor:
        """GATE-TRAIN-008's reference objective of one micro-batch: its forward run again, by the same
        model (compiled or wrapped as the loop's), on the same batch, under the random state its
        first forward drew from (`drawn`), with its own graph, which the reference's backward frees.
        Nothing it runs is recorded as the step's (the consumed tensors, the experts' hooks). It runs
        under a tape of its own, discarded, as the loop's forward runs under the step's: whether a
        tape is open is part of what a compiled forward was compiled for, so without one a compiled
        model would compile and run a second graph, not the loop's."""
        with drawn.again(), self._autocast(), recording():
            again = self.objective.loss_again(self.forward_model, self.model, batch)
            return again + weighted_aux(self.model.aux_losses())

    def _armed_probe(self, reference: GradientReference | None, logged_norm: float, step: int) -> StepProbe:
        """GATE-TRAIN-008 at a probe, before the step: the optimizer holds the model's tensors; and the
        step's probe, which judges the gradient against `reference` as the optimizer's step begins."""
        self._check_held(step)
        handed = None
        if reference is not None:
            clip = self.config.train.clip_norm
            handed = functools.partial(reference.measured, self.world, logged_norm, clip)
        return StepProbe(trained(self.model), self.optimizer, handed)

    def _judge_update(self, probe: StepProbe, lr: float, step: int) -> None:
        """GATE-TRAIN-008 on a probed step the scaler did not skip: at a rate above 0, that the weights
        moved; the gradient the optimizer was handed; its update at the schedule's rate `lr`."""
        if lr > 0:
            stepped, moved = probe.moved()
            check_moved(stepped, moved, probe.unoptimized, step)
            self.update_judged = stepped > 0  # with no nonzero gradient, watch the next step
        check_gradient(probe.handed, step)
        check_update(probe.update_measured(self._adamw(lr)), step)

    # -- probes of the loss on the batch it used ----------------------------------------

    @torch.no_grad()
    def probe(self, step: int) -> None:
        """The objective's identities checked on the step's last micro-batch (`Objective.probe`):
        in eval mode, so adapter dropout draws nothing and every forward of the probe is the same
        function, and in fp32, so an independent recomputation is compared at full precision. The
        loss's gradient probe (GATE-TRAIN-007) runs in training mode, as the loss trains, and its
        comparison with the plain inference forward in both modes (stack.train.consumption.in_mode).
        With adapters, the loss once more in training mode with autograd on, what each adapter's A
        read held to the configured dropout (GATE-TRAIN-007's check dropout, stack.train.dropout_reads)."""
        was_training = self.model.training
        self.model.eval()
        try:
            self.objective.probe(self.model, self.last_batch, step)
        finally:
            self.model.train(was_training)
        if self.config.lora is not None and lora_adapters(self.model):  # GATE-TRAIN-007 check dropout
            loss_of = functools.partial(self.objective.loss, self.model, self.model, self.last_batch)
            check_dropout(measure_dropout(loss_of, self.model, self.config.lora.dropout), step)

    # -- evaluation and samples ---------------------------------------------------------

    def evaluates_after(self, step: int) -> bool:
        """Whether the loop probes and evaluates after `step` (every eval.every steps and the last):
        the replay (tools/integrity/replay.py) follows the same schedule to compare the eval lines."""
        return step % self.config.eval.every == 0 or step == self.config.train.steps

    @torch.no_grad()
    def evaluate(self) -> dict[str, Any]:
        """Held-out loss over the fixed batches; feeds early stopping and overfit detection."""
        self.model.eval()
        # Replicas split the batches and sum their shares; shards must all run every forward together.
        share = 1 if self.sharded else self.world.size
        losses = torch.zeros(len(self.heldout), device=self.device)
        forwards = torch.zeros(len(self.heldout), device=self.device)  # the loss each forward made
        reset_routed(self.model)  # the routing-balance window is this evaluation's batches
        reset_inference_routed(self.model)  # and so is the inference-capacity window
        reads = HeldoutReads(self.device)  # what each forward consumed (GATE-EVAL-001)
        with ReceivedTokens(self.model) as received:  # what the window's experts were handed
            for i in range(self.world.rank % share, len(self.heldout), share):
                batch = self.objective.to_device(self.heldout[i], self.device)
                with self._autocast(), recording() as tape:
                    loss = self.objective.heldout_loss(self.model, batch)
                if i == 0:  # the task's own definition of the loss, on one batch an evaluation
                    with self._autocast():
                        self.objective.check_heldout(self.model, batch, loss, self.state.step)
                losses[i] = loss.float()
                forwards[i] = forward_loss(tape)
                reads.add(tape, self.objective.stated(self.heldout[i]))  # the set's own i-th batch states
        counts = torch.tensor(reads.counts(), dtype=torch.float64, device=self.device)
        # One reduction for all: replicas sum their shares of the losses and of the counts.
        summed = torch.cat([losses.double(), forwards.double(), counts])
        summed = summed if self.sharded else distributed.mean_across(self.world, summed) * share
        n = len(losses)
        values, made = summed[:n].tolist(), summed[n : 2 * n].tolist()
        read = [round(v) for v in summed[2 * n :].tolist()]
        mean, stderr = mean_and_stderr(values)  # for the log; the stopper computes its own
        step = self.state.step
        check_heldout_reads(
            {
                "set_batches": len(self.heldout),
                "stated_windows": self.heldout_windows,
                **dict(zip(HELDOUT_READS, read, strict=True)),
                "precision": self.config.train.precision,
                "logits_dtypes": sorted(reads.logits_dtypes),
                **reads.measured_modes(),
            },
            step,
        )
        routed = self._judge_routing(received.tokens, step) if self.config.model.moe else None
        if self.config.model.mod:
            check_inference_capacity(inference_routed(self.model), self.config.model.mod_capacity, step)
            if split := threshold_split(self.model):  # the threshold these forwards read
                check_inference_threshold(split, self.config.model.mod_capacity, step)
        train_loss = sum(self.state.recent_train_losses) / max(len(self.state.recent_train_losses), 1)
        self.state.last_heldout = mean
        if self.state.best_heldout is None or mean < self.state.best_heldout:
            self.state.best_heldout = mean
        overfit = self.state.overfit.observe(train_loss, mean, step)
        assert self.state.early_stop is not None
        stop = False
        epoch = self.state.tokens_seen / max(self.reader.unique_tokens, 1)
        stopper = self.state.early_stop
        judging = self.config.eval.early_stop and stopper.judges(values)
        check_heldout_noise(values, judging, step)
        if self.config.eval.early_stop and stopper.off is not None and stopper.off != self.early_stop_noted:
            print(f"{speaker()}: note: {stopper.off}", file=sys.stderr)
            self.early_stop_noted = stopper.off
        if judging:
            stop = stopper.observe(values, epoch, step)
        line = {
            "step": step,
            "heldout_loss": mean,
            "heldout_stderr": stderr,
            "heldout_losses": values,  # each batch's: the checker derives the two above from them
            "batches": len(self.heldout),  # the set's; GATE-EVAL-002 holds the losses averaged to it
            "train_loss": train_loss,
            "overfitting": overfit,
            "early_stop": stop,
            "early_stop_off": stopper.off if self.config.eval.early_stop else None,
            "source_shares": self.policy.close_window(step),  # realised; GATE-DATA-008 judged them
        }
        if routed is not None:  # GATE-ARCH-002 and 012 judged these; the checker re-derives them from here
            line["routed"] = routed
        if self.source_heldout:
            line.update(self._pay_bandit(step))
        judged = stopper.judged if judging else None
        reported = (line["heldout_loss"], line["heldout_stderr"])
        made_by = made if self.objective.logs_forward_loss else None  # what each forward made
        check_aggregated(values, len(self.heldout), self.asked_batches, reported, judged, made_by, step)
        check_compared(self.state.overfit, line["train_loss"], line["heldout_loss"], step)
        self.metrics_log.write("eval", **line)
        if stop:
            self.state.stop_reason = self.state.early_stop.stop_reason or "early stop"
        self.on_event("eval", self)
        return line

    def _judge_routing(self, received: dict[str, int], step: int) -> dict[str, list[int]]:
        """GATE-ARCH-002 (a warning) on this evaluation window's assignments, then GATE-ARCH-012 on
        the latest windows, as many as its collapse_evaluations (kept in every checkpoint), each
        with the tokens every MoE layer was handed in the window (`received`, check total); returns
        the window's assignments."""
        routed = routed_counts(self.model)
        model = self.config.model
        check_expert_shares(routed, received, model.moe_top_k, step)
        keep = int(load_spec().threshold("GATE-ARCH-012", "collapse_evaluations"))
        self.state.routed_windows = [*self.state.routed_windows, routed][-keep:]
        windows = self.state.routed_windows
        check_router_collapse(windows, received, model.moe_top_k, model.moe_balance_coef, step)
        return routed

    def _pay_bandit(self, step: int) -> dict[str, Any]:
        """Pay the bandit from each arm's held-out loss; GATE-DATA-008 (check paid) holds what each
        arm's forwards read to the windows its own held-out set states, and every reward to its
        rule (contracts.rewards) on the losses measured here and those the loop measured and logged
        at the payment before (`TrainState.paid_losses`, never the bandit's own memory of them);
        the log-weights the payment left to EXP3's step of the policy's own account of them (check
        stepped), and the bandit's pulls to the windows served (check tallied). Returns the eval
        line's fields, the bandit's pulls and log-weights among them (the checker's to derive)."""
        bandit = self.policy.bandit
        assert bandit is not None
        before = {arm: self.state.paid_losses.get(arm) for arm in bandit.arms}
        losses, read = self._source_losses()
        stated = {
            name: windows_sha256(Consumed(inputs=b[:, :-1], targets=b[:, 1:]) for b in batches)
            for name, batches in self.source_heldout.items()
        }
        weights_before = dict(self.policy.paid_log_weights)  # the policy's account, not the bandit's
        rewards = self.policy.update(losses)
        self.state.paid_losses = dict(losses)
        paid = {"reward": bandit.reward, "losses": losses, "before": before, "rewards": rewards}
        paid |= {"reference": dict(bandit.reference), "windows_read": read, "windows_stated": stated}
        # check stepped: the log-weights the update left, against EXP3's step of those before it
        paid |= {"log_weights_before": weights_before, "log_weights_after": dict(bandit.log_weights)}
        paid |= {"eta": bandit.eta, **tallied_measured(bandit, self.policy.served_total)}
        check_paid(paid, step)
        state = {"bandit_pulls": dict(bandit.pulls), "bandit_log_weights": dict(bandit.log_weights)}
        return {"bandit_losses": losses, "bandit_rewards": rewards, **state}

    def _source_losses(self) -> tuple[dict[str, float], dict[str, str]]:
        """Held-out loss of each bandit arm on its own held-out batches (every rank runs them all),
        and the sha256 of the windows its forwards read (stack.model.consumed)."""
        losses, read = {}, {}
        for name, batches in self.source_heldout.items():
            total, scorings = 0.0, []
            for batch in batches:
                batch = batch.to(self.device)
                with self._autocast(), recording() as tape:
                    _, loss = self.model(batch[:, :-1], batch[:, 1:])
                total += float(loss)
                scorings += [to_host(scoring) for scoring in tape]
            losses[name] = total / len(batches)
            read[name] = windows_sha256(scorings)
        return losses, read

    def text_drawn(self, drawn: list[int]) -> str:
        """The text of one generation's drawn tokens, which the monitor scores (a padding id drawn is
        no text); GATE-TRAIN-005 (check texts) decodes the draws again on its own."""
        return self.tokenizer.text_of(drawn)

    @torch.no_grad()
    def sample(self) -> dict[str, Any]:
        """Generate from the fixed prompts, score coherence, and let GATE-TRAIN-005 judge."""
        monitor_cfg = self.config.monitor
        self.model.eval()
        seed = self.config.train.seed * 1_000_003 + self.state.step
        generator = torch.Generator(device=self.device).manual_seed(seed)
        ctx = self.config.model.ctx
        length = sample_length(monitor_cfg.tokens, ctx)  # the prompt keeps the rest of the context
        sampler = Sampler(monitor_cfg.temperature, monitor_cfg.top_k)
        # every draw replayed, from the state the round's stated seed starts (GATE-TRAIN-005)
        tally = DrawTally(sampler, monitor_seed(self.config.train.seed, self.state.step))
        generations = []
        for prompt in monitor_cfg.prompts:
            ids = self.tokenizer.encode_prompt(prompt)[-(ctx - length) :]
            idx = torch.tensor([ids], dtype=torch.long, device=self.device)
            draws, drawn = sample_watched(self.model, idx, length, sampler, generator)
            tally.add(draws, drawn, self.model, idx)
            generations.append(drawn)
        width = probe_width(self.config.model.vocab, monitor_cfg.top_k)
        spread = SpreadLogits(width, self.device, seed)  # the same draws, from spread logits
        probe_draws, probe_drawn = sample_watched(spread, spread.prompt, PROBE_TOKENS, sampler, generator)
        tally.add_probe(probe_draws, spread.prompt, probe_drawn)
        check_drawn(tally, self.state.step)  # before the scores: they are of these samples
        texts = [self.text_drawn(drawn_or_stop(drawn)[0].tolist()) for drawn in generations]
        scores = [coherence_score(text) for text in texts]
        line = {"step": self.state.step, "score": sample_score(scores), "scores": scores, "texts": texts}
        self.metrics_log.write("sample", **line)
        self.state.monitor.observe(line["score"], self.state.step)
        _, observed = self.state.monitor.history[-1]
        drawn_texts = [self.tokenizer.text_of(ids) for ids in tally.sampled]
        check_scored(texts, observed, line["score"], self.state.step, drawn_texts)
        return {"score": line["score"], "texts": texts}

    # -- repeatability ------------------------------------------------------------------

    def _replay_plan(self) -> int:
        """Steps the repeatability check replays (contracts.replay.replay_plan, the rule the checker
        holds a record's replay to): train.replay_steps, or when unset REPLAY_STEPS on CUDA in one
        process (where kernels may not repeat) and none elsewhere."""
        asked = self.config.train.replay_steps
        if asked and self.world.distributed:
            raise BadInput(
                f"train.replay_steps={asked} replays steps within one process; under --nproc leave it unset "
                "or set it to 0"
            )
        return replay_plan(asked, self.device.type, self.world.distributed)

    def rehearse(self, steps: int) -> Rehearsal:
        """Take the next `steps` steps with nothing written, then put every state back from a
        checkpoint of the start, by the resume's own path (GATE-CKPT-003 checks that restore).

        The checkpoint is written under the hidden directory a checkpoint of the start step would
        be assembled in, removed afterwards (and by the next run's sweep, if this process dies).
        An inactive mixture policy keeps books no checkpoint holds (a resume starts them afresh);
        they are put back by hand, and so is what the log last said of the policy's shares (the
        rehearsal writes no line, so the steps taken must say them again).
        """
        started = time.perf_counter()
        books, logged_shares = copy.deepcopy(self.policy.window), self.logged_shares
        log, on_event = self.metrics_log, self.on_event
        scratch = ckpt.writer_dir(self.run_dir, self.state.step)
        try:
            start = ckpt.save_checkpoint(
                scratch, self.state.step, self.model, self.optimizer, self.checkpoint_state()
            )
            self.metrics = MetricsLog(self.run_dir, resume_step=self.state.step, write=False)
            self.on_event = lambda _event, _trainer: None
            try:
                lines = [self.train_step() for _ in range(steps)]
                end = end_state(self.model, self.optimizer) if self.config.train.deterministic else {}
            finally:
                self.metrics_log.close()
                self.metrics, self.on_event = log, on_event
            self.restore(ckpt.load_checkpoint(start))
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
        if not self.policy.active:
            self.policy.window = books
        self.logged_shares = logged_shares
        return Rehearsal(lines, end, time.perf_counter() - started)

    def judge_replay(self, rehearsal: Rehearsal, taken: list[dict[str, Any]]) -> None:
        """GATE-CKPT-003 over the steps taken against their rehearsal, its price recorded first."""
        started = time.perf_counter()
        bit_for_bit = self.config.train.deterministic
        end = end_state(self.model, self.optimizer) if bit_for_bit else {}
        step_seconds = [self.tokens_per_step / line["tokens_per_s"] for line in taken]
        self.repeatability = {
            "replayed_steps": len(taken),
            "bit_for_bit": bit_for_bit,
            "seconds": round(rehearsal.seconds + time.perf_counter() - started, 4),
            "step_seconds": round(sum(step_seconds) / len(step_seconds), 4),
        }
        check_replay(rehearsal, taken, end, bit_for_bit)

    def _replayable(self) -> int:
        """Steps this invocation can replay: the plan, no more than are left to take, nor than an
        unwrapped corpus has left."""
        steps = min(self.replay_steps, self.config.train.steps - self.state.step)
        if not self.config.data.wrap:
            left = self.reader.steps_per_epoch - self.reader.state_dict()["index"]
            steps = min(steps, left // self.config.train.grad_accum)
        return max(steps, 0)

    # -- the run ------------------------------------------------------------------------

    def exhausted(self) -> bool:
        """With data.wrap=false, whether the corpus has fewer batches left than one step takes.

        Asked before a step starts, so no step is half read: the checkpoint written at
        exhaustion holds the reader exactly where the last whole step left it, and a resume
        with data.wrap=true (or more data) continues from there.
        """
        if self.config.data.wrap:
            return False
        left = self.reader.steps_per_epoch - self.reader.state_dict()["index"]
        return left < self.config.train.grad_accum

    def run(self, resumed: bool) -> str:
        """Train until the configured step, an early stop, a signal or the end of an unwrapped corpus.

        Returns the final status: completed, interrupted or exhausted; every way out of the loop
        but a gate or a crash ends with a checkpoint of the last step.
        """
        train = self.config.train
        resume_step = self.state.step if resumed else None
        mirror = self.board.line if self.board is not None else None
        self.metrics = MetricsLog(
            self.run_dir, resume_step=resume_step, write=self.world.is_main, mirror=mirror
        )
        self.best_watch = BestWatch(self.metrics.path)  # follows the log as rolled back and then grown
        signals = Signals()
        status, ended = "completed", False
        self.objective.start(self.model, self.heldout)
        # The schedule this invocation steps by (a resume may change it), for GATE-TRAIN-008's derivation.
        clip = self.config.train.clip_norm  # the clip in force, as the checker holds each step to
        self.metrics_log.write(
            "event", step=self.state.step, event="schedule", **self.schedule, clip_norm=clip
        )
        if self.world.is_main:
            self.written = ckpt.written_checkpoints(self.run_dir)  # as rolled back
            if resumed:
                self.resumed_from = ckpt.step_dir(self.run_dir, self.state.step).name
                if self.resumed_from not in self.written:  # its save stopped before logging it
                    self.adopt(self.resumed_from)
                self.metrics_log.write("event", step=self.state.step, event="resumed", path=self.resumed_from)
                self.said_aside(ckpt.set_aside_newer(self.run_dir, self.state.step))
        try:
            with signals.installed(), self.alerts.watching():
                self.switches = determinism.Switches.now()  # what the first step runs with
                steps = self._replayable()
                self.replayed_until = self.state.step + steps
                rehearsal = self.rehearse(steps) if steps else None
                taken: list[dict[str, Any]] = []
                probed = False  # the first step of every invocation is probed, then every evaluation's
                ahead: QueuedStep | None = None  # the next step, queued before this one is judged
                while ahead is not None or self.state.step < train.steps:
                    if ahead is not None:
                        queued, ahead = ahead, None
                    elif self.exhausted():
                        self.state.stop_reason = (
                            f"GATE-DATA-001: the train split is exhausted after epoch {self.reader.epoch} "
                            f"({self.reader.steps_per_epoch} batches) and data.wrap=false"
                        )
                        status = "exhausted"
                        break
                    else:
                        queued = self.queue_step()
                    if self.queues_ahead(queued, probed, signals):
                        ahead = self.queue_step()  # the GPU works on it while this one is judged
                    line = self.judge(queued)
                    if rehearsal is not None and len(taken) < len(rehearsal.lines):
                        taken.append(line)
                        if len(taken) == len(rehearsal.lines):  # before anything else reads the state
                            self.judge_replay(rehearsal, taken)
                    step = line["step"]
                    self.progress(step, line)
                    if not probed or self.evaluates_after(step):
                        self.probe(step)
                        probed = True
                    if self.evaluates_after(step):
                        self.evaluate()
                    if step % self.config.monitor.sample_every == 0 or step == train.steps:
                        self.sample()
                    if ahead is not None:  # nothing reads or keeps this step's state: the next one's is made
                        continue
                    if signals.save_now or step % self.config.ckpt.every == 0:
                        signals.save_now = False
                        self.save()
                    if signals.stop is not None:
                        self.state.stop_reason = f"{signals.stop} received"
                        self.interrupted_by = signals.stop
                        status = "interrupted"
                        break
                    if self.state.stop_reason is not None:
                        break
                self.objective.finish(self.model)
                self.state.monitor.require_ran(self.state.step, self.config.monitor.sample_every)
                if not ckpt.step_dir(self.run_dir, self.state.step).exists():
                    self.save()
            ended = True
        except RuntimeError as exc:  # under train.deterministic, PyTorch raises on a non-deterministic op
            refusal = self.alerts.refusal(exc)
            if refusal is None:
                raise
            raise refusal from None
        finally:
            self.metrics_log.close()
            distributed.leave(self.world, together=ended)
        if self.state.stop_reason is None:
            self.state.stop_reason = reached_steps(train.steps)
        return status
