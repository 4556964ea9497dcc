"""Every option, alone, in pairs and all together, on every command: the matrix of GATE-ARCH-013.

spec/options_matrix.yaml lists the architecture options (each as the model settings that turn it
on), the attention paths a model is also trained on, the commands that read or write a model, the
refusals the matrix expects, and the model every cell runs (the smoke preset, two blocks). The
models are the dense one, each option alone, every pair and all options together
(`contracts.judges.arch.combinations`), then the dense model on each other attention path (a
row named for the path, trained where the path runs: its `train_env`, in a process of its own;
every other cell of that row runs here without those variables, where the path may not run).
Each cell runs `stack` in this process, as a user would on the command line, on that model's run:

    train            a fresh run of TRAIN_STEPS steps on DATA_DIR, filed into the model's ledger;
                     every other cell reads it
    train-bf16       the same fresh run under bf16 autocast (the precision axis)
    resume           one step more, filed as the run's next leg
    sample, sample-greedy (--temperature 0), eval, eval-text (--text), inspect
    trace            anomaly mode on PROMPT        trace-bisect   the same weights under naive attention
    trace-patch      a patching sweep of each block's output, CLEAN against a prompt as long
    trace-against    bisection against the dense model's run (other options have other sites)
    lens             the logit lens on PROMPT       lens-train     a tuned lens fitted for LENS_STEPS
    laser, quantize  every matrix ('*'), as new run-like outputs; laser-eval and es-eval score those
    init-from-options  a fine-tune asking for every option and changing their training settings
                     (INIT_KNOBS): a model without an option refuses, one with them all honours them
    lora-train       adapters on every projection ('*'), fine-tuned; lora-merge folds them in and
                     lora-merge-onnx exports the merge; lora-export writes them for peft and
                     lora-import reads that back onto the model
    sft, dpo         fine-tuning on chats, preference tuning on pairs (both prepared here from
                     small generated files with DATA_DIR's tokenizer)
    distill-student  the model as the student of the dense model's run
    distill-teacher  the model as the teacher of a fresh dense student
    es               evolution strategies, one step; es-workers the same with two workers
    synth            synthetic chats sampled from the model
    evalmatrix       the four rows of held-out items, the LoRA run as the adapter
    memorization     the LoRA run's verbatim continuations of training text beside the model's
    export-hf, import, export-onnx

A cell's outcome comes from the exit code alone: 0 ok, 2 refused (one line, by construction of
stack.cli.main), 3 gate, 1 or a traceback or an exception out of main crashed; except that a
command the matrix checks against another path (COMMAND_CHECKS: two ES workers against one, the
training settings a fine-tune asked for) and that exits 0 with another result `differs`, a silent
wrong result; and that a command which finds (FINDS: a bisection against the dense model's run)
is ok when it finds exactly where the two models' weights differ, its exit 3 then its result. A
cell is missing when what it needs did not complete (its model's train, the dense model's run,
the prepared data) and skipped when the command whose output it reads (`after`) refused; the
judge decides what each outcome means against the declared refusals. The matrix
lives here and not in stack/model because it drives the command line, which stands above the model.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, ValidationError, model_validator

from contracts.errors import BadInput, Interrupted, interrupted_by
from contracts.gates import Outcome, gate_ensure, measure
from contracts.judges.arch import cell_verdicts, combinations
from contracts.reading import load_yaml
from contracts.spec import default_spec_dir
from stack.model.config import ModelConfig

MATRIX_FILE = "options_matrix.yaml"
TRAIN_STEPS = 2  # a fresh run; the resume adds one more
TUNE_STEPS = 2  # every fine-tuning, preference and distillation run
LENS_STEPS = 2
PROMPT = "gate model"
SAMPLE_TOKENS = 4
EVAL_BYTES = 2000  # whole held-out documents up to about this many bytes
# Patching needs a corrupted prompt as long as the clean one in tokens: the first pair whose
# lengths agree under the data's tokenizer (with bytes, the first).
PATCH_PROMPTS = (("gate model", "gate token"), ("the gate", "the spec"), ("a b c", "a d c"))
PATCH_TARGET = "e"
# What init-from-options asks over the model's own settings: every option's (a model without one
# is refused, naming it) and new values of the settings a started model takes, which a model with
# every option must then hold (`_honoured`); each, with the model key that must be on for the
# setting to apply (a matrix without depth routing or experts asks neither of theirs).
INIT_KNOBS = {"mod_capacity": 0.25, "moe_z_coef": 0.002, "attention": "sdpa"}
KNOB_NEEDS = {"mod_capacity": "mod_every", "moe_z_coef": "moe_experts"}
SYNTH = ("--samples", "2", "--max-instruction-tokens", "8", "--max-response-tokens", "8")
TRACEBACK = "Traceback (most recent call last)"
# The command line a cell runs through: `stack.cli.main`, handed in by the command that runs the
# matrix, which stands above it.
Command = Callable[[list[str]], int]
FIRST = "train"
DENSE = "dense"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class OptionSpec(_Strict):
    """One advertised option: its name and the model settings that turn it on."""

    name: str
    model: dict[str, bool | int | float | str]


class Refusal(_Strict):
    """A refusal the matrix expects: of a model with `option` (or one that `lacks` it), in one line
    holding `says`."""

    option: str | None = None
    lacks: str | None = None
    reason: str
    says: str

    @model_validator(mode="after")
    def _one_condition(self) -> Refusal:
        if (self.option is None) == (self.lacks is None):
            raise ValueError("a refusal names exactly one of option (the model has it) or lacks")
        return self

    @property
    def named(self) -> str:
        return str(self.option or self.lacks)


class CommandSpec(_Strict):
    """One command, the command whose output it reads, and the refusals it is expected to make."""

    name: str
    after: str | None = None
    refuses: list[Refusal] = []


class ModelSpec(_Strict):
    """The model every cell runs: a preset, the model settings over it and the training settings
    of the run that makes it (the other commands keep their own)."""

    preset: str
    settings: dict[str, bool | int | float | str]
    train: dict[str, bool | int | float | str] = {}


class PathSpec(_Strict):
    """The dense model on another attention path: trained under `train_env` in a process of its own
    (where the path runs), every other command run here without those variables."""

    name: str
    model: dict[str, bool | int | float | str]
    train_env: dict[str, str] = {}


class Tolerances(_Strict):
    """How far a checked command's result may be from the one it is checked against."""

    fitness_rtol: float  # es-workers' fitness against es's, relative (other thread counts sum otherwise)


