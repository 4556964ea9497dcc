"""A run's configuration: six typed sections, merged from preset, file and `--set`, saved and hashed.

Resolution order: a preset (`--preset`), then a TOML file (`--config`), then each
`--set section.key=value`. The resolved configuration is written to RUN_DIR/config.toml and
its sha256 goes into the evidence, so a run can always say exactly what it ran with.
"""

from __future__ import annotations

import json
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

import tomli_w
from pydantic import Field, model_validator

from contracts.errors import BadInput
from contracts.evidence import canonical_sha256
from stack.config import Section, parse_section
from stack.data.curriculum import Phase
from stack.data.mixture import check_bounds
from stack.model.config import ModelConfig
from stack.train.presets import PRESETS
from stack.train.tune_settings import DISTILL_DEFAULTS, DPO_DEFAULTS

Precision = Literal["fp32", "bf16", "fp16"]
Device = Literal["auto", "cpu", "cuda"]


class TrainSection(Section):
    steps: int = Field(gt=0, description="optimizer steps to run")
    batch_size: int = Field(default=8, gt=0, description="sequences per micro-batch")
    seq_len: int | None = Field(
        default=None,
        gt=0,
        description="tokens of input per training window, at most model.ctx (pretraining and a run "
        "started from a model on plain text); unset: model.ctx, and left out of the saved config",
    )
    grad_accum: int = Field(default=1, gt=0, description="micro-batches per optimizer step")
    lr: float = Field(default=3e-3, gt=0, description="peak learning rate")
    min_lr: float = Field(default=3e-4, ge=0, description="learning rate at the end of the cosine")
    warmup_steps: int = Field(default=20, ge=0, description="linear warmup steps")
    weight_decay: float = Field(default=0.1, ge=0, description="decoupled weight decay on matrices")
    beta1: float = Field(default=0.9, gt=0, lt=1)
    beta2: float = Field(default=0.95, gt=0, lt=1)
    eps: float = Field(default=1e-8, gt=0)
    clip_norm: float = Field(default=1.0, ge=0, description="global gradient-norm clip (0 = off)")
    precision: Precision = "fp32"
    device: Device = "auto"
    compile: bool = Field(default=False, description="torch.compile the model")
    deterministic: bool = Field(
        default=True,
        description="deterministic kernels only (strict): an op without one is refused; off, the run is "
        "not claimed repeatable and its replay is judged within a tolerance (stack.train.determinism)",
    )
    tensorboard: bool | None = Field(
        default=None,
        description="also write TensorBoard event files into the run directory (`tensorboard --logdir "
        "RUN_DIR`); unset: off, and left out of the saved config",
    )
    replay_steps: int | None = Field(
        default=None,
        ge=0,
        description="steps replayed from the start state of each invocation and compared with the "
        "steps taken (GATE-CKPT-003); unset: 2 on CUDA in one process, else 0 (off)",
    )
    parallel: Literal["ddp", "fsdp"] = Field(
        default="ddp", description="data-parallel strategy under torchrun: replicate (ddp) or shard (fsdp)"
    )
    seed: int = Field(
        default=0,
        ge=0,
        le=2**32 - 1,
        description="seed of weights, batch order and sampling; below 2**32 so that the seeds derived "
        "from it per step and per rank still fit torch's 64-bit generators",
    )
    log_every: int = Field(default=10, gt=0, description="steps between progress lines off a terminal")
    task: str | None = Field(
        default=None,
        pattern=r"^[a-z][a-z0-9_]*$",
        description="the objective (stack.train.tasks.OBJECTIVES): unset is pretrain; sft, ...",
    )


class EvalSection(Section):
    every: int = Field(default=50, gt=0, description="steps between held-out evaluations")
    batches: int | None = Field(
        default=None,
        ge=2,  # early stopping's standard error needs two held-out losses (GATE-EVAL-002)
        description="held-out batches, at least 2 (default: the spec minimum)",
    )
    early_stop: bool = True
    patience: int = Field(default=5, gt=0, description="evaluations without improvement before stopping")
    min_epochs: float = Field(default=3.0, ge=0, description="epochs before early stopping may fire")


class CkptSection(Section):
    every: int = Field(default=100, gt=0, description="steps between checkpoints")
    keep_last: int = Field(default=2, gt=0, description="checkpoints kept besides the best")


