"""Output directories of export and import: refused when in use, assembled aside, then moved in.

A command builds its output in a hidden sibling directory and renames it into place at the
end, so an interrupted export leaves no half-written DIR. An existing non-empty DIR is
replaced only with `--force`, and only when everything in it is an earlier output of the same
command, unchanged: the files its record (export.json / import.json) lists with the sha256 it
recorded, the record itself, and the evidence record (metadata.json) that names that record.
A user's file added to DIR, or one edited since, is never deleted: `--force` refuses and names
it. A mistyped `--out ~ --force` is refused, not obeyed.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from contracts.errors import BadInput
from contracts.evidence import EVIDENCE_FILE, atomic_write_bytes, now, read_evidence, sha256_file

UNVERIFIED = ".unverified"
MOVE_AWAY = "move it away or choose another --out"


def check_out(out: Path, force: bool, record_name: str) -> None:
    """Refuse an --out that cannot be written, or a non-empty directory we may not replace."""
    out = Path(out)
    if out.is_symlink():
        raise BadInput(f"--out {out} is a symbolic link; give a real directory path")
    if out.exists() and not out.is_dir():
        raise BadInput(f"--out {out} is a file; give a directory path")
    parent = next(p for p in out.absolute().parents if p.exists())
    if not parent.is_dir():
        raise BadInput(f"--out {out} cannot be created: {parent} is a file; choose another --out")
    if not os.access(parent, os.W_OK | os.X_OK):
        raise BadInput(
            f"--out {out} cannot be written: {parent} does not let this user create files; "
            "fix its permissions or choose another --out"
        )
    if not out.is_dir() or not any(out.iterdir()):
        return
    if not force:
        raise BadInput(f"{out} exists and is not empty; choose another --out, or --force to replace it")
    check_earlier_output(out, record_name)


def _recorded(out: Path, record_name: str) -> dict[str, str]:
    """Relative path → sha256 of every file an earlier output of this command wrote into `out`."""
    record_path = out / record_name
    if not record_path.is_file():
        raise BadInput(
            f"--force replaces only an earlier output of this command, and {out} holds no {record_name}; "
            "choose another --out"
        )
    try:
        files = json.loads(record_path.read_text(encoding="utf-8"))["files"]
        expected = {str(rel): str(entry["sha256"]) for rel, entry in files.items()}
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as exc:
        raise BadInput(
            f"--force replaces only an earlier output it can verify, and {record_path} is not a record "
            f"this command wrote ({type(exc).__name__}); {MOVE_AWAY}"
        ) from None
    expected[record_name] = sha256_file(record_path)
    evidence = out / EVIDENCE_FILE
    if evidence.is_file() and not evidence.is_symlink():
        with contextlib.suppress(BadInput):  # an evidence record that names no such record is not ours
            named = {(a.path, a.sha256) for a in read_evidence(evidence).artifacts}
            if (record_name, expected[record_name]) in named:
                expected[EVIDENCE_FILE] = sha256_file(evidence)
    return expected


def check_earlier_output(out: Path, record_name: str) -> None:
    """Refuse unless everything in `out` is an earlier output of this command, unchanged since."""
    expected = _recorded(out, record_name)
    folders = {parent.as_posix() for rel in expected for parent in Path(rel).parents}
    for root, dirs, files in os.walk(out):
        for name in sorted(dirs) + sorted(files):
            path = Path(root) / name
            rel = path.relative_to(out).as_posix()
            if name in dirs and not path.is_symlink():
                if rel not in folders:
                    raise BadInput(
                        f"refusing to replace {out}: {path} is not part of the earlier output "
                        f"({record_name} lists nothing in it); {MOVE_AWAY}"
                    )
            elif rel not in expected:
                raise BadInput(
                    f"refusing to replace {out}: {path} is not part of the earlier output "
                    f"({record_name} does not list it); {MOVE_AWAY}"
                )
            elif path.is_symlink() or sha256_file(path) != expected[rel]:
                raise BadInput(
                    f"refusing to replace {out}: {path} was changed since the earlier output was written "
                    f"(its sha256 is not the one {record_name} records); {MOVE_AWAY}"
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


def publish(tmp: Path, out: Path, record_name: str) -> None:
    """Move the built directory into place, replacing an earlier output only as `check_out` allowed.

    The earlier output is checked again first (files may have been added while the command ran),
    then set aside, the new one renamed in, and only then the old one removed.
    """
    out = Path(out)
    if not out.exists():
        os.replace(tmp, out)
        return
    if any(out.iterdir()):
        check_earlier_output(out, record_name)
    old = Path(tempfile.mkdtemp(prefix=f".{out.name}.old-", dir=out.parent))
    os.replace(out, old)
    try:
        os.replace(tmp, out)
    except BaseException:
        os.replace(old, out)
        raise
    shutil.rmtree(old)


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
