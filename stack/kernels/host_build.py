"""The CPU kernels' C sources built into shared libraries on first use, and loaded by ctypes.

Why built here, not shipped: each kernel (host_stats.c, host_checks.c) is a page or two of plain C
with no Python or torch headers, so the system C compiler (`$CC`, else `cc`) builds it in under a
second, once per machine. A library is cached under `$XDG_CACHE_HOME/gatestack/` (else
`~/.cache/gatestack/`), named by a digest of the source, the flags and the platform, and written
under a temporary name then renamed, so concurrent first uses never load half a file. ctypes
releases the GIL during each call. One build serves every x86-64 CPU: each kernel chooses its
AVX-512 path when it loads.

Threads: a kernel that asks for OpenMP (`openmp=True`) is built with it when torch's own parallel
backend is OpenMP, so its `omp parallel` runs on the thread pool torch's operators use (the same
libgomp.so.1, which the loader shares) instead of starting threads of its own that would contend
with torch's. A compiler without OpenMP gives a one-thread build.

Where there is no working compiler, `loaded` says why instead of a library, and the caller's torch
ops do the work.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import platform
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Callable
from pathlib import Path

import torch

BASE_FLAGS = ("-O3", "-fPIC", "-shared", "-ffp-contract=off")


def cache_dir() -> Path:
    """Where built kernels are kept (XDG's user cache)."""
    root = os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache"
    return Path(root) / "gatestack"


def compiler() -> str | None:
    """The C compiler's path: `$CC`, else `cc`, on PATH; None when there is none."""
    return shutil.which(os.environ.get("CC", "cc"))


def flag_sets(openmp: bool) -> list[tuple[str, ...]]:
    """The builds to try, best first: with OpenMP where it is asked for and torch runs on OpenMP,
    then without."""
    if openmp and "parallel backend: OpenMP" in torch.__config__.parallel_info():
        return [(*BASE_FLAGS, "-fopenmp"), BASE_FLAGS]
    return [BASE_FLAGS]


def build(source: Path, cc: str, flags: tuple[str, ...], directory: Path) -> Path:
    """`source`'s shared library in `directory`, compiled by `cc` unless it is there already.

    Raises OSError (a directory it cannot write) or CalledProcessError (the compiler refused).
    """
    digest = hashlib.sha256(source.read_bytes())
    digest.update(f"{cc} {' '.join(flags)} {sys.platform}-{platform.machine()}".encode())
    target = directory / f"{source.stem}-{digest.hexdigest()[:16]}.so"
    if target.exists():
        return target
    directory.mkdir(parents=True, exist_ok=True)
    fd, partial = tempfile.mkstemp(dir=directory, prefix=target.stem, suffix=".part")
    os.close(fd)
    try:
        command = [cc, *flags, str(source), "-o", partial, "-lm"]
        subprocess.run(command, check=True, capture_output=True, text=True)
        os.replace(partial, target)
    finally:
        Path(partial).unlink(missing_ok=True)
    return target


# Declares a loaded library's functions' signatures (argtypes, restype), returning it.
Declare = Callable[[ctypes.CDLL], ctypes.CDLL]


def _built(source: Path, cc: str, flags: tuple[str, ...], declare: Declare) -> ctypes.CDLL:
    try:
        return declare(ctypes.CDLL(str(build(source, cc, flags, cache_dir()))))
    except OSError:  # an unwritable cache or a damaged file in it: build for this process only
        with tempfile.TemporaryDirectory(prefix="gatestack-kernels-") as scratch:
            # once loaded, the library outlives its file
            return declare(ctypes.CDLL(str(build(source, cc, flags, Path(scratch)))))


def loaded(source: Path, declare: Declare, *, openmp: bool = False) -> ctypes.CDLL | str:
    """The library built from `source`, its functions declared by `declare`, or why there is none
    (the caller's torch ops then do its work)."""
    cc = compiler()
    if cc is None:
        return f"no C compiler ({os.environ.get('CC', 'cc')}) on PATH"
    failure = ""
    for flags in flag_sets(openmp):
        try:
            return _built(source, cc, flags, declare)
        except subprocess.CalledProcessError as error:
            lines = (error.stderr or "").strip().splitlines()
            failure = f"{cc} did not build {source.name}: {lines[0] if lines else error}"
        except OSError as error:
            failure = f"the C kernel {source.name} could not be built or loaded: {error}"
    return failure
