"""Weights files get the permissions every other file of an output gets (stack.outputs.tensor_files).

safetensors writes mode 0600, which would leave a shared run's record readable by colleagues and
its weights not.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from stack.outputs.tensor_files import save_tensors, save_weights
from tests.support.trace_support import tiny_model


@pytest.fixture
def umask_022() -> Iterator[None]:
    before = os.umask(0o022)
    yield
    os.umask(before)


def test_tensors_and_weights_are_written_as_the_umask_allows(tmp_path: Path, umask_022: None) -> None:
    save_tensors({"x": torch.zeros(2)}, tmp_path / "t.safetensors")
    save_weights(tiny_model(), tmp_path / "m.safetensors")
    (tmp_path / "plain.json").write_text("{}")
    modes = {p.name: p.stat().st_mode & 0o777 for p in tmp_path.iterdir()}
    assert modes == {"t.safetensors": 0o644, "m.safetensors": 0o644, "plain.json": 0o644}
