"""`stack export`, `stack import-hf` and `stack trace` outputs: replace only what they wrote.

Every refusal is checked against a sha256 snapshot of the directory it was given: what was there
before is there after, byte for byte.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from safetensors.torch import load_file, save_file

from contracts.errors import EXIT_BAD_INPUT
from stack.cli import main
from tests.support.export_support import make_checkpoint
from tests.support.tree_snapshot import snapshot

PROMPT = "outputs are never lost"


def run(capsys: pytest.CaptureFixture[str], *argv: str | Path) -> tuple[int, str]:
    """Exit code and stderr of `stack ARGV`; a failure must be exactly one line."""
    code = main([str(a) for a in argv])
    err = capsys.readouterr().err
    if code:
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    return code, err


def refused(
    capsys: pytest.CaptureFixture[str], argv: tuple[str | Path, ...], needle: str, where: Path
) -> None:
    """`stack ARGV` exits 2 with `needle` in its one line, and `where` is byte for byte unchanged."""
    before = snapshot(where)
    code, err = run(capsys, *argv)
    assert code == EXIT_BAD_INPUT and needle in err, err
    assert snapshot(where) == before


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_checkpoint(tmp_path_factory.mktemp("ckpt"))


@pytest.fixture(scope="module")
def earlier(checkpoint: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An hf export made by `stack export`, to copy from."""
    out = tmp_path_factory.mktemp("export") / "hf"
    assert main(["export", str(checkpoint), "--format", "hf", "--out", str(out)]) == 0
    return out


def export_force(checkpoint: Path, out: Path) -> tuple[str | Path, ...]:
    return ("export", checkpoint, "--format", "hf", "--out", out, "--force")


# -- export --force -------------------------------------------------------------------------------