class FastSpec(_Strict):
    """One model's commands in the `make test` subset (all of them but `leave_out`, or a list)."""

    combination: str
    commands: list[str] | Literal["all"]
    leave_out: list[str] = []


class Matrix(_Strict):
    """Options × commands, in the order they run, and the subset `make test` runs."""

    model: ModelSpec
    options: list[OptionSpec]
    paths: list[PathSpec] = []
    commands: list[CommandSpec]
    tolerances: Tolerances = Tolerances(fitness_rtol=1e-5)
    fast: list[FastSpec] = []

    def combinations(self) -> list[Combination]:
        """The dense model, each option alone, every pair, all together (dense first)."""
        by_name = {o.name: o for o in self.options}
        found = []
        for name, held in combinations([o.name for o in self.options]):
            settings: dict[str, Any] = {}
            for option in held:
                settings.update(by_name[option].model)
            found.append(Combination(name, settings, held))
        return found

    def rows(self) -> list[Combination]:
        """Every model of the matrix: the combinations, then the dense model on each other path."""
        paths = [Combination(p.name, dict(p.model), (p.name,), dict(p.train_env)) for p in self.paths]
        return [*self.combinations(), *paths]

    def every_option(self) -> dict[str, Any]:
        """The settings of all options together."""
        return next(c.model for c in self.combinations() if len(c.held) == len(self.options))

    def subset(self) -> dict[str, set[str]]:
        """The `fast` subset as combination → the commands it runs."""
        every = {c.name for c in self.commands}
        return {
            f.combination: (every if f.commands == "all" else set(f.commands)) - set(f.leave_out)
            for f in self.fast
        }


@dataclass(frozen=True)
class Combination:
    """One model of the matrix: its name (its options joined by '+', dense, or an attention path),
    their settings, what it holds (options, or the path) and where its train runs (`PathSpec`)."""

    name: str
    model: dict[str, Any]
    held: tuple[str, ...] = ()
    train_env: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Cell:
    """What one command did with one model."""

    outcome: str  # ok | refused | gate | crashed | skipped | missing
    message: str  # the last line the command printed, or why the cell was not run
    seconds: float = 0.0


