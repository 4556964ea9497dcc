"""Every command knows what it was handed (stack.artifacts, stack.cli.inputs).

Each kind of artifact is made once per session by the command that makes it (artifact_support),
and identified as itself. Then every input of every command is handed every kind it does not
take: each refusal is exit 2 and one line naming the kind given and the kind needed, with no
word of damage, and nothing is written. A damaged artifact of the right kind is still called
damaged by its reader; a training task refuses another task's data; and the table of inputs is
held to the parsers, so a new path argument cannot be left out of it.
"""

from __future__ import annotations

import argparse
import importlib
import json
import shutil
from contextlib import nullcontext
from pathlib import Path

import pytest

import stack.cli
from stack import artifacts
from stack.artifacts import BY_NAME, DAMAGE_WORDS, KINDS, NEEDS, identify
from stack.cli import build_parser, main, values
from stack.cli.inputs import INPUTS, Input
from tests.support.artifact_support import build_kinds, write_items
from tests.support.tree_snapshot import snapshot, unwritable

# A command line for each input, {X} the path under test; every other input is given a kind it
# takes, so the refusal can only be about {X}. {out} is a fresh path that must stay untouched.
TEMPLATES: dict[tuple[str, str], str] = {
    ("sample", "RUN_DIR|CKPT"): "sample {X} --tokens 1",
    ("eval", "RUN_DIR|CKPT"): "eval {X} --text {text}",
    ("eval", "--text"): "eval {run} --text {X}",
    ("eval", "--data"): "eval {run} --split val --data {X}",
    ("inspect", "RUN_DIR|CKPT"): "inspect {X}",
    ("export", "RUN_DIR|CKPT"): "export {X} --format hf --out {out}",
    ("export", "--sample-text"): "export {run} --format hf --out {out} --sample-text {X}",
    ("import-hf", "DIR"): "import-hf {X} --out {out}",
    ("import-hf", "--sample-text"): "import-hf {hf} --out {out} --sample-text {X}",
    ("trace", "CKPT"): "trace {X} --prompt a",
    ("trace", "--against"): "trace {run} --prompt a --against {X}",
    ("trace", "--compare"): "trace --compare {X} {dump}",
    ("lens", "CKPT"): "lens {X} --prompt a",
    ("lens", "--lens"): "lens {run} --prompt a --lens {X}",
    ("lens", "--data"): "lens {run} --train --data {X} --save {out}",
    ("laser", "RUN_DIR|CKPT"): "laser {X} --targets ffn_up --rho 0.5 --out {out}",
    ("quantize", "RUN_DIR|CKPT"): "quantize {X} --targets ffn_up --out {out}",
    ("quantize", "--sample-text"): "quantize {run} --targets ffn_up --out {out} --sample-text {X}",
    ("es", "RUN_DIR|CKPT"): "es {X} --data {data} --out {out}",
    ("es", "--data"): "es {run} --data {X} --out {out}",
    ("es", "--resume"): "es --resume {X}",
    ("lora", "RUN_DIR|ADAPTER_DIR"): "lora inspect {X}",
    ("lora", "merge --base"): "lora merge {adapter} --base {X} --out {out}",
    ("lora", "export RUN_DIR"): "lora export {X} --out {out}",
    ("lora", "export --base"): "lora export {lora} --base {X} --out {out}",
    ("lora", "import PEFT_DIR"): "lora import {X} --base {run} --out {out}",
    ("lora", "import --base"): "lora import {peft} --base {X} --out {out}",
    ("lora", "--sample-text"): "lora export {lora} --out {out} --sample-text {X}",
    ("train", "--data"): "train --data {X} --out {out} --preset smoke",
    ("train", "--init-from"): "train --data {data} --out {out} --init-from {X}",
    ("train", "--resume"): "train --resume {X}",
    ("sft", "--data"): "sft --data {X} --init-from {run} --out {out}",
    ("sft", "--init-from"): "sft --data {chat} --init-from {X} --out {out}",
    ("sft", "--resume"): "sft --resume {X}",
    ("dpo", "RUN_DIR|CKPT"): "dpo {X} --data {prefs} --out {out}",
    ("dpo", "--data"): "dpo {run} --data {X} --out {out}",
    ("dpo", "--reference"): "dpo {run} --data {prefs} --out {out} --reference {X}",
    ("dpo", "--resume"): "dpo --resume {X}",
    ("distill", "TEACHER"): "distill {X} --data {data} --out {out} --preset smoke",
    ("distill", "--data"): "distill {run} --data {X} --out {out} --preset smoke",
    ("distill", "--student"): "distill {run} --data {data} --out {out} --student {X}",
    ("distill", "--resume"): "distill --resume {X}",
    ("synth", "RUN_DIR|CKPT"): "synth {X} --out {out}",
    ("evalmatrix", "BASE"): "evalmatrix {X} --items {items} --train {items}",
    ("evalmatrix", "--items"): "evalmatrix {run} --items {X} --train {items}",
    ("evalmatrix", "--train"): "evalmatrix {run} --items {items} --train {X}",
    ("evalmatrix", "--adapter"): "evalmatrix {run} --items {items} --train {items} --adapter {X}",
    ("evalmatrix", "--docs"): "evalmatrix {run} --items {items} --train {items} --docs {X}",
    ("memorization", "TUNED"): "memorization {X} --base {run} --examples {items}",
    ("memorization", "--base"): "memorization {run} --base {X} --examples {items}",
    ("memorization", "--data"): "memorization {run} --base {run} --data {X}",
    ("memorization", "--examples"): "memorization {run} --base {run} --examples {X}",
    ("options-matrix", "--data"): "options-matrix --data {X} --out {out}",
    ("release", "RUN_DIR"): "release {X} --ledger-record {ledger} --name x --version 0.1.0",
    ("release", "--ledger-record"): "release {run} --ledger-record {X} --name x --version 0.1.0",
    ("prepare", "INPUT"): "prepare {X} --out {out}",
    ("prepare", "--verify --out"): "prepare --verify --out {X}",
    ("prepare", "--tokenizer"): "prepare {text} --out {out} --tokenizer {X}",
}
# The inputs whose value is written into a larger argument: hf:DIR.
PREFIXED = {("prepare", "--tokenizer", "hf-tokenizer"): "hf:"}
# Path arguments that are outputs, never read as inputs.
OUTPUTS = {"out", "save", "json", "csv", "dump", "record", "evidence_dir", "models_dir", "registry"}
# Path arguments read as files of settings, not artifacts: a TOML config, a YAML template or filters.
SETTINGS = {"config", "filters", "template"}