class MonitorSection(Section):
    sample_every: int = Field(default=50, gt=0, description="steps between coherence samples")
    prompts: list[str] = Field(default_factory=lambda: ["def ", "import ", "class "], min_length=1)
    tokens: int = Field(default=48, gt=0, description="tokens generated per prompt")
    temperature: float = Field(default=0.8, gt=0)
    top_k: int | None = Field(default=40, gt=0)


class PhaseSection(Section):
    """One `[[data.phases]]` entry: the mixture that serves every step after `after_step`."""

    after_step: int = Field(gt=0, description="the phase serves steps after_step+1, after_step+2, ...")
    weights: dict[str, float] = Field(default_factory=dict, description="per-source weights in this phase")
    caps: dict[str, float] = Field(default_factory=dict, description="per-source maximum share")
    floors: dict[str, float] = Field(default_factory=dict, description="per-source minimum share")


class BanditSection(Section):
    """`[data.bandit]`: EXP3 over the sources (data.policy = "bandit"); see docs/training.md."""

    reward: Literal["improvement", "excess"] = Field(
        default="improvement",
        description="relative drop of a source's held-out loss over a window, or its excess over "
        "`reference`; never the raw loss, which rewards whatever is easiest to predict",
    )
    reference: dict[str, float] = Field(
        default_factory=dict, description="per-source reference loss in nats per token (reward = excess)"
    )
    warmup_steps: int = Field(default=0, ge=0, description="steps of uniform sampling before exploiting")
    gamma: float = Field(default=0.1, gt=0, le=1, description="share of uniform exploration in EXP3")
    eta: float = Field(default=1.0, gt=0, description="step size of the exponential weights")
    heldout_batches: int = Field(default=1, gt=0, description="held-out batches per source for the reward")


class DataSection(Section):
    """`[data]`: the mixture of sources. Keys left unset are absent from the saved config, so a run
    without caps, floors, phases or a bandit neither saves nor hashes them."""

    wrap: bool = Field(default=True, description="start a new epoch when the corpus is exhausted")
    weights: dict[str, float] = Field(default_factory=dict, description="per-source sampling weights")
    exclude: list[str] = Field(default_factory=list, description="sources never sampled")
    caps: dict[str, float] | None = Field(default=None, description="per-source maximum share")
    floors: dict[str, float] | None = Field(default=None, description="per-source minimum share")
    phases: list[PhaseSection] | None = Field(default=None, description="a curriculum of later mixtures")
    policy: Literal["static", "bandit"] | None = Field(default=None, description="static (default) or bandit")
    bandit: BanditSection | None = Field(default=None, description="the bandit's settings")
    chat_template_change: str | None = Field(
        default=None,
        min_length=1,
        description="why the chat template the data was rendered with may replace the one the model "
        "ships (kept in the run's config); unset, such a run is refused at set-up",
    )

    @model_validator(mode="after")
    def _consistent(self) -> DataSection:
        """Caps, floors, exclusions and phases are checked together: one wrong share is one line."""
        for where, (caps, floors) in self.mixtures().items():
            check_bounds(where, caps, floors, self.exclude)
        after = [phase.after_step for phase in self.phases or []]
        if after != sorted(set(after)):
            raise ValueError(f"phases must have strictly increasing after_step, not {after}")
        if self.bandit is not None and self.policy != "bandit":
            raise ValueError('[data.bandit] is set but data.policy is not "bandit"')
        return self

    def mixtures(self) -> dict[str, tuple[dict[str, float], dict[str, float]]]:
        """(caps, floors) of the base mixture and of each phase, by where they were written."""
        found = {"data": (self.caps or {}, self.floors or {})}
        for i, phase in enumerate(self.phases or []):
            found[f"data.phases[{i}]"] = (phase.caps, phase.floors)
        return found

    @property
    def configured(self) -> bool:
        """Whether a mixture policy drives the reader (anything beyond weights and exclude)."""
        return any(v is not None for v in (self.caps, self.floors, self.phases, self.policy, self.bandit))

    @staticmethod
    def mixture_of(data: dict[str, Any]) -> dict[str, Any]:
        """A saved `[data]` table without `wrap` and `chat_template_change`: what a resume compares to
        find a new mixture."""
        return {key: value for key, value in data.items() if key not in ("wrap", "chat_template_change")}

    def bandit_settings(self) -> dict[str, Any] | None:
        """`[data.bandit]` with its defaults when data.policy = "bandit", else None."""
        if self.policy != "bandit":
            return None
        return (self.bandit or BanditSection()).model_dump()

    def curriculum(self) -> list[Phase]:
        """The base mixture (phase 0, from the first step) followed by the configured phases."""
        base = Phase(0, self.weights, self.caps or {}, self.floors or {})
        return [base, *(Phase(p.after_step, p.weights, p.caps, p.floors) for p in self.phases or [])]


