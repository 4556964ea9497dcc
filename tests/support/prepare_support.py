"""Documents written to disk and `stack prepare` run in this process, for the tests of a prepare."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from stack.cli import main


def write_docs(root: Path, docs: dict[str, str | bytes]) -> Path:
    """Write {relative path: text or bytes} under root."""
    for rel, content in docs.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_text(content, encoding="utf-8")
    return root


def text_docs(n: int, seed: int = 0) -> dict[str, str]:
    """n distinct documents of random words."""
    rng = np.random.default_rng(seed)
    words = ["alpha", "beta", "gamma", "delta", "löwe", "数据", "x", "yield", "return", "\n"]
    return {f"doc{i:03d}.txt": f"doc {i}: " + " ".join(rng.choice(words, 40 + i)) for i in range(n)}


def run_cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """Exit code and stderr of `stack ARGV`; a failure must be one line without a traceback."""
    code = main(list(argv))
    err = capsys.readouterr().err
    if code:
        assert len(err.strip().splitlines()) == 1, err
        assert "Traceback" not in err
    return code, err