def load_matrix(spec_dir: Path | None = None) -> Matrix:
    """The matrix of the spec (spec/options_matrix.yaml), validated."""
    path = (spec_dir or default_spec_dir()) / MATRIX_FILE
    try:
        matrix = Matrix.model_validate(load_yaml(path.read_text(encoding="utf-8")))
    except FileNotFoundError:
        raise BadInput(f"spec file missing: {path}") from None
    except ValidationError as exc:
        problem = exc.errors()[0]
        where = ".".join(str(p) for p in problem["loc"])
        raise BadInput(f"{path}: {where}: {problem['msg']}") from None
    _check_names(matrix, path)
    return matrix


def _check_names(matrix: Matrix, path: Path) -> None:
    """Every refusal names an option or a path, every `after` an earlier command, every subset a model."""
    options = {o.name for o in matrix.options} | {p.name for p in matrix.paths}
    earlier: set[str] = set()
    for command in matrix.commands:
        if command.after is not None and command.after not in earlier:
            raise BadInput(
                f"{path}: {command.name} runs after {command.after!r}, which is not an earlier command"
            )
        for refusal in command.refuses:
            if refusal.named not in options:
                raise BadInput(
                    f"{path}: {command.name} refuses {refusal.named!r}, which is not an option or a path"
                )
        earlier.add(command.name)
    models = {c.name for c in matrix.rows()}
    for subset in matrix.fast:
        named = [*(subset.commands if subset.commands != "all" else []), *subset.leave_out]
        unknown = [c for c in named if c not in earlier]
        if subset.combination not in models or unknown:
            raise BadInput(f"{path}: fast names {subset.combination!r} {unknown or ''}, not in the matrix")


# -- how each command is run ---------------------------------------------------------------------


@dataclass(frozen=True)
class Place:
    """Where one model's cells read and write, and what they share with the other models."""

    matrix: Matrix
    combination: Combination
    data: Path
    work: Path  # this model's own directory
    shared: Path  # the prepared chats and pairs; the dense model's directory is its sibling

    @property
    def run(self) -> Path:
        return self.work / "run"

    @property
    def dense_run(self) -> Path:
        return self.shared.parent / DENSE / "run"

    @property
    def sft_data(self) -> Path:
        return self.shared / "sft"

    @property
    def prefs_data(self) -> Path:
        return self.shared / "prefs"

    @property
    def ledger(self) -> Path:
        """Where this model's train and resume file their records (one leg each)."""
        return self.work / "ledger"

    def texts(self, name: str) -> str:
        """A file or folder of the prepared texts (`prepare_texts`)."""
        return str(self.shared / "texts" / name)

    def out(self, command: str) -> str:
        return str(self.work / command)


def _sets(section: str, values: dict[str, Any]) -> list[str]:
    """`--set section.key=value` arguments; json's literals are TOML's for these types."""
    return [arg for key, value in values.items() for arg in ("--set", f"{section}.{key}={json.dumps(value)}")]


def _model_sets(at: Place) -> list[str]:
    return _sets("model", {**at.matrix.model.settings, **at.combination.model})


def _loop_sets(steps: int) -> list[str]:
    """A run of `steps` steps on the CPU, evaluated, sampled and saved at its last step."""
    every = {"every": steps}
    return (
        _sets("train", {"steps": steps, "device": "cpu"})
        + _sets("eval", every)
        + _sets("ckpt", every)
        + _sets("monitor", {"sample_every": steps})
    )


def _train(at: Place, out: Path | None = None, *extra: str) -> list[str]:
    """A fresh run of the model: the run every cell reads (filed into the model's ledger), or,
    given `out` and `extra` settings, another one (train-bf16)."""
    argv = ["train", "--data", str(at.data), "--out", str(out or at.run), "--preset", at.matrix.model.preset]
    filed = ["--evidence-dir", str(at.ledger)] if out is None else []
    settings = _loop_sets(TRAIN_STEPS) + _sets("train", at.matrix.model.train) + _model_sets(at)
    return [*argv, *settings, *extra, *filed]


def _resume(at: Place) -> list[str]:
    """One step more, filed into the model's ledger as the run's second leg."""
    argv = ["train", "--resume", str(at.run), *_sets("train", {"steps": TRAIN_STEPS + 1})]
    return [*argv, "--evidence-dir", str(at.ledger)]


def _init_from_options(at: Place) -> list[str]:
    """A fine-tune asking for every option's settings and new values of a started model's training
    settings (INIT_KNOBS)."""
    argv = ["train", "--init-from", str(at.run), "--data", str(at.data), "--out", at.out("init-from-options")]
    return argv + _loop_sets(TUNE_STEPS) + _sets("model", {**at.matrix.every_option(), **_knobs(at)})