@pytest.fixture(scope="session")
def kinds(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """kind name → an artifact of that kind, made by its own command (built once per session)."""
    root = tmp_path_factory.mktemp("kinds")
    made = build_kinds(root)
    made["items"] = write_items(root / "items.jsonl")
    return made


@pytest.fixture
def cli(monkeypatch: pytest.MonkeyPatch) -> None:
    """`stack.cli.main` as it is, with its parser built once: building it takes most of a refusal's time."""
    parser = build_parser()
    monkeypatch.setattr(stack.cli, "build_parser", lambda: parser)


def _argv(entry: Input, kind: str, kinds: dict[str, Path], out: Path) -> list[str]:
    """The template of `entry` with {X} an artifact of `kind`, word by word (paths may hold spaces)."""
    given = PREFIXED.get((entry.command, entry.option, entry.need), "") + str(kinds[kind])
    places = {
        "X": given,
        "out": str(out),
        "run": str(kinds["run"]),
        "data": str(kinds["data-pretrain"]),
        "chat": str(kinds["data-sft"]),
        "prefs": str(kinds["data-prefs"]),
        "adapter": str(kinds["adapter"]),
        "lora": str(kinds["lora-run"]),
        "peft": str(kinds["peft-adapter"]),
        "hf": str(kinds["hf-export"]),
        "dump": str(kinds["trace-dump"]),
        "text": str(kinds["file"]),
        "items": str(kinds["items"]),
        "ledger": str(kinds["evidence"]),
    }
    return [word.format(**places) for word in TEMPLATES[(entry.command, entry.option)].split()]


def _id(entry: Input) -> str:
    return f"{entry.command} {entry.option} ({entry.need})"


@pytest.mark.parametrize("kind", [k.name for k in KINDS])
def test_each_kind_is_identified_as_itself(kinds: dict[str, Path], kind: str) -> None:
    found = identify(kinds[kind])
    assert (found.kind.name, found.sure) == (kind, True)


@pytest.mark.parametrize("entry", INPUTS, ids=_id)
def test_every_input_refuses_every_kind_it_does_not_take_naming_both(
    kinds: dict[str, Path],
    entry: Input,
    cli: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """Exit 2, one line naming what was given and what is needed, no word of damage, nothing written."""
    need = NEEDS[entry.need]
    wrong = [kind.name for kind in KINDS if kind.name not in need.kinds]
    assert wrong, f"{_id(entry)} takes every kind"
    problems = []
    for kind in wrong:
        out = tmp_path / f"out-{kind}"
        argv = _argv(entry, kind, kinds, out)
        code = main(argv)
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        line = lines[0] if lines else ""
        named = BY_NAME[kind].noun in line and need.noun in line
        damage = [word for word in DAMAGE_WORDS if word in line.lower()]
        if code != 2 or len(lines) != 1 or not named or damage or out.exists():
            problems.append(f"{kind}: exit {code}, {err.strip()!r}")
    assert problems == []


def test_a_training_task_refuses_the_data_of_another_task(
    kinds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """`stack train` takes any DATA_DIR at the door; the task's objective names the kind it reads."""
    cases = [
        ("data-sft", [], NEEDS["data-pretrain"], "stack sft"),
        ("data-prefs", [], NEEDS["data-pretrain"], "stack dpo"),
        (
            "data-pretrain",
            ["--set", "train.task=sft", "--init-from", str(kinds["run"])],
            NEEDS["data-sft"],
            "",
        ),
        ("data-sft", ["--set", "train.task=dpo", "--init-from", str(kinds["run"])], NEEDS["data-prefs"], ""),
    ]
    for given, extra, need, fits in cases:
        out = tmp_path / f"out-{given}"
        argv = ["train", "--data", str(kinds[given]), "--out", str(out), "--preset", "smoke", *extra]
        assert main(argv) == 2
        line = capsys.readouterr().err.strip()
        assert len(line.splitlines()) == 1 and BY_NAME[given].noun in line and need.noun in line, line
        assert fits in line and not out.exists()


def test_a_model_named_in_the_config_is_identified_too(
    kinds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A path no command line names (a DPO reference, a teacher) is refused for what it is as well."""
    for key, task in (("dpo.reference", "dpo"), ("distill.teacher", "distill")):
        data = kinds["data-prefs" if task == "dpo" else "data-pretrain"]
        argv = ["train", "--data", str(data), "--init-from", str(kinds["run"]), "--out", str(tmp_path / task)]
        sets = ["--set", f"train.task={task}", "--set", f"{key}={json.dumps(str(kinds['hf-model']))}"]
        sets += ["--set", "train.steps=2"]
        assert main([*argv, *sets, "--set", "train.device='cpu'"]) == 2
        line = capsys.readouterr().err.strip()
        assert BY_NAME["hf-model"].noun in line and "`stack import-hf" in line, line
        assert not any(word in line.lower() for word in DAMAGE_WORDS)


@pytest.mark.parametrize(
    ("kind", "damage", "argv", "said"),
    [
        ("data-pretrain", "manifest.json", "prepare --verify --out {X}", "is corrupt"),
        ("checkpoint", "manifest.json", "sample {X} --tokens 1", "restore the checkpoint from a good copy"),
        ("adapter", "adapter.json", "lora inspect {X}", "restore the adapter"),
    ],
)
def test_a_damaged_artifact_of_the_right_kind_is_still_called_damaged(
    kinds: dict[str, Path],
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    kind: str,
    damage: str,
    argv: str,
    said: str,
) -> None:
    """The refusals above never speak of damage; the reader of the right kind still does."""
    copy = tmp_path / "copy"
    shutil.copytree(kinds[kind], copy)
    (copy / damage).write_text("{not json")
    assert main([word.format(X=copy) for word in argv.split()]) == 2
    assert said in capsys.readouterr().err


def test_a_data_dir_whose_manifest_does_not_parse_is_left_to_its_reader(
    kinds: dict[str, Path], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Its format cannot be known, so an input that takes any DATA_DIR lets the reader say what is
    wrong; an input that takes a model still refuses it as data."""
    copy = tmp_path / "data"
    shutil.copytree(kinds["data-sft"], copy)
    (copy / "manifest.json").write_text("{not json")
    found = identify(copy)
    assert (found.kind.family, found.sure) == ("data", False)
    assert (
        main(["sft", "--data", str(copy), "--init-from", str(kinds["run"]), "--out", str(tmp_path / "o")])
        == 2
    )
    assert "is corrupt" in capsys.readouterr().err
    assert main(["sample", str(copy)]) == 2
    line = capsys.readouterr().err
    assert "is a prepared DATA_DIR whose manifest.json cannot be read; `stack sample` needs a run" in line


def test_a_users_folders_named_like_ours_are_plain(tmp_path: Path) -> None:
    """A corpus with folders called checkpoints/ and shards/, and a config.toml, is no run and no
    DATA_DIR: what defines those is their checkpoints, their index and the writer's lock."""
    corpus = tmp_path / "project"
    for folder in ("checkpoints/old", "shards"):
        (corpus / folder).mkdir(parents=True)
    (corpus / "shards" / "part-0.txt").write_text("text\n")
    (corpus / "config.toml").write_text("[tool]\n")
    (corpus / "checkpoints" / "step-0000001-my-backup").mkdir()
    assert identify(corpus).kind.name == "plain-dir"


def _path_arguments(parser: argparse.ArgumentParser) -> dict[str, set[str]]:
    """command → the destinations of its arguments that name a path (by their type or metavar)."""
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    found: dict[str, set[str]] = {}
    for name, command in sub.choices.items():
        dests = set()
        for action in command._actions:
            typed = action.type in (Path, values.utf8_path)
            named = isinstance(action.metavar, str) and any(
                part in action.metavar for part in ("DIR", "CKPT", "INPUT", "FILE", "JSONL", "TUNED", "BASE")
            )
            if (typed or named) and action.dest not in OUTPUTS | SETTINGS:
                dests.add(action.dest)
        found[name] = dests
    return found


def test_the_table_of_inputs_covers_every_path_argument_of_every_parser() -> None:
    """A path argument that is not an output is an input: it has a row, and every row a template."""
    registered: dict[str, set[str]] = {}
    for entry in INPUTS:
        registered.setdefault(entry.command, set()).add(entry.dest)
    for command, dests in _path_arguments(build_parser()).items():
        assert dests <= registered.get(command, set()), (
            f"stack {command}: {dests - registered.get(command, set())}"
        )
    assert set(TEMPLATES) == {(entry.command, entry.option) for entry in INPUTS}
    assert {entry.need for entry in INPUTS} <= set(NEEDS)
    assert all(kind in BY_NAME for need in NEEDS.values() for kind in need.kinds)


def test_the_docs_table_is_the_definitions() -> None:
    """docs/reliability.md's table is rendered from INPUTS and KINDS: a row per input, a row per kind."""
    from tools.site.accepts import SECTION, accepts_page

    page = accepts_page()
    inputs = page.split(f"[start:{SECTION}]")[1].split(f"[end:{SECTION}]")[0]
    assert inputs.count("\n| <code>stack ") == len(INPUTS)
    kinds = page.split("## The kinds")[1]
    assert [line.split("</code>")[0].removeprefix("| <code>") for line in kinds.splitlines()[4:]] == [
        kind.name for kind in KINDS
    ]


def test_a_refusal_routes_from_what_was_given() -> None:
    """The fix depends on what was given: a Hugging Face directory is imported, data is trained on."""
    hf = artifacts.Identity(Path("llama"), BY_NAME["hf-model"])
    data = artifacts.Identity(Path("d"), BY_NAME["data-pretrain"])
    assert "`stack import-hf llama --out RUN_DIR`" in artifacts.refusal(hf, NEEDS["model"], "`stack eval`")
    assert "`stack train --data d --out RUN_DIR`" in artifacts.refusal(data, NEEDS["model"], "`stack eval`")
    adapter = artifacts.Identity(Path("a"), BY_NAME["adapter"])
    said = artifacts.refusal(adapter, NEEDS["model"], "`stack inspect`")
    assert "`stack lora merge a --base RUN_DIR --out OUT`" in said and "`stack lora inspect a`" in said


# -- every output of every command follows the one set of rules (stack.outputs) ----------------------

# Each output option of each command, as a command line that writes {out}; every other path is
# one the command takes ({fresh}: a new directory for the command's other output), so a refusal
# can only be about {out}.
WRITERS: dict[str, str] = {
    "prepare --out": "prepare {text} --out {out}",
    "prepare --evidence-dir": "prepare {text} --out {fresh} --evidence-dir {out}",
    "train --out": "train --data {data} --out {out} --preset smoke",
    "train --evidence-dir": "train --data {data} --out {fresh} --preset smoke --evidence-dir {out}",
    "sft --out": "sft --data {chat} --init-from {run} --out {out}",
    "sft --evidence-dir": "sft --data {chat} --init-from {run} --out {fresh} --evidence-dir {out}",
    "dpo --out": "dpo {run} --data {prefs} --out {out}",
    "dpo --evidence-dir": "dpo {run} --data {prefs} --out {fresh} --evidence-dir {out}",
    "distill --out": "distill {run} --data {data} --out {out} --preset smoke",
    "distill --evidence-dir": "distill {run} --data {data} --out {fresh} --preset smoke --evidence-dir {out}",
    "es --out": "es {run} --data {data} --out {out}",
    "es --evidence-dir": "es {run} --data {data} --out {fresh} --evidence-dir {out}",
    "synth --out": "synth {run} --out {out}",
    "synth --evidence-dir": "synth {run} --out {fresh} --evidence-dir {out}",
    "laser --out": "laser {run} --targets ffn_up --rho 0.5 --out {out}",
    "laser --evidence-dir": "laser {run} --targets ffn_up --rho 0.5 --out {fresh} --evidence-dir {out}",
    "quantize --out": "quantize {run} --targets ffn_up --out {out}",
    "quantize --evidence-dir": "quantize {run} --targets ffn_up --out {fresh} --evidence-dir {out}",
    "lora merge --out": "lora merge {lora} --out {out}",
    "lora export --out": "lora export {lora} --out {out}",
    "lora import --out": "lora import {peft} --base {run} --out {out}",
    "lora merge --evidence-dir": "lora merge {lora} --out {fresh} --evidence-dir {out}",
    "export --out": "export {run} --format hf --out {out}",
    "export --evidence-dir": "export {run} --format hf --out {fresh} --evidence-dir {out}",
    "import-hf --out": "import-hf {hf} --out {out}",
    "import-hf --evidence-dir": "import-hf {hf} --out {fresh} --evidence-dir {out}",
    "trace --out": "trace {run} --prompt a --out {out}",
    "trace --json": "trace {run} --prompt a --json {out}",
    "trace --csv": "trace {run} --prompt a --csv {out}",
    "trace --dump": "trace {run} --prompt a --dump {out}",
    "trace --evidence-dir": "trace {run} --prompt a --evidence-dir {out}",
    "lens --out": "lens {run} --prompt a --out {out}",
    "lens --json": "lens {run} --prompt a --json {out}",
    "lens --csv": "lens {run} --prompt a --csv {out}",
    "lens --save": "lens {run} --train --data {data} --save {out}",
    "lens --evidence-dir": "lens {run} --prompt a --evidence-dir {out}",
    "sample --record": "sample {run} --tokens 2 --record {out}",
    "sample --evidence-dir": "sample {run} --tokens 2 --evidence-dir {out}",
    "eval --record": "eval {run} --text {text} --record {out}",
    "eval --evidence-dir": "eval {run} --text {text} --evidence-dir {out}",
    "evalmatrix --record": "evalmatrix {run} --items {items} --train {items} --record {out}",
    "evalmatrix --evidence-dir": "evalmatrix {run} --items {items} --train {items} --evidence-dir {out}",
    "memorization --record": "memorization {run} --base {run} --examples {items} --record {out}",
    "memorization --evidence-dir": "memorization {run} --base {run} --examples {items} --evidence-dir {out}",
    "options-matrix --out": "options-matrix --data {data} --out {out}",
    "options-matrix --evidence-dir": "options-matrix --data {data} --out {fresh} --evidence-dir {out}",
}
# Outputs that are one file (the rest are directories).
FILE_OUTPUTS = {"trace --json", "trace --csv", "trace --dump", "lens --json", "lens --csv", "lens --save"}
# `stack release` writes into the repository's models directory and registry, by release's rules.
NOT_WRITERS = {("release", "--models-dir"), ("release", "--registry")}
# The outputs --force may replace, and the kind whose copy is an earlier output of the command
# (None: none is made above; a directory of the user's stands for one).
FORCED: dict[str, str | None] = {
    "prepare --out": None,
    "laser --out": "surgery",
    "quantize --out": "surgery",
    "lora merge --out": "surgery",
    "lora export --out": "peft-adapter",
    "lora import --out": "adapter",
    "export --out": "hf-export",
    "import-hf --out": "import",
    "trace --out": None,
    "lens --out": None,
}


def _writer_argv(writer: str, kinds: dict[str, Path], out: Path, fresh: Path) -> list[str]:
    places = {
        "out": str(out),
        "fresh": str(fresh),
        "run": str(kinds["run"]),
        "data": str(kinds["data-pretrain"]),
        "chat": str(kinds["data-sft"]),
        "prefs": str(kinds["data-prefs"]),
        "lora": str(kinds["lora-run"]),
        "peft": str(kinds["peft-adapter"]),
        "hf": str(kinds["hf-export"]),
        "text": str(kinds["file"]),
        "items": str(kinds["items"]),
    }
    return [word.format(**places) for word in WRITERS[writer].split()]


def _refused_in_one_line(argv: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(argv)
    lines = capsys.readouterr().err.strip().splitlines()
    assert code == 2 and len(lines) == 1, (code, lines)
    return lines[0]


@pytest.mark.parametrize("case", ["link", "in-the-way", "under-a-file", "unwritable"])
@pytest.mark.parametrize("writer", sorted(WRITERS))
def test_every_output_is_refused_where_it_cannot_be_written(
    kinds: dict[str, Path],
    writer: str,
    case: str,
    cli: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """A link, something in the way, a file above it, a directory this user cannot write: each is
    one line naming the option and the path, before any work, and nothing changes."""
    option = writer.split()[-1]
    place = tmp_path / "place"
    place.mkdir()
    (place / "file").write_text("a user's file\n")
    (place / "dir").mkdir()
    out = {
        "link": place / "link",
        "in-the-way": place / ("dir" if writer in FILE_OUTPUTS else "file"),
        "under-a-file": place / "file" / "new",
        "unwritable": place / "ro" / "new",
    }[case]
    if case == "link":
        out.symlink_to(place / "dir")
    said = {
        "link": "is a symbolic link to",
        "in-the-way": "exists and is not a regular file" if writer in FILE_OUTPUTS else "is not a directory",
        "under-a-file": f"cannot be created: {place / 'file'} is a file",
        "unwritable": "is not writable",
    }[case]
    argv = _writer_argv(writer, kinds, out, tmp_path / "fresh")
    with unwritable(place / "ro") if case == "unwritable" else nullcontext():
        before = snapshot(tmp_path)
        line = _refused_in_one_line(argv, capsys)
        assert snapshot(tmp_path) == before
    assert f"{option} {out} " in line and said in line, line


def _plant_a_users_file(writer: str, kinds: dict[str, Path], out: Path) -> tuple[list[str], str]:
    """A user's file where `writer` writes, beside an earlier output of its command where one is
    made above; the flag that asks to replace it, and what the refusal says."""
    if writer in FILE_OUTPUTS:
        out.write_text("a user's file\n")
        return ["--force"], f"refusing to replace {out}: it is not"
    if writer.endswith("--record"):  # a record is never overwritten; the directory may hold more
        out.mkdir()
        (out / "metadata.json").write_text("a user's file\n")
        return [], "already holds a metadata.json"
    if writer not in FORCED:
        out.mkdir()
        (out / "notes.txt").write_text("a user's file\n")
        return [], f"{out} already exists and is not empty"
    earlier = FORCED[writer]
    if earlier is not None:
        shutil.copytree(kinds[earlier], out)
    else:
        out.mkdir()
    mine = out / ("documents.npy" if writer == "prepare --out" else "notes.txt")  # prepare keeps notes
    mine.write_text("a user's file\n")
    if earlier is None and writer != "prepare --out":
        return ["--force"], f"{out} holds no metadata.json of one"
    return ["--force"], f"{mine} is not part of the earlier output"


@pytest.mark.parametrize("writer", sorted(w for w in WRITERS if not w.endswith("--evidence-dir")))
def test_no_output_replaces_a_file_its_command_did_not_write(
    kinds: dict[str, Path], writer: str, cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A user's file where the output goes is refused, with --force where the command takes it,
    and nothing changes. (A ledger holds others' records by design: what it refuses is a run id
    filed already, contracts.evidence.ledger_slot.)"""
    out = tmp_path / "out"
    force, said = _plant_a_users_file(writer, kinds, out)
    before = snapshot(tmp_path)
    line = _refused_in_one_line([*_writer_argv(writer, kinds, out, tmp_path / "fresh"), *force], capsys)
    assert said in line, line
    assert snapshot(tmp_path) == before


@pytest.mark.parametrize("writer", sorted(w for w in WRITERS if w.endswith("--record")))
def test_a_record_dir_holding_a_users_result_file_is_refused(
    kinds: dict[str, Path], writer: str, cli: None, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A --record DIR of the user's that holds their own file of the name the command writes its
    result under (eval.json, sample.json, ...) is refused before any work, and the file is kept
    (a check of metadata.json alone would write over the user's eval.json)."""
    result_file = importlib.import_module(f"stack.cli.{writer.split()[0]}").RESULT_FILE
    out = tmp_path / "out"
    out.mkdir()
    (out / result_file).write_text("a user's own results\n")
    before = snapshot(tmp_path)
    line = _refused_in_one_line(_writer_argv(writer, kinds, out, tmp_path / "fresh"), capsys)
    assert f"--record {out} already holds a {result_file}" in line, line
    assert snapshot(tmp_path) == before


def test_every_output_of_every_command_is_in_the_table() -> None:
    """A new output option gets a row in WRITERS, and so its tests above."""
    sub = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction))
    outputs = {
        (name, action.option_strings[0])
        for name, command in sub.choices.items()
        for action in command._actions
        if action.dest in OUTPUTS and not isinstance(action, argparse._StoreTrueAction)
    }
    assert outputs - NOT_WRITERS == {(writer.split()[0], writer.split()[-1]) for writer in WRITERS}


@pytest.mark.parametrize(
    ("command", "option", "kind", "name"),
    [
        ("train", "--data", "data-pretrain", "manifest.json"),
        ("train", "--init-from", "run", "config.toml"),
        ("train", "--resume", "run", "metadata.json"),
        ("sample", "RUN_DIR|CKPT", "run", "config.toml"),
    ],
)
def test_a_file_inside_the_directory_an_input_takes_is_refused_naming_the_directory(
    kinds: dict[str, Path],
    cli: None,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    command: str,
    option: str,
    kind: str,
    name: str,
) -> None:
    """DATA_DIR/manifest.json given to --data (a run's file to --resume, --init-from, sample) is
    refused with the one fix, its directory, never a route from the file (`stack prepare` of a
    manifest tokenizes it as a corpus)."""
    entry = next(i for i in INPUTS if (i.command, i.option) == (command, option))
    inside = kinds[kind] / name
    assert inside.is_file()
    assert main(_argv(entry, "inside", {**kinds, "inside": inside}, tmp_path / "out")) == 2
    (line,) = capsys.readouterr().err.strip().splitlines()
    assert line.endswith(f"pass its directory {kinds[kind]}") and "stack prepare" not in line, line
