"""Output directories of export and import: refused when in use, assembled aside, then moved in.

A command builds its output in a hidden sibling directory and renames it into place at the
end, so an interrupted export leaves no half-written DIR. An existing non-empty DIR is
replaced only with `--force`, and only when it holds the record of an earlier export or
import (export.json / import.json): a mistyped `--out ~ --force` is refused, not obeyed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import atomic_write_bytes, now, sha256_file

UNVERIFIED = ".unverified"


def check_out(out: Path, force: bool, record_name: str) -> None:
    """Refuse an --out that is a file, or a non-empty directory we may not replace."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a directory path")
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise BadInput(f"{out} exists and is not empty; choose another --out, or --force to replace it")
    if not (out / record_name).is_file():
        raise BadInput(
            f"--force replaces only an earlier output of this command, and {out} holds no {record_name}; "
            "choose another --out"
        )


@contextlib.contextmanager
def staging(out: Path) -> Iterator[Path]:
    """A fresh hidden directory beside `out` to build in; removed if the build raises."""
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.parent / f".{out.name}.tmp-{os.getpid()}"
    if tmp.exists():
        shutil.rmtree(tmp)  # our own leftover from an earlier crash of this process id
    tmp.mkdir()
    try:
        yield tmp
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def publish(tmp: Path, out: Path) -> None:
    """Move the built directory into place (replacing an earlier output `check_out` allowed)."""
    out = Path(out)
    if out.exists():
        shutil.rmtree(out)
    os.replace(tmp, out)


def unverified(path: Path) -> Path:
    """`model.int8.onnx` → `model.int8.unverified.onnx`: the name of a file whose check has not passed."""
    return path.with_name(f"{path.stem}{UNVERIFIED}{path.suffix}")


def file_hashes(root: Path, skip: str) -> dict[str, dict[str, Any]]:
    """sha256 and size of every file under `root` (relative posix paths), `skip` excepted."""
    files = sorted(p for p in Path(root).rglob("*") if p.is_file() and p.name != skip)
    return {
        p.relative_to(root).as_posix(): {"sha256": sha256_file(p), "bytes": p.stat().st_size} for p in files
    }


def write_record(root: Path, name: str, record: dict[str, Any]) -> None:
    """Write the command's evidence file, with the hashes of everything else in `root`."""
    full = {**record, "created": now().isoformat(), "files": file_hashes(root, skip=name)}
    atomic_write_bytes(Path(root) / name, (json.dumps(full, indent=1, sort_keys=True) + "\n").encode())