def _knobs(at: Place) -> dict[str, Any]:
    """The INIT_KNOBS that apply to the model with every option of this matrix."""
    every = at.matrix.every_option()
    return {
        key: value for key, value in INIT_KNOBS.items() if key not in KNOB_NEEDS or every.get(KNOB_NEEDS[key])
    }


def _patch(at: Place) -> list[str]:
    from stack.data.tokenizer import load_tokenizer

    tokenizer = load_tokenizer(at.data)
    encode = tokenizer.encode_prompt
    clean, corrupted = next(
        ((a, b) for a, b in PATCH_PROMPTS if len(encode(a)) == len(encode(b))),
        PATCH_PROMPTS[0],
    )
    argv = ["trace", str(at.run), "--prompt", clean, "--patch", corrupted, "--target", PATCH_TARGET]
    return [*argv, "--patch-sweep", "output", "--out", at.out("trace-patch")]


def _lens_train(at: Place) -> list[str]:
    argv = ["lens", str(at.run), "--train", "--data", str(at.data), "--save", at.out("lens.safetensors")]
    sizes = ["--steps", str(LENS_STEPS), "--batch-size", "2", "--seq-len", "32", "--heldout-batches", "2"]
    return [*argv, *sizes, "--out", at.out("lens-train")]


def _lora_train(at: Place) -> list[str]:
    argv = ["train", "--init-from", str(at.run), "--data", str(at.data), "--out", at.out("lora-train")]
    return argv + _loop_sets(TUNE_STEPS) + _sets("lora", {"targets": "*", "r": 2})


def _sft(at: Place) -> list[str]:
    argv = ["sft", "--init-from", str(at.run), "--data", str(at.sft_data), "--out", at.out("sft")]
    return argv + _loop_sets(TUNE_STEPS) + _sets("train", {"batch_size": 1})


def _tune(command: str, *argv: str) -> list[str]:
    """dpo and distill share their loop options."""
    return [command, *argv, "--steps", str(TUNE_STEPS), "--batch-size", "2", "--device", "cpu"]


def _distill_teacher(at: Place) -> list[str]:
    student = ["--preset", at.matrix.model.preset, *_sets("model", dict(at.matrix.model.settings))]
    return _tune("distill", str(at.run), "--data", str(at.data), "--out", at.out("distill-teacher"), *student)


def _distill_student(at: Place) -> list[str]:
    teacher = ["--data", str(at.data), "--out", at.out("distill-student"), "--student", str(at.run)]
    return _tune("distill", str(at.dense_run), *teacher)


def _es(at: Place, command: str = "es", workers: int = 1) -> list[str]:
    argv = ["es", str(at.run), "--data", str(at.data), "--out", at.out(command)]
    return [*argv, "--steps", "1", "--population", "2", "--workers", str(workers)]


def _es_workers(at: Place) -> list[str]:
    """es again with two workers (at most this machine's cores), to be compared with es (`_same_fitness`)."""
    return _es(at, "es-workers", min(2, os.cpu_count() or 1))


def _evalmatrix(at: Place) -> list[str]:
    items = ["--items", at.texts("items.jsonl"), "--train", at.texts("train.jsonl")]
    rows = ["--adapter", at.out("lora-train"), "--docs", at.texts("docs")]
    return ["evalmatrix", str(at.run), *items, *rows, "--device", "cpu"]


def _memorization(at: Place) -> list[str]:
    argv = ["memorization", at.out("lora-train"), "--base", str(at.run), "--data", str(at.data)]
    return [*argv, "--n", "4", "--batch-size", "2", "--prefix", "16"]


def _trace(at: Place, command: str, *options: str) -> list[str]:
    return ["trace", str(at.run), "--prompt", PROMPT, *options, "--out", at.out(command)]


def _eval(model: Path) -> list[str]:
    return ["eval", str(model), "--split", "val", "--max-bytes", str(EVAL_BYTES)]


def _export(at: Place, fmt: str) -> list[str]:
    return ["export", str(at.run), "--format", fmt, "--out", at.out(f"export-{fmt}")]


def _surgery(at: Place, command: str, *options: str) -> list[str]:
    return [command, str(at.run), "--targets", "*", *options, "--out", at.out(command)]


def _sample(at: Place, *options: str) -> list[str]:
    return ["sample", str(at.run), "--prompt", PROMPT, "--tokens", str(SAMPLE_TOKENS), *options]