class LoraSection(Section):
    """`[lora]`: low-rank adapters on chosen projections, base frozen (stack/model/lora.py). Absent
    unless a lora key is set, so it adds nothing to the saved config, or its hash, of a run without it."""

    r: int = Field(default=8, ge=1, description="rank of each adapter")
    alpha: float = Field(default=16.0, gt=0, description="scale numerator: Δ = (alpha / r)·B·A")
    dropout: float = Field(default=0.0, ge=0, lt=1, description="dropout on the adapter's input")
    targets: str = Field(
        default="q,v",
        min_length=1,
        description="projections by trace site (q, attn_out) or Hugging Face name (q_proj, o_proj), "
        "comma-separated globs",
    )
    rslora: bool = Field(default=False, description="scale by alpha / sqrt(r) (rsLoRA) instead of alpha / r")
    weight_decay: float = Field(
        default=0.0,
        ge=0,
        description="decoupled weight decay on the adapters' A and B (0, as transformers' Trainer defaults)",
    )
    continue_adapter: bool = Field(
        default=False,
        description="--init-from a LoRA run: train its adapter on (same r, alpha, rslora, targets) "
        "rather than merge it into its base and start fresh adapters",
    )


class DistillSection(Section):
    """`[distill]`: the frozen teacher of `train.task = "distill"` and the loss's T and α
    (stack/train/distill_objective.py). Absent unless a distill key is set, so it adds nothing to
    the saved config, or its hash, of any other run. The defaults are stack.train.tune_settings'."""

    teacher: str = Field(min_length=1, description="the teacher: a run directory or checkpoint")
    temperature: float = Field(
        default=DISTILL_DEFAULTS.temperature, gt=0, description="T of the soft term α·T²·KL(p_T ‖ q_T)"
    )
    alpha: float = Field(
        default=DISTILL_DEFAULTS.alpha, ge=0, le=1, description="the soft term's weight; 1 − α weighs the NLL"
    )
    truncate_vocab: int | None = Field(
        default=None, ge=1, description="distil over ids below N only: the common part of padded vocabularies"
    )
    seq_len: int | None = Field(default=None, ge=1, description="tokens per sequence (unset: the ctx)")


class DpoSection(Section):
    """`[dpo]`: the frozen reference of `train.task = "dpo"` and the loss's β and ε
    (stack/train/dpo_objective.py). Absent unless a dpo key is set, so it adds nothing to the
    saved config, or its hash, of any other run. The defaults are stack.train.tune_settings'."""

    reference: str = Field(min_length=1, description="the reference: a run directory or checkpoint")
    beta: float = Field(default=DPO_DEFAULTS.beta, gt=0, description="β, the scale of the implicit reward")
    label_noise: float = Field(
        default=DPO_DEFAULTS.label_noise,
        ge=0,
        lt=0.5,
        description="ε of conservative DPO: the probability that a pair's preference is flipped, so the "
        "loss is −(1 − ε)·log σ(h) − ε·log σ(−h)",
    )


# Keys renamed for what they compute: the old name is refused naming the new one, never ignored.
RENAMED = {
    ("dpo", "label_smoothing"): (
        "dpo.label_noise (the same ε of conservative DPO, named for what it computes: TRL's "
        "label_smoothing is this formula only for loss_type='sigmoid')"
    ),
}

# Optional sections: absent from a configuration (and its hash) unless one of their keys is set.
OPTIONAL: dict[str, type[Section]] = {"lora": LoraSection, "distill": DistillSection, "dpo": DpoSection}
# Optional sections read by one objective only (train.task), and the command that runs it: such a
# section under another task is refused naming that command, not the key the command fills in
# (dpo.reference: Field required), which the user never heard of.
TASK_SECTIONS = {
    "distill": "stack distill TEACHER --data DATA_DIR --out RUN_DIR",
    "dpo": "stack dpo RUN_DIR|CKPT --data PAIRS --out RUN_DIR",
}

