"""The site's drawings kept on disk between builds, under the key of what they are drawn from.

`make test` renders the site twice (the site tests' build with a fresh run in it, then `make
site`), and every render draws some 570 plots of the ledger's runs and highlights some 190 source
files: most of a render's time, though a committed run's plots never change. A function wrapped
in `kept` is pure (its text is a function of its JSON-able arguments and of the code that draws
it), so its result is filed under the sha256 of both: the arguments, the bytes of the module that
defines it and the versions of the drawing libraries. Changed code or a changed library gives new
keys, so a stale drawing is never read; `rm -rf .cache/site` reclaims the space.
"""

from __future__ import annotations

import functools
import hashlib
import inspect
import json
import os
import tempfile
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import ParamSpec, TypeVar

from contracts.evidence import REPO_ROOT

CACHE_DIR = REPO_ROOT / ".cache" / "site"
# The libraries whose output the kept texts are: a new version may draw or highlight otherwise.
LIBRARIES = ("matplotlib", "pygments")

P = ParamSpec("P")
T = TypeVar("T")


@functools.cache
def _code_stamp(module_file: str) -> str:
    """The bytes of the drawing module and the libraries' versions, digested once a process."""
    digest = hashlib.sha256(Path(module_file).read_bytes())
    for library in LIBRARIES:
        digest.update(f"{library}=={version(library)}".encode())
    return digest.hexdigest()


def _write(path: Path, text: str) -> None:
    """Write `text` whole or not at all (two test workers may render at once); a cache that
    cannot be written only costs the next build the drawing again."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        handle, temporary = tempfile.mkstemp(dir=path.parent, suffix=".tmp")
        with os.fdopen(handle, "w", encoding="utf-8") as out:
            out.write(text)
        os.replace(temporary, path)
    except OSError:
        return


def kept(function: Callable[P, T]) -> Callable[P, T]:
    """`function`, its JSON-serialisable result read from the cache when it was drawn before."""
    module_file = inspect.getsourcefile(function)
    assert module_file is not None, function

    @functools.wraps(function)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> T:
        inputs = json.dumps([function.__qualname__, args, kwargs], sort_keys=True)
        key = hashlib.sha256(f"{_code_stamp(module_file)}\n{inputs}".encode()).hexdigest()
        path = CACHE_DIR / function.__name__ / f"{key}.json"
        if path.is_file():
            return json.loads(path.read_text(encoding="utf-8"))
        result = function(*args, **kwargs)
        _write(path, json.dumps(result))
        return result

    return wrapper