# Command name → the `stack` arguments of that command for one model.
COMMAND_ARGV: dict[str, Callable[[Place], list[str]]] = {
    "train": _train,
    "train-bf16": lambda at: _train(at, at.work / "train-bf16", *_sets("train", {"precision": "bf16"})),
    "resume": _resume,
    "sample": _sample,
    "sample-greedy": lambda at: _sample(at, "--temperature", "0"),
    "eval": lambda at: _eval(at.run),
    "eval-text": lambda at: ["eval", str(at.run), "--text", at.texts("text.txt")],
    "inspect": lambda at: ["inspect", str(at.run)],
    "trace": lambda at: _trace(at, "trace"),
    "trace-bisect": lambda at: _trace(at, "trace-bisect", "--backend-b", "naive"),
    "trace-patch": _patch,
    "trace-against": lambda at: _trace(at, "trace-against", "--against", str(at.dense_run)),
    "lens": lambda at: ["lens", str(at.run), "--prompt", PROMPT, "--out", at.out("lens")],
    "lens-train": _lens_train,
    "laser": lambda at: _surgery(at, "laser", "--rho", "0.5"),
    "laser-eval": lambda at: _eval(at.work / "laser"),
    "quantize": lambda at: _surgery(at, "quantize"),
    "init-from-options": _init_from_options,
    "lora-train": _lora_train,
    "lora-merge": lambda at: ["lora", "merge", at.out("lora-train"), "--out", at.out("lora-merge")],
    "lora-merge-onnx": lambda at: [
        *("export", at.out("lora-merge"), "--format", "onnx", "--out", at.out("lora-merge-onnx"))
    ],
    "lora-export": lambda at: ["lora", "export", at.out("lora-train"), "--out", at.out("lora-export")],
    "lora-import": lambda at: [
        *("lora", "import", at.out("lora-export"), "--base", str(at.run), "--out", at.out("lora-import"))
    ],
    "sft": _sft,
    "dpo": lambda at: _tune("dpo", str(at.run), "--data", str(at.prefs_data), "--out", at.out("dpo")),
    "distill-student": _distill_student,
    "distill-teacher": _distill_teacher,
    "es": _es,
    "es-eval": lambda at: _eval(at.work / "es"),
    "es-workers": _es_workers,
    "synth": lambda at: ["synth", str(at.run), "--out", at.out("synth"), *SYNTH, "--device", "cpu"],
    "evalmatrix": _evalmatrix,
    "memorization": _memorization,
    "export-hf": lambda at: _export(at, "hf"),
    "import": lambda at: ["import-hf", at.out("export-hf"), "--out", at.out("import")],
    "export-onnx": lambda at: _export(at, "onnx"),
}
# What a command needs besides its model's run: the dense run, or data the matrix prepares.
TEACHER, CHATS, PAIRS, TEXTS = "dense model's run", "chat data", "preference data", "texts"
NEEDS = {
    "distill-student": TEACHER,
    "trace-against": TEACHER,
    "sft": CHATS,
    "dpo": PAIRS,
    "eval-text": TEXTS,
    "evalmatrix": TEXTS,
}


# -- the commands whose result the matrix checks, not only their exit --------------------------


def _fitness(directory: Path) -> list[tuple[float, float]]:
    from contracts.evidence import read_evidence

    steps = read_evidence(directory / "metadata.json").metrics.get("steps")
    if not isinstance(steps, list):
        return []
    return [(float(step["fitness_mean"]), float(step["fitness_best"])) for step in steps]


def _same_fitness(at: Place) -> str | None:
    """es-workers scored every step as es did, to within the matrix's fitness_rtol (another thread
    count sums in another order); a worker with another model scores other members."""
    one, two = _fitness(at.work / "es"), _fitness(at.work / "es-workers")
    rtol = at.matrix.tolerances.fitness_rtol
    close = len(one) == len(two) > 0 and all(
        abs(a - b) <= rtol * max(abs(a), abs(b))
        for x, y in zip(one, two, strict=True)
        for a, b in zip(x, y, strict=True)
    )
    return None if close else f"two workers' fitness {two} is not one worker's {one} (rtol {rtol:g})"


def _honoured(at: Place) -> str | None:
    """init-from-options ran: its run holds the training settings it asked for (INIT_KNOBS), over
    the model it started from (they were dropped in silence)."""
    from stack.train.config import read_toml

    model = read_toml(at.work / "init-from-options" / "config.toml").get("model", {})
    asked = _knobs(at)
    dropped = {key: model.get(key) for key, value in asked.items() if model.get(key) != value}
    return None if not dropped else f"the run holds {dropped}, not the asked {asked}"


