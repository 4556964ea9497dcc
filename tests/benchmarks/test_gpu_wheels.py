"""tools/gpu_wheels.py pins each wheel a lent GPU needs to the version this environment runs."""

from __future__ import annotations

import icontract
import pydantic
import pytest

from tools.gpu_wheels import CARRY, pinned


def test_the_carried_packages_are_pinned_to_the_versions_the_stack_imports_here() -> None:
    """What the GPU runs is what the tests here passed with: the modules' own versions."""
    versions = dict(entry.split("==") for entry in pinned(CARRY))
    assert versions["pydantic"] == pydantic.VERSION
    assert versions["icontract"] == icontract.__version__


def test_a_package_not_installed_here_is_refused_in_one_line() -> None:
    with pytest.raises(SystemExit, match="no-such-package-gs is not installed here"):
        pinned(("no-such-package-gs",))
