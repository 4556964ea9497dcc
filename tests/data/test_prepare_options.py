"""`stack prepare --glob` and `--join`: every option that selects or
shapes what enters a DATA_DIR is stated in the record's config (tools/argv_record.STATED_OPTIONS,
from 1.33.0), held to the command line and to the manifest the prepare wrote
(contracts.derive.prepare_options), and GATE-DATA-014's check `inputs` (rev 4) holds every file
read to the --glob the prepare was handed.

Each mutant is planted here, in this process, through the real command (`stack prepare ...
--evidence-dir`), and the integrity check of the record it files (or the gate) catches it; the
same commands unmutated pass.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import stack.data.corpus as corpus_module
import stack.data.prepare as prepare_module
import stack.data.sft_prepare as sft_prepare_module
from tests.support.ledger_support import findings
from tests.support.paths import DATA
from tests.support.prepare_support import run_cli, text_docs, write_docs
from tools.integrity.settings.argv_record import STATED_OPTIONS

PROMPT_COMPLETION = DATA / "prompt_completion_small.jsonl"
PREFS = DATA / "prefs_small.jsonl"


def _forced(function: Any, **kept: Any) -> Any:
    """`function` with the keyword arguments `kept` put in place of the ones it is handed (the mutant)."""

    def forced(*args: Any, **kwargs: Any) -> Any:
        return function(*args, **{**kwargs, **kept})

    return forced


def _prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path, *argv: str) -> tuple[int, str, Path]:
    """Exit code, stderr and the record directory of `stack prepare ARGV --evidence-dir`."""
    ledger = tmp_path / "ledger"
    code, err = run_cli(capsys, "prepare", *argv, "--out", str(tmp_path / "d"), "--evidence-dir", str(ledger))
    (record,) = ledger.iterdir()
    return code, err, record


def _corpus(tmp_path: Path, outside: int = 1) -> Path:
    """A directory of 30 .txt documents and `outside` .md ones below it (--glob '*.txt' leaves those out)."""
    docs: dict[str, str | bytes] = {f"sub/{name}": text for name, text in text_docs(30).items()}
    docs |= {f"notes{i}.md": f"notes {i}: " + "words that are not the corpus " * 8 for i in range(outside)}
    return write_docs(tmp_path / "in", docs)


def _glob_prepare(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, outside: int = 1
) -> tuple[int, str, Path]:
    return _prepare(
        capsys, tmp_path, str(_corpus(tmp_path, outside)), "--glob", "*.txt", "--val-fraction", "0.3"
    )


def _join_prepare(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> tuple[int, str, Path]:
    argv = (
        "--format",
        "prompt-completion",
        "--join",
        "chat-turns",
        "--pack-len",
        "96",
        "--val-fraction",
        "0.3",
    )
    return _prepare(capsys, tmp_path, str(PROMPT_COMPLETION), *argv)


def _config(record: Path) -> dict[str, Any]:
    return json.loads((record / "metadata.json").read_text())["config"]


def _gate(record: Path, gate_id: str) -> dict[str, Any]:
    gates = json.loads((record / "metadata.json").read_text())["gates"]
    return next(g for g in gates if g["id"] == gate_id)


def _stated() -> list[str]:
    return [key for _since, keys in STATED_OPTIONS["prepare"] for key in keys]


@pytest.mark.holds("GATE-DATA-014")
def test_a_glob_prepare_states_every_option_and_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """Benign: --glob '*.txt' reads the 30 .txt files only; the config states every shaping option,
    the gate's check inputs holds (30 files, none outside), and the integrity check is clean."""
    code, err, record = _glob_prepare(capsys, tmp_path)
    assert code == 0, err
    config = _config(record)
    assert set(_stated()) <= set(config), sorted(set(_stated()) - set(config))
    assert config["glob"] == "*.txt" and config["format"] == "auto" and config["join"] is None
    measured = _gate(record, "GATE-DATA-014")["measured"]
    assert (measured["glob"], measured["files_read"], measured["outside_glob"]) == ("*.txt", 30, [])
    assert findings(record) == []


def test_a_glob_that_never_reaches_the_prepare_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the CLI hands prepare_corpus no glob: the .md file enters the corpus, every gate passes
    (nothing read is outside the glob the walk was given), and the record's config.glob is held to
    the manifest's read settings and GATE-DATA-014's files read to the manifest's sources."""
    monkeypatch.setattr(prepare_module, "prepare_corpus", _forced(prepare_module.prepare_corpus, glob=None))
    code, err, record = _glob_prepare(capsys, tmp_path)
    assert code == 0, err
    found = findings(record)
    assert any('config.glob is "*.txt", but its artifacts derive null' in line for line in found), found


