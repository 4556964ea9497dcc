"""The chat template `stack synth` prompts a model in: the one its examples would be rendered by.

Synth continues the user turn's prefix, so a synth that takes the default template whatever the
checkpoint shipped would ask a model tuned on another format in a format it never saw, silently.
It follows prepare's rule (stack.data.sft_prepare.chosen_renderer), and refuses a model shipping a
Jinja template of its own.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from stack.cli import main
from stack.data.chat_jinja import STATE_KEY, jinja_of
from stack.data.sft_template import TEMPLATES_DIR, TemplateFile, load_template
from tests.support.trace_support import save_run, tiny_model

LOOSE = ("--samples", "2", "--min-chars", "1", "--min-coherence", "0.001", "--max-instruction-tokens", "8")


def _shipping(root: Path, jinja: str) -> Path:
    """A random byte model whose checkpoint ships `jinja` as its chat template."""
    record = {"name": "custom", "sha256": "0" * 64, "jinja": jinja}
    save_run(root / "model", tiny_model(ctx=128), extra={STATE_KEY: record})
    return root / "model"


def _custom(root: Path) -> Path:
    """A stack template file of another format than the default's."""
    spec = yaml.safe_load((TEMPLATES_DIR / "chat.yaml").read_text(encoding="utf-8"))
    spec["name"] = "bracketed"
    spec["roles"]["user"]["prefix"] = "[Q] "
    path = root / "bracketed.yaml"
    path.write_text(yaml.safe_dump(spec), encoding="utf-8")
    return path


def test_a_model_shipping_the_default_is_asked_in_it(tmp_path: Path) -> None:
    """Tuned on the default's chats: synth prompts it in the default, no option needed."""
    default = load_template(None)
    model = _shipping(tmp_path, jinja_of(default.spec))
    assert main(["synth", str(model), "--out", str(tmp_path / "out"), *LOOSE]) == 0
    sidecar = json.loads((tmp_path / "out" / "synth.json").read_text())
    assert sidecar["template"]["sha256"] == default.sha256


def test_a_model_shipping_another_format_is_refused_without_template(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Tuned on a custom format: asked in the default's `User: ` it would write in a format it never
    saw; refused in one line naming --template; with it, synth runs in that format."""
    custom = _custom(tmp_path)
    model = _shipping(tmp_path, jinja_of(TemplateFile.model_validate(yaml.safe_load(custom.read_text()))))
    assert main(["synth", str(model), "--out", str(tmp_path / "refused"), *LOOSE]) == 2
    err = capsys.readouterr().err
    assert "ships its own chat template" in err and "--template FILE" in err
    assert not (tmp_path / "refused").exists()
    out = tmp_path / "asked"
    assert main(["synth", str(model), "--out", str(out), "--template", str(custom), *LOOSE]) == 0
    assert (
        json.loads((out / "synth.json").read_text())["template"]["sha256"]
        == load_template(str(custom)).sha256
    )