# Command name → a check of what it made once it exited 0: a problem (the cell `differs`) or None.
COMMAND_CHECKS: dict[str, Callable[[Place], str | None]] = {
    "es-workers": _same_fitness,
    "init-from-options": _honoured,
}


def _weights_differ(at: Place) -> bool:
    """Whether this model's trained weights are not the dense model's, tensor for tensor: a
    bisection against the dense run must then find where the two diverge, and else find nothing."""
    import torch
    from safetensors.torch import load_file

    from stack.train.trained import resolve_checkpoint

    mine, dense = (
        load_file(str(resolve_checkpoint(run) / "model.safetensors")) for run in (at.run, at.dense_run)
    )
    return mine.keys() != dense.keys() or any(not torch.equal(mine[key], dense[key]) for key in mine)


# Command name → whether its cell must find something: exit 3 with the trace's verdict line is then
# the command's result (it found), not a gate; exit 0 is a wrong result (it found nothing).
FINDS: dict[str, Callable[[Place], bool]] = {"trace-against": _weights_differ}
FOUND = "verdict: "  # how a trace's result line starts (stack.cli.trace)


def _found_as_expected(place: Place, command: str, cell: Cell) -> Cell:
    """The cell of a command that finds (FINDS), judged by whether it found what the models hold."""
    expected = FINDS[command](place)
    found = cell.outcome == "gate" and cell.message.startswith(FOUND)
    if expected and found:
        return Cell("ok", cell.message, cell.seconds)
    if expected and cell.outcome == "ok":
        return Cell("differs", f"found nothing against another model's weights: {cell.message}", cell.seconds)
    return cell


def _last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1].strip() if lines else ""


def run_cell(command: Command, argv: list[str]) -> Cell:
    """Run `stack ARGV` through `command` in this process with its output captured; the exit code
    decides the cell. A cell a signal stopped (Ctrl-C, SIGTERM: its status 130 or 143) stops the
    matrix too, as `Interrupted`: the user asked the whole command to stop, not one cell."""
    out, err = io.StringIO(), io.StringIO()
    start = time.perf_counter()
    try:
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = command(argv)
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # main lets only SystemExit out; anything here is a crash of the cell
        escaped = f"{type(exc).__name__} escaped stack.cli.main: {exc}"
        return Cell("crashed", escaped, time.perf_counter() - start)
    stopped = interrupted_by(code)
    if stopped is not None:
        raise Interrupted(stopped, f"while a cell ran `stack {argv[0]}` ({_last_line(err.getvalue())})")
    seconds = time.perf_counter() - start
    if TRACEBACK in err.getvalue() or TRACEBACK in out.getvalue():
        return Cell("crashed", f"exit {code} with a traceback: {_last_line(err.getvalue())}", seconds)
    outcome = {0: "ok", 2: "refused", 3: "gate"}.get(code, "crashed")
    # A failure says why on stderr; a finding (a trace's anomaly, exit 3) may say it on stdout.
    message = (
        _last_line(out.getvalue()) if code == 0 else _last_line(err.getvalue()) or _last_line(out.getvalue())
    )
    return Cell(outcome, message if outcome != "crashed" else f"exit {code}: {message}", seconds)


def unknown_settings(combination: Combination) -> list[str]:
    """The model settings ModelConfig does not have (an option not built yet)."""
    return [f"model.{key}" for key in combination.model if key not in ModelConfig.model_fields]


OnCell = Callable[[str, str, Cell], None]  # (model, command, cell), told as each cell ends


def _blocked(command: CommandSpec, cells: dict[str, Cell], ready: dict[str, Cell]) -> Cell | None:
    """Why `command` cannot run now (a Cell saying so), or None when it can."""
    if command.name not in COMMAND_ARGV:
        return Cell("missing", f"no way to run {command.name!r} is known; add it to COMMAND_ARGV")
    if command.name != FIRST and cells.get(FIRST, Cell("missing", "")).outcome != "ok":
        return Cell("missing", f"no run to use: {FIRST} did not complete")
    if command.after is not None:
        before = cells.get(command.after)
        if before is None:
            return Cell("missing", f"needs {command.after}, which this run left out")
        if before.outcome in ("refused", "skipped"):
            return Cell("skipped", f"needs {command.after}, which refused: {before.message}")
        if before.outcome != "ok":
            return Cell("missing", f"needs {command.after}, which did not complete")
    need = NEEDS.get(command.name)
    if need is not None and need not in ready:
        return Cell("missing", f"needs the {need}, which this run did not make")
    if need is not None and ready[need].outcome != "ok":
        return Cell("missing", f"needs the {need}, which failed: {ready[need].message}")
    return None