SECTIONS: dict[str, type[Section]] = {
    "train": TrainSection,
    "eval": EvalSection,
    "ckpt": CkptSection,
    "monitor": MonitorSection,
    "data": DataSection,
}


class RunConfig(Section):
    model: ModelConfig
    train: TrainSection
    eval: EvalSection = EvalSection()
    ckpt: CkptSection = CkptSection()
    monitor: MonitorSection = MonitorSection()
    data: DataSection = DataSection()
    lora: LoraSection | None = None
    distill: DistillSection | None = None
    dpo: DpoSection | None = None

    def as_dict(self) -> dict[str, Any]:
        """Plain data, None values dropped (TOML has no null)."""
        return _drop_none(self.model_dump(mode="json"))

    @property
    def sha256(self) -> str:
        return canonical_sha256(self.as_dict())


def _drop_none(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _drop_none(v) for k, v in value.items() if v is not None}
    return value


def _merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    merged = {k: dict(v) if isinstance(v, dict) else v for k, v in base.items()}
    for section, values in update.items():
        if not isinstance(values, dict):
            raise BadInput(
                f"config key {section!r} must be a [section]; sections: model, {', '.join(SECTIONS)}"
            )
        merged.setdefault(section, {}).update(values)
    return merged


def _parse_value(key: str, text: str) -> Any:
    """A `--set` value as TOML (numbers, booleans, lists, quoted strings); bare words stay strings.

    A value that opens a list or a table (`[`, `{`) but is not TOML is refused rather than kept as
    a string: `[hello, world]` is a list to whoever typed it, and the string in its place was refused
    later as "Input should be a valid list", which hid that its items want quotes.
    """
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError:
        shape = {"[": ("list", "items"), "{": ("table", "string values")}.get(text[:1])
        if shape is None:
            return text
        raise BadInput(
            f"--set {key}={text} is not a TOML {shape[0]}: quote its {shape[1]}, e.g. "
            f"--set '{key}={_quoted(text)}'"
        ) from None


def _quoted(text: str) -> str:
    """`text` with each bare word that is not a TOML value quoted: `[a, 1]` -> `["a", 1]`,
    `{a=x}` -> `{a="x"}` (a table's keys stay bare, as TOML allows)."""

    def quote(found: re.Match[str]) -> str:
        word = found[2].strip()
        if not word or found[3] == "=":
            return found[0]
        try:
            tomllib.loads(f"v = {word}")
        except tomllib.TOMLDecodeError:
            return f"{found[1]}{json.dumps(word)}"
        return found[0]

    return re.sub(r"([\[{,=]\s*)([^\[\]{},=]+?)(?=\s*([\]},=]))", quote, text)


def parse_sets(assignments: list[str]) -> dict[str, Any]:
    """`["train.steps=100", ...]` → nested dict; malformed ones are BadInput."""
    out: dict[str, Any] = {}
    for item in assignments:
        key, sep, value = item.partition("=")
        section, dot, name = key.strip().partition(".")
        if not sep or not dot or not name:
            raise BadInput(f"--set {item!r} is not section.key=value (e.g. --set train.steps=200)")
        out.setdefault(section, {})[name] = _parse_value(key.strip(), value.strip())
    return out


def read_toml(path: Path) -> dict[str, Any]:
    """A TOML file as a dict; missing or malformed files are BadInput."""
    try:
        return tomllib.loads(Path(path).read_text(encoding="utf-8-sig"))  # as an editor may save it
    except FileNotFoundError:
        raise BadInput(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"config file {path} is not valid TOML: {exc}") from None