def _walk_ignoring_the_glob(monkeypatch: pytest.MonkeyPatch) -> None:
    """A walk that takes every file below a directory input, whatever its pattern (the reader bug
    GATE-DATA-014's check inputs measures apart from the walk)."""
    walk = corpus_module._walk

    def every_file(spec: corpus_module.InputSpec, skip: Path, special: Any) -> Any:
        return walk(corpus_module.InputSpec(spec.source, spec.path, corpus_module.ALL_FILES), skip, special)

    monkeypatch.setattr(corpus_module, "_walk", every_file)


@pytest.mark.gate("GATE-DATA-014")
def test_a_file_read_outside_the_glob_halts_the_prepare(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """One file beyond the glob (the planted walk reads the single .md file): exit 3 naming the gate
    and the file, nothing published; the halted record names it too."""
    _walk_ignoring_the_glob(monkeypatch)
    code, err, record = _glob_prepare(capsys, tmp_path)
    assert code == 3 and "GATE-DATA-014" in err and "notes0.md" in err, err
    assert not (tmp_path / "d" / "manifest.json").exists()
    assert _gate(record, "GATE-DATA-014")["measured"]["outside_glob"] == ["notes0.md"]


@pytest.mark.holds("GATE-DATA-014")
def test_a_walk_that_ignores_the_glob_where_every_file_matches_passes(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Just inside: the same planted walk over a corpus whose every file the glob admits reads
    nothing more, and the prepare passes."""
    _walk_ignoring_the_glob(monkeypatch)
    code, err, record = _glob_prepare(capsys, tmp_path, outside=0)
    assert code == 0, err
    assert findings(record) == []


def test_a_join_that_never_reaches_the_prepare_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Planted: the CLI hands prepare_sft no join: the examples are joined as TRL joins them (no chat
    turns), and the record's config.join (chat-turns) is held to the manifest's sft.join."""
    code, err, record = _join_prepare(capsys, tmp_path / "base")
    assert code == 0, err
    assert _config(record)["join"] == "chat-turns" and findings(record) == []
    monkeypatch.setattr(sft_prepare_module, "prepare_sft", _forced(sft_prepare_module.prepare_sft, join=None))
    code, err, record = _join_prepare(capsys, tmp_path / "mutant")
    assert code == 0, err
    found = findings(record)
    assert any(
        'config.join is "chat-turns", but its artifacts derive "concatenate"' in line for line in found
    ), found


def _text_argv(tmp_path: Path) -> tuple[str, ...]:
    corpus = write_docs(
        tmp_path / "in", {name: text.replace(" ", " <s> ", 3) for name, text in text_docs(30).items()}
    )
    return (str(corpus), "--val-fraction", "0.3")


# A mutant of each option the CLI hands the prepare: (command line, where it is handed, the value the
# mutant hands instead, what the checker then says).
CORPUS_MUTANTS: list[tuple[tuple[str, ...], str, Any, str]] = [
    (("--doc-sep", " <s> "), "layout", "doc_sep", 'config.doc_sep is " <s> ", but its artifacts derive null'),
    (("--doc-bytes", "200"), "layout", "doc_bytes", "config.doc_bytes is 200, but its artifacts derive"),
    (
        ("--shard-tokens", "500"),
        "shard_tokens",
        1 << 20,
        "config.shard_tokens is 500, but its artifacts derive",
    ),
    (
        ("--dtype", "uint32"),
        "dtype",
        "auto",
        "config.dtype is 'uint32', but manifest.json's shards are 'uint16'",
    ),
    (("--format", "text"), "layout", "format", 'config.format is "text", but its artifacts derive "auto"'),
]


@pytest.mark.parametrize(("argv", "handed", "value", "said"), CORPUS_MUTANTS, ids=lambda v: str(v)[:24])
def test_a_corpus_option_that_never_reaches_the_prepare_is_caught(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    argv: tuple[str, ...],
    handed: str,
    value: Any,
    said: str,
) -> None:
    """An option that never reaches the prepare, over a corpus's other options: the option given, the prepare
    handed the default (for --doc-sep, --doc-bytes and --format, the Layout built without it), and the checker
    holds the stated option to the manifest."""
    prepare = prepare_module.prepare_corpus
    if handed == "layout":

        def planted(*args: Any, **kwargs: Any) -> Any:
            layout = kwargs["layout"]
            kept = {"doc_sep": None, "doc_bytes": prepare_module.Layout().doc_bytes, "format": "auto"}[value]
            kwargs["layout"] = prepare_module.Layout(**{**vars(layout), value: kept})
            return prepare(*args, **kwargs)
    else:
        planted = _forced(prepare, **{handed: value})
    code, err, record = _prepare(capsys, tmp_path / "base", *_text_argv(tmp_path / "base"), *argv)
    assert code == 0 and findings(record) == [], err
    monkeypatch.setattr(prepare_module, "prepare_corpus", planted)
    code, err, record = _prepare(capsys, tmp_path / "mutant", *_text_argv(tmp_path / "mutant"), *argv)
    assert code == 0, err
    found = findings(record)
    assert any(said in line for line in found), found


SFT_MUTANTS: list[tuple[Path, tuple[str, ...], dict[str, Any], str]] = [
    (
        PROMPT_COMPLETION,
        ("--format", "prompt-completion", "--pack-len", "96"),
        {"pack_len": 128},
        "config.pack_len is 96",
    ),
    (PREFS, ("--format", "prefs", "--pack-len", "48"), {"pack_len": 64}, "config.pack_len is 48"),
]


@pytest.mark.parametrize(("data", "argv", "kept", "said"), SFT_MUTANTS, ids=["prompt-completion", "prefs"])
def test_a_fine_tuning_option_that_never_reaches_the_prepare_is_caught(
    capsys: pytest.CaptureFixture[str],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    data: Path,
    argv: tuple[str, ...],
    kept: dict[str, Any],
    said: str,
) -> None:
    """A fine-tuning option that never reaches the prepare, over --pack-len (a prefs window holds two rows of
    --pack-len)."""
    code, err, record = _prepare(capsys, tmp_path / "base", str(data), *argv, "--val-fraction", "0.3")
    assert code == 0 and findings(record) == [], err
    monkeypatch.setattr(sft_prepare_module, "prepare_sft", _forced(sft_prepare_module.prepare_sft, **kept))
    code, err, record = _prepare(capsys, tmp_path / "mutant", str(data), *argv, "--val-fraction", "0.3")
    assert code == 0, err
    found = findings(record)
    assert any(said in line for line in found), found


def _edit(record: Path, change: Callable[[dict[str, Any]], None]) -> list[str]:
    path = record / "metadata.json"
    data = json.loads(path.read_text())
    change(data["config"])
    path.write_text(json.dumps(data))
    return findings(record)


def test_a_stated_option_restated_or_left_out_is_caught(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """A forger who edits config.glob is held to --glob (and the manifest); one who drops it is named."""
    record = _glob_prepare(capsys, tmp_path)[2]
    found = _edit(record, lambda config: config.update(glob="*"))
    assert any("config.glob is '*', but its command line gives '*.txt'" in line for line in found), found
    found = _edit(record, lambda config: config.pop("glob"))
    assert any("config states no glob" in line for line in found), found


def test_a_filters_file_without_filter_names_is_no_finding(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    """config.filters is the --filter list: a --filters FILE given alone is not held against it (the
    check of a config key held as none would name it otherwise)."""
    settings = tmp_path / "filters.yaml"
    settings.write_text("oversize:\n  max_bytes: 4194304\n")
    code, err, record = _prepare(capsys, tmp_path, *_text_argv(tmp_path), "--filters", str(settings))
    assert code == 0, err
    assert findings(record) == []


@pytest.mark.parametrize(
    "option",
    [
        ("--dtype", "uint32"),
        ("--shard-tokens", "500"),
        ("--bpe-sample", "1M"),
        ("--shard-tokens", "67108864"),  # typed at its default: still an option the set never uses
        ("--doc-bytes", "1M"),
    ],
)
def test_a_fine_tuning_prepare_refuses_the_corpus_options_it_never_uses(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, option: tuple[str, str]
) -> None:
    """--format prompt-completion writes its shards by its own rule: a corpus option it would ignore is
    refused, typed at its default too (its record states none of them)."""
    code, err = run_cli(
        capsys,
        "prepare",
        str(PROMPT_COMPLETION),
        "--format",
        "prompt-completion",
        *option,
        "--out",
        str(tmp_path / "d"),
    )
    assert code != 0 and option[0] in err, err


@pytest.mark.parametrize(
    "argv",
    [
        (str(DATA / "chat_small.jsonl"), "--format", "chat", "--pack-len", "64"),
        (str(PROMPT_COMPLETION), "--format", "prompt-completion"),
        (str(PREFS), "--format", "prefs"),
    ],
    ids=["chat", "prompt-completion", "prefs"],
)
def test_a_fine_tuning_prepare_as_made_passes_the_check(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, argv: tuple[str, ...]
) -> None:
    """The corpus read settings a fine-tuning set never uses are stated as none, which the manifest
    decides (contracts.derive.prepare_options), not the parser's defaults for a corpus."""
    code, err, record = _prepare(capsys, tmp_path, *argv)
    assert code == 0, err
    unused = ("doc_bytes", "shard_tokens", "bpe_sample")
    assert [_config(record)[key] for key in unused] == [None, None, None]
    assert findings(record) == []
