#!/usr/bin/env python3
"""The wheels a lent GPU machine needs to run the stack, downloaded here for it to carry.

The lent H100/H200 image has torch, triton, numpy, safetensors, tokenizers, pyarrow, rich, PyYAML
and fonttools, but not every package the stack imports (its package list: the device tool's
KINDS.md). Nothing there can reach a registry, so the rest travels with the working tree as
wheels: this downloads them, at the versions this checkout's environment runs (so the GPU runs the
code the tests passed with), for the image's CPython 3.12 on x86-64 Linux, into a folder git
ignores, and prints the line a device command starts with to install them.

    python tools/gpu_wheels.py            # into .cache/gpu-wheels (then carry that path)
"""

from __future__ import annotations

import argparse
import subprocess
import sys
from importlib import metadata
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
# What the stack imports that the image lacks, with what those need that it lacks too.
CARRY = (
    "pydantic",
    "pydantic-core",
    "annotated-types",
    "typing-inspection",
    "icontract",
    "asttokens",
    "tomli-w",
    "zstandard",
    "typing-extensions",  # the image has one, perhaps older than pydantic needs
)
PYTHON = "3.12"  # the image's interpreter
# manylinux tags pip must be told one by one; the image's glibc (2.39) runs them all.
PLATFORMS = ("manylinux_2_28_x86_64", "manylinux_2_17_x86_64", "manylinux2014_x86_64", "manylinux1_x86_64")
INSTALL = (
    "python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site "
    "{folder}/*.whl && export PYTHONPATH=/tmp/site:$PWD || exit;"
)


def pinned(names: tuple[str, ...]) -> list[str]:
    """Each package at the version installed here; one that is not installed is bad input."""
    found = []
    for name in names:
        try:
            found.append(f"{name}=={metadata.version(name)}")
        except metadata.PackageNotFoundError:
            raise SystemExit(
                f"gpu_wheels: {name} is not installed here; run `make .venv/.installed` first"
            ) from None
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--out", type=Path, default=ROOT / ".cache" / "gpu-wheels", help="where the wheels go"
    )
    args = parser.parse_args()
    command = [sys.executable, "-m", "pip", "download", "--quiet", "--no-deps", "--only-binary=:all:"]
    command += ["--python-version", PYTHON, "--implementation", "cp", "-d", str(args.out)]
    command += [flag for platform in PLATFORMS for flag in ("--platform", platform)]
    done = subprocess.run([*command, *pinned(CARRY)], check=False)
    if done.returncode != 0:
        print(f"gpu_wheels: pip download exited {done.returncode}", file=sys.stderr)
        return 1
    folder = args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out
    print(f"carry {folder}; start the device command with:\n  {INSTALL.format(folder=folder)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