def resolve(
    preset: str | None,
    config_file: Path | None,
    sets: list[str],
    vocab: int | None = None,
    base: dict[str, Any] | None = None,
) -> RunConfig:
    """Merge base (a resumed run's saved config) or preset, file and overrides into one RunConfig.

    `vocab` comes from the tokenizer. The rule is that every id the tokenizer makes has a row in
    the embedding: model.vocab defaults to the tokenizer's vocab and may exceed it (an embedding
    padded past its tokenizer, as imported models have: Qwen2's 151936 rows over 151646 ids), but
    a model.vocab below it is refused.
    """
    data: dict[str, Any] = dict(base or {})
    if preset is not None:
        if preset not in PRESETS:
            raise BadInput(f"unknown preset {preset!r}; presets: {', '.join(PRESETS)}")
        data = _merge(data, PRESETS[preset])
    if config_file is not None:
        data = _merge(data, read_toml(config_file))
    data = _merge(data, parse_sets(sets))
    unknown = sorted(set(data) - {"model", *OPTIONAL, *SECTIONS})
    if unknown:
        raise BadInput(
            f"unknown config section(s) {', '.join(unknown)}; sections: model, {', '.join(SECTIONS)}, "
            f"{', '.join(OPTIONAL)}"
        )
    _check_task_sections(data)
    for (section, key), now in RENAMED.items():
        if key in data.get(section, {}):
            raise BadInput(f"config key {section}.{key} is now {now}; rename it")
    model = dict(data.get("model", {}))
    if vocab is not None:
        given = model.setdefault("vocab", vocab)
        if isinstance(given, int) and given < vocab:  # other types are refused by ModelConfig below
            raise BadInput(
                f"model.vocab {given} is smaller than the tokenizer's vocab {vocab}: ids {given} and up "
                "would have no embedding row; drop the key"
            )
    if "train" not in data:
        raise BadInput("no [train] section: pass --preset, --config FILE or --set train.steps=N")
    sections = {name: parse_section(cls, name, data.get(name, {})) for name, cls in SECTIONS.items()}
    optional = {name: parse_section(cls, name, data[name]) for name, cls in OPTIONAL.items() if name in data}
    config = RunConfig(model=parse_section(ModelConfig, "model", model), **sections, **optional)
    _check_seq_len(config)
    return config


def training_window(config: RunConfig) -> int:
    """Tokens of input in each window the reader serves a pretraining objective: `train.seq_len`,
    else the model's context. Shorter than the context, a model made for long ones (an imported
    Llama 3.2's 131,072) trains on windows a corpus and a device hold, and keeps its context.
    The other tasks' windows are their data's (sft, dpo) or `distill.seq_len`: they get the
    context, their bound (`_check_seq_len` refuses train.seq_len there)."""
    return config.train.seq_len or config.model.ctx


def _check_seq_len(config: RunConfig) -> None:
    """Refuse a train.seq_len the run would not read, or one longer than the model's context."""
    seq_len, task, ctx = config.train.seq_len, config.train.task, config.model.ctx
    if seq_len is None:
        return
    if task is not None:
        reads = "distill.seq_len (--seq-len)" if task == "distill" else "the data's pack length (--pack-len)"
        raise BadInput(
            f"train.seq_len is the window of pretraining's objective; train.task={task} reads windows of "
            f"{reads}: drop train.seq_len"
        )
    if seq_len > ctx:
        raise BadInput(f"train.seq_len {seq_len} is longer than model.ctx {ctx}: give at most {ctx}")


def _check_task_sections(data: dict[str, Any]) -> None:
    """Refuse a section of another objective's (TASK_SECTIONS) than the run's train.task, naming the
    command it belongs to."""
    train = data.get("train")
    task = train.get("task") if isinstance(train, dict) else None
    for section, command in TASK_SECTIONS.items():
        if section in data and task != section:
            keys = ", ".join(f"{section}.{key}" for key in data[section]) or f"[{section}]"
            raise BadInput(
                f"{keys}: {section}.* settings are for train.task={section}, which `{command}` runs "
                f"(this run's train.task is {task or 'pretrain'}); use `stack {section}`, or drop them"
            )


def changed_keys(before: dict[str, Any], after: dict[str, Any]) -> list[str]:
    """Dotted keys whose values differ between two resolved configurations."""
    keys = []
    for section in sorted(set(before) | set(after)):
        old, new = before.get(section, {}), after.get(section, {})
        keys += [f"{section}.{k}" for k in sorted(set(old) | set(new)) if old.get(k) != new.get(k)]
    return keys


def save_config(config: RunConfig, path: Path) -> None:
    """Write the resolved configuration as TOML."""
    Path(path).write_text(tomli_w.dumps(config.as_dict()), encoding="utf-8")