def test_export_force_refuses_a_dir_that_merely_holds_an_export_json(
    checkpoint: Path, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    thesis = tmp_path / "thesis"
    thesis.mkdir()
    (thesis / "thesis.tex").write_text("\\chapter{Four years}")
    shutil.copy(earlier / "export.json", thesis / "export.json")
    refused(capsys, export_force(checkpoint, thesis), "thesis.tex is not part of the earlier output", thesis)


@pytest.mark.parametrize("added", ["notes.txt", "drafts/notes.txt"])
def test_export_force_refuses_a_users_file_added_to_an_earlier_export(
    added: str, checkpoint: Path, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hf"
    shutil.copytree(earlier, out)
    (out / added).parent.mkdir(exist_ok=True)
    (out / added).write_text("mine")
    named = out / added.split("/")[0]  # a user's directory is named as a whole
    refused(capsys, export_force(checkpoint, out), f"{named} is not part of the earlier output", out)


def test_export_force_refuses_a_file_changed_since_the_export(
    checkpoint: Path, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hf"
    shutil.copytree(earlier, out)
    config = json.loads((out / "config.json").read_text())
    (out / "config.json").write_text(json.dumps({**config, "note": "tuned by hand"}))
    refused(capsys, export_force(checkpoint, out), f"{out / 'config.json'} was changed since", out)


def test_export_force_replaces_an_unchanged_earlier_export(
    checkpoint: Path, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "hf"
    shutil.copytree(earlier, out)
    assert (out / "metadata.json").is_file()  # the evidence record of the earlier export is its own
    assert run(capsys, *export_force(checkpoint, out))[0] == 0
    assert json.loads((out / "export.json").read_text())["status"] == "verified"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["hf"]  # nothing set aside is left


@pytest.mark.parametrize(
    ("out", "problem"), [("file/hf", "cannot be created: "), ("link", "is a symbolic link")]
)
def test_export_out_under_a_file_or_a_link_is_one_line(
    out: str, problem: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("a user's file")
    (tmp_path / "link").symlink_to(tmp_path / "nowhere")
    argv = ("export", checkpoint, "--format", "hf", "--out", tmp_path / out)
    refused(capsys, argv, f"--out {tmp_path / out} {problem}", tmp_path)


# -- import-hf ----------------------------------------------------------------------------------------


def shard_weights(hf_dir: Path) -> dict[str, str]:
    """Split model.safetensors into two shards and an index, as save_pretrained does for large models."""
    tensors = load_file(hf_dir / "model.safetensors")
    names = sorted(tensors)
    files = {"model-00001-of-00002.safetensors": names[::2], "model-00002-of-00002.safetensors": names[1::2]}
    for file, keys in files.items():
        save_file({k: tensors[k] for k in keys}, str(hf_dir / file), metadata={"format": "pt"})
    (hf_dir / "model.safetensors").unlink()
    weight_map = {key: file for file, keys in files.items() for key in keys}
    write_index(hf_dir, weight_map)
    return weight_map


def write_index(hf_dir: Path, weight_map: dict[str, str]) -> None:
    index = {"metadata": {"total_size": 0}, "weight_map": weight_map}
    (hf_dir / "model.safetensors.index.json").write_text(json.dumps(index))


def test_import_reads_a_sharded_checkpoint_and_names_a_missing_shard(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sharded"
    shutil.copytree(earlier, source)
    shard_weights(source)
    assert run(capsys, "import-hf", source, "--out", tmp_path / "whole")[0] == 0  # both shards there
    (source / "model-00002-of-00002.safetensors").unlink()  # an interrupted download
    argv = ("import-hf", source, "--out", tmp_path / "back")
    refused(
        capsys, argv, "model-00002-of-00002.safetensors is missing: model.safetensors.index.json", tmp_path
    )


@pytest.mark.parametrize("escape", ["../outside.safetensors", "/tmp/outside.safetensors"])
def test_import_refuses_a_weight_map_that_leaves_the_model_directory(
    escape: str, earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = tmp_path / "sharded"
    shutil.copytree(earlier, source)
    weight_map = shard_weights(source)
    write_index(source, {**weight_map, next(iter(weight_map)): escape})
    argv = ("import-hf", source, "--out", tmp_path / "back")
    refused(capsys, argv, f"names weight file {escape!r}, which is outside", tmp_path)


def test_import_force_refuses_a_users_file_added_to_an_earlier_import(
    earlier: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "back"
    assert run(capsys, "import-hf", earlier, "--out", out)[0] == 0
    (out / "checkpoints" / "README").write_text("mine")
    argv = ("import-hf", earlier, "--out", out, "--force")
    refused(capsys, argv, "README is not part of the earlier output", out)


# -- trace outputs ------------------------------------------------------------------------------------


@pytest.mark.parametrize("option", ["--json", "--csv", "--dump"])
def test_trace_replaces_an_output_file_only_with_force_and_only_its_own(
    option: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    target = tmp_path / "out.file"
    target.write_text("a user's file\n")
    trace = ("trace", checkpoint, "--prompt", PROMPT, "--out", tmp_path / "rec", option, target)
    refused(capsys, trace, f"{option} {target} already exists", tmp_path)
    refused(capsys, (*trace, "--force"), f"refusing to replace {target}: it is not a file", tmp_path)
    target.unlink()
    assert run(capsys, *trace)[0] == 0
    written = target.read_bytes()
    shutil.rmtree(tmp_path / "rec")
    assert run(capsys, *trace, "--force")[0] == 0  # a file the trace wrote is its to replace
    assert target.read_bytes() == written


def test_trace_replaces_an_out_dir_only_with_force_and_only_its_own_record(
    checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = tmp_path / "rec"
    trace = ("trace", checkpoint, "--prompt", PROMPT, "--out", out)
    assert run(capsys, *trace)[0] == 0
    refused(capsys, trace, "already exists and is not empty", out)
    assert run(capsys, *trace, "--force")[0] == 0
    assert sorted(p.name for p in out.iterdir()) == ["metadata.json", "trace.json"]
    (out / "analysis.md").write_text("mine")
    refused(capsys, (*trace, "--force"), "analysis.md is not part of the earlier output", out)
    (out / "analysis.md").unlink()
    (out / "trace.json").write_text("{}")
    refused(capsys, (*trace, "--force"), "trace.json was changed since it was written", out)
    (out / "metadata.json").unlink()
    (out / "trace.json").write_text("\\chapter{One}")
    refused(capsys, (*trace, "--force"), "holds no metadata.json of one", out)


@pytest.mark.parametrize("option", ["--json", "--csv", "--dump", "--out"])
def test_a_trace_output_under_a_file_is_one_line_naming_the_option(
    option: str, checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file").write_text("a user's file")
    target = tmp_path / "file" / "r"
    record = () if option == "--out" else ("--out", tmp_path / "rec")
    argv = ("trace", checkpoint, "--prompt", PROMPT, option, target, *record)
    refused(capsys, argv, f"{option} {target} cannot be created: {tmp_path / 'file'} is a file", tmp_path)
