"""Optional dependencies a test module needs, looked up without importing them."""

from __future__ import annotations

from importlib.util import find_spec

import pytest


def requires(module: str) -> pytest.MarkDecorator:
    """Skip the marked tests where `module` is not installed.

    The package is found, not imported: importing peft or transformers takes seconds, every
    pytest-xdist worker collects every test module, and only the worker that runs these tests needs
    the package (the tests import it where they use it)."""
    return pytest.mark.skipif(find_spec(module) is None, reason=f"{module} is not installed")