def in_process_with(env: dict[str, str]) -> Command:
    """`stack ARGV` in a process of its own under `env` (on top of this one's), its output copied to
    this process's (captured) stdout and stderr: where an attention path runs that this process may
    not run (Triton's interpreter must be switched on before triton is first imported)."""

    def command(argv: list[str]) -> int:
        done = subprocess.run(
            [sys.executable, "-m", "stack", *argv], env={**os.environ, **env}, capture_output=True, text=True
        )
        sys.stdout.write(done.stdout)
        sys.stderr.write(done.stderr)
        return done.returncode

    return command


@contextlib.contextmanager
def _without(names: Iterator[str] | list[str]) -> Iterator[None]:
    """These environment variables unset for the duration (a path row's cells, where it may not run)."""
    saved = {name: os.environ.pop(name) for name in list(names) if name in os.environ}
    try:
        yield
    finally:
        os.environ.update(saved)


def _run(place: Place, command: str, command_line: Command) -> Cell:
    """One cell: a path row's train in a process of its own, every other command here (without the
    row's train_env), then the check of what it made (COMMAND_CHECKS), if any."""
    row = place.combination
    argv = COMMAND_ARGV[command](place)
    if row.train_env and command == FIRST:
        cell = run_cell(in_process_with(row.train_env), argv)
    else:
        with _without(list(row.train_env)):
            cell = run_cell(command_line, argv)
    if command in FINDS and cell.outcome in ("ok", "gate"):
        return _found_as_expected(place, command, cell)
    check = COMMAND_CHECKS.get(command)
    if cell.outcome == "ok" and check is not None:
        problem = check(place)
        if problem is not None:
            return Cell("differs", problem, cell.seconds)
    return cell


def run_combination(
    matrix: Matrix,
    place: Place,
    on_cell: OnCell,
    ready: dict[str, Cell],
    command_line: Command,
    only: set[str] | None = None,
) -> dict[str, Cell]:
    """Every command (of `only`, when given) on one model, in order; each cell goes to on_cell too."""
    unknown = unknown_settings(place.combination)
    cells: dict[str, Cell] = {}
    for command in matrix.commands:
        if only is not None and command.name not in only:
            continue
        if unknown:
            cell = Cell("missing", f"the model has no {', '.join(unknown)} yet")
        else:
            cell = _blocked(command, cells, ready) or _run(place, command.name, command_line)
        cells[command.name] = cell
        if (place.combination.name, command.name) == (DENSE, FIRST):
            ready[TEACHER] = cell  # of every model's distill-student
        on_cell(place.combination.name, command.name, cell)
    return cells


# -- the data the fine-tuning cells need ---------------------------------------------------------

CHAT_EXAMPLES = 48
PREF_PAIRS = 64


def _chats() -> list[dict[str, Any]]:
    """Short chat examples (a sum and its answer), many enough for a held-out half."""
    rows = []
    for i in range(CHAT_EXAMPLES):
        a, b = divmod(i, 8)
        turns = [{"role": "user", "content": f"{a}+{b}?"}, {"role": "assistant", "content": f"{a + b}."}]
        rows.append({"messages": turns})
    return rows


def _pairs() -> list[dict[str, Any]]:
    """Distinct preference pairs (a sum, its answer, a wrong one), half of them held out."""
    rows = []
    for i in range(PREF_PAIRS):
        a, b = divmod(i, 8)
        rows.append(
            {"prompt": f"Q: {a}+{b}? A:", "chosen": f" {a + b}.", "rejected": f" {a + b + 1}, maybe."}
        )
    return rows


def prepare_texts(shared: Path) -> Cell:
    """What eval-text and evalmatrix read: a text, held-out and training items (a sum and its answer,
    as the chats), and a folder of documents to retrieve from."""
    texts = shared / "texts"
    (texts / "docs").mkdir(parents=True, exist_ok=True)
    (texts / "text.txt").write_text("the gate fired at layer one\nand the spec said why\n", encoding="utf-8")
    for name, offset in (("items.jsonl", 1), ("train.jsonl", 2)):
        rows = [
            {"id": f"{name[0]}{i}", "prompt": f"Q: {i}+{offset}? A:", "completion": f" {i + offset}."}
            for i in range(6)
        ]
        (texts / name).write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
    (texts / "docs" / "sums.txt").write_text(
        "one and one make two. two and one make three.\n", encoding="utf-8"
    )
    return Cell("ok", f"wrote {texts}")


