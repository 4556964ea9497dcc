"""Retire ledger records (or a withdrawn release's directory) from the working tree, with proof.

    python tools/retire.py RUN_ID [RUN_ID ...] --reason TEXT
    python tools/retire.py --path evidence/models/NAME-VERSION --reason TEXT

Each record is verified before it leaves: the integrity check over the repository must find nothing
wrong with it (its verdicts re-judged, its numbers re-derived, under today's spec), and after it
left, nothing may have broken (a release, a page of the docs or a live record's lineage that needs
it). Then an entry in evidence/retired.yaml names its directory, HEAD (the last commit that carries
it), the git blob id of each of its files and the reason (contracts/retirement.py), and the
directory is removed; commit both together. Only committed, unchanged files are retired: git must
hold the bytes the entry pins. Exit 0 when done, 2 when refused (one line says why; nothing changed).
"""

from __future__ import annotations

import argparse
import shutil
import subprocess
import sys
from pathlib import Path

from pydantic import ValidationError

from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT
from contracts.retirement import RETIRED_FILE, Retired, read_retirements, render_retirements
from contracts.spec import load_spec_from
from tools.integrity.check import run_checks
from tools.integrity.retirement import trees_at

RUNS = "evidence/runs"


def refuse(message: str) -> int:
    print(f"retire: {message}", file=sys.stderr)
    return 2


def _head(root: Path) -> str:
    return subprocess.run(
        ["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True, check=True
    ).stdout.strip()


def _unchanged(root: Path, paths: list[str]) -> bool:
    """Whether every file under `paths` is committed and unchanged (git holds the working bytes)."""
    status = subprocess.run(
        ["git", "-C", str(root), "status", "--porcelain", "--", *paths],
        capture_output=True,
        text=True,
        check=False,
    )
    return status.returncode == 0 and not status.stdout.strip()


def _naming(lines: list[str], paths: list[str]) -> list[str]:
    """The violation lines that name one of `paths` or the run id of one."""
    names = [p for p in paths] + [Path(p).name for p in paths]
    return [line for line in lines if any(f"{n}/" in line or f"[{n}]" in line for n in names)]


def retire(root: Path, paths: list[str], reason: str) -> int:
    """Retire the directories `paths` of the repository at `root` (module docstring)."""
    for path in paths:
        if not (root / path).is_dir():
            return refuse(f"{path} is not a directory of this repository")
    if not _unchanged(root, paths):
        return refuse("some files to retire are uncommitted or edited; commit them first, so git holds them")
    before = [f.line() for f in run_checks(root, []).violations]
    if broken := _naming(before, paths):
        return refuse(f"the check finds {len(broken)} problem(s) with them; first: {broken[0]}")
    head = _head(root)
    tree = trees_at(root, [head], ["evidence"])[head] or {}
    try:
        version = load_spec_from(root / "spec").version
        retirements = read_retirements(root)
        for path in paths:
            files = {n.removeprefix(f"{path}/"): blob for n, blob in tree.items() if n.startswith(f"{path}/")}
            retirements.retired.append(
                Retired(path=path, commit=head, files=files, reason=reason, verified_under=version)
            )
    except BadInput as exc:
        return refuse(str(exc))
    except ValidationError as exc:
        problem = exc.errors()[0]["msg"]
        return refuse(f"{problem}; name a record of {RUNS}/ or a withdrawn release's directory")
    old_text = (root / RETIRED_FILE).read_text(encoding="utf-8") if (root / RETIRED_FILE).is_file() else None
    (root / RETIRED_FILE).write_text(render_retirements(retirements), encoding="utf-8")
    for path in paths:
        shutil.rmtree(root / path)
    after = [f.line() for f in run_checks(root, []).violations]
    if added := [line for line in after if line not in before]:
        subprocess.run(["git", "-C", str(root), "checkout", "HEAD", "--", *paths], check=True)
        if old_text is None:
            (root / RETIRED_FILE).unlink()
        else:
            (root / RETIRED_FILE).write_text(old_text, encoding="utf-8")
        return refuse(
            f"retiring them breaks {len(added)} thing(s), so nothing was retired; first: {added[0]}"
        )
    print(
        f"retired {len(paths)} director{'y' if len(paths) == 1 else 'ies'} into {RETIRED_FILE}; commit both"
    )
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("runs", nargs="*", metavar="RUN_ID", help=f"a record of {RUNS}/")
    parser.add_argument("--path", action="append", default=[], help="a withdrawn release's directory")
    parser.add_argument("--reason", required=True, help="why they leave the working tree")
    parser.add_argument("--root", type=Path, default=REPO_ROOT, help="the repository (default: this one)")
    args = parser.parse_args(argv)
    paths = [f"{RUNS}/{run}" for run in args.runs] + list(args.path)
    if not paths:
        return refuse("name at least one RUN_ID or --path")
    return retire(args.root.resolve(), paths, args.reason)