def prepare_tuning_data(data: Path, shared: Path, command: Command) -> dict[str, Cell]:
    """The chat and preference DATA_DIRs the sft and dpo cells read, tokenized as `data` is, and the
    texts eval-text and evalmatrix read."""
    shared.mkdir(parents=True, exist_ok=True)
    ready = {TEXTS: prepare_texts(shared)}
    for need, name, fmt, rows in (
        (CHATS, "sft", "chat", _chats()),
        (PAIRS, "prefs", "prefs", _pairs()),
    ):
        source = shared / f"{name}.jsonl"
        source.write_text("".join(json.dumps(r) + "\n" for r in rows), encoding="utf-8")
        argv = [
            "prepare",
            str(source),
            "--format",
            fmt,
            "--tokenizer",
            str(data),
            "--out",
            str(shared / name),
        ]
        ready[need] = run_cell(command, [*argv, "--val-fraction", "0.5", "--pack-len", "32"])
    return ready


def run_cells(
    matrix: Matrix,
    data: Path,
    work: Path,
    on_cell: OnCell,
    command: Command,
    subset: dict[str, set[str]] | None = None,
) -> dict[str, dict[str, Cell]]:
    """Run every cell (of `subset`, when given) under `work` through `command`; `settle` judges.

    Run outside any ledger of the caller's: each command records its own gates in its own
    evidence, and the matrix's record judges the matrix alone.
    """
    shared = work / "shared"
    ready = prepare_tuning_data(data, shared, command)
    found: dict[str, dict[str, Cell]] = {}
    for combination in matrix.rows():
        if subset is not None and combination.name not in subset:
            continue
        place = Place(matrix, combination, data, work / combination.name, shared)
        only = None if subset is None else subset[combination.name]
        found[combination.name] = run_combination(matrix, place, on_cell, ready, command, only)
    return found


# -- the judgement -------------------------------------------------------------------------------


def trained_layers(work: Path, cells: dict[str, dict[str, Cell]]) -> dict[str, int]:
    """The number of blocks of every model the matrix trained, read from its latest checkpoint."""
    from stack.train.checkpoint import read_state
    from stack.train.trained import resolve_checkpoint

    return {
        name: int(read_state(resolve_checkpoint(work / name / "run"))["config"]["model"]["n_layers"])
        for name, row in cells.items()
        if row.get(FIRST, Cell("missing", "")).outcome == "ok"
    }


def measured_matrix(
    matrix: Matrix, cells: dict[str, dict[str, Cell]], layers: dict[str, int]
) -> dict[str, Any]:
    """The matrix and its cells as GATE-ARCH-013's measured values: outcomes, the depth of every
    trained model, and the last line of every cell that is not ok (a gate carries what it measured)."""
    return {
        "options": [o.name for o in matrix.options],
        "paths": [p.name for p in matrix.paths],
        "layers": layers,
        "commands": [c.model_dump() for c in matrix.commands],
        "cells": {model: {command: c.outcome for command, c in row.items()} for model, row in cells.items()},
        "messages": {
            f"{model}/{command}": c.message
            for model, row in cells.items()
            for command, c in row.items()
            if c.outcome != "ok"
        },
    }


def table(matrix: Matrix, cells: dict[str, dict[str, Cell]], measured: dict[str, Any]) -> dict[str, Any]:
    """Everything about every cell, for a person (matrix.json): settings, outcome, verdict, last
    line, time."""
    verdicts = cell_verdicts(measured)
    return {
        "model": matrix.model.model_dump(),
        "settings": {c.name: c.model for c in matrix.rows()},
        "cells": {
            model: {
                command: {**asdict(c), **asdict(verdicts[(model, command)])} for command, c in row.items()
            }
            for model, row in cells.items()
        },
    }


def matrix_outcome(measured: dict[str, Any]) -> Outcome:
    """GATE-ARCH-013 over a measured matrix."""
    return measure("GATE-ARCH-013", measured, holds="every option and combination ran every command")


@gate_ensure("GATE-ARCH-013", lambda result: matrix_outcome(result))
def settle(matrix: Matrix, cells: dict[str, dict[str, Cell]], layers: dict[str, int]) -> dict[str, Any]:
    """The measured matrix, judged: a failed or missing cell fires the gate."""
    return measured_matrix(matrix, cells, layers)
