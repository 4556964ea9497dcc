"""Retired records held to git: what `evidence/retired.yaml` says against what history holds.

The ledger is append-only (check_integrity.Checker.check_ledger_history): a committed file under
evidence/runs/ is never changed, and removed only when a retirement entry covers it
(contracts/retirement.py). Here each entry is held to git:

* the commit it names is in this repository's history and holds, under the entry's directory,
  exactly the files the entry lists, with the blob ids it lists (so the bytes are pinned);
* the directory is gone from the working tree (a retired record is not also a live one);
* nothing cites it: no release (a withdrawn release's own directory aside) and no page of the docs;
  a record another live record names as its parent is caught by the lineage checks, which find
  the parent missing;
* no committed entry was ever removed or changed (each committed retired.yaml is part of today's).
"""

from __future__ import annotations

import subprocess
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from contracts.errors import BadInput
from contracts.registry import Registry
from contracts.retirement import RETIRED_FILE, Retired, Retirements, parse_retirements


@dataclass(frozen=True)
class Problem:
    """One finding: the entry's directory (or the file it is about) and what is wrong."""

    where: str
    message: str


def _git(root: Path, *args: str, data: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["git", "-C", str(root), *args], input=data, capture_output=True, check=False)


def trees_at(root: Path, commits: Iterable[str], paths: list[str]) -> dict[str, dict[str, str] | None]:
    """commit → {file path: blob id} of everything under `paths` at that commit (None when git does
    not know the commit), one `git ls-tree` a commit."""
    found: dict[str, dict[str, str] | None] = {}
    for commit in sorted(set(commits)):
        proc = _git(root, "ls-tree", "-r", "-z", "--full-tree", commit, "--", *paths)
        if proc.returncode != 0:
            found[commit] = None
            continue
        files = {}
        for line in proc.stdout.decode("utf-8", "replace").split("\0"):
            meta, _, path = line.partition("\t")
            parts = meta.split()
            if len(parts) == 3 and parts[1] == "blob":
                files[path] = parts[2]
        found[commit] = files
    return found


def entry_files(entry: Retired, tree: dict[str, str]) -> dict[str, str]:
    """The files under the entry's directory in `tree` (path → blob id), relative to it."""
    prefix = entry.path.rstrip("/") + "/"
    return {path.removeprefix(prefix): blob for path, blob in tree.items() if path.startswith(prefix)}


def retirement_problems(
    root: Path, retirements: Retirements, registry: Registry | None, cited: set[str]
) -> list[Problem]:
    """What is wrong with the entries of `retirements` (module docstring), given the registry and the
    run ids the docs cite."""
    problems: list[Problem] = []
    seen: set[str] = set()
    trees = trees_at(root, (e.commit for e in retirements.retired), ["evidence"])
    released = {c.run for m in registry.models for c in m.evidence} if registry else set()
    withdrawn = {m.directory for m in registry.models if m.withdrawn is not None} if registry else set()
    for entry in retirements.retired:
        where = entry.path
        if entry.path in seen:
            problems.append(Problem(where, "is retired twice"))
        seen.add(entry.path)
        tree = trees.get(entry.commit)
        if tree is None:
            problems.append(Problem(where, f"names commit {entry.commit[:12]}, which is not in this history"))
        elif (held := entry_files(entry, tree)) != entry.files:
            problems.append(Problem(where, _difference(entry, held)))
        if (root / entry.path).exists():
            problems.append(Problem(where, "is retired, yet still in the working tree"))
        is_record = PurePosixPath(entry.path).parent == PurePosixPath("evidence/runs")
        if is_record and entry.run in released:
            problems.append(Problem(where, "backs a release in the registry, so it cannot be retired"))
        if is_record and entry.run in cited:
            problems.append(Problem(where, "is cited by README.md or docs/, so it cannot be retired"))
        if not is_record and entry.path not in withdrawn:
            problems.append(Problem(where, "is neither a ledger record nor a withdrawn release's directory"))
    return problems + _history_problems(root, retirements)


def _difference(entry: Retired, held: dict[str, str]) -> str:
    """How the files git holds at the entry's commit differ from those the entry lists."""
    if not held:
        return f"names commit {entry.commit[:12]}, which holds no file under it"
    missing = sorted(set(entry.files) - set(held))
    extra = sorted(set(held) - set(entry.files))
    changed = sorted(n for n in set(held) & set(entry.files) if held[n] != entry.files[n])
    parts = [f"lists {', '.join(missing)} not there" if missing else ""]
    parts += [f"leaves out {', '.join(extra)}" if extra else ""]
    parts += [f"gives other blob ids for {', '.join(changed)}" if changed else ""]
    return f"at commit {entry.commit[:12]}: " + "; ".join(p for p in parts if p)


def _history_problems(root: Path, retirements: Retirements) -> list[Problem]:
    """Every entry of every committed retired.yaml is in today's, unchanged."""
    rel = RETIRED_FILE.as_posix()
    log = _git(root, "log", "--format=%H", "--", rel)
    now = {entry.path: entry for entry in retirements.retired}
    problems = []
    for sha in log.stdout.decode().split():
        shown = _git(root, "show", f"{sha}:{rel}")
        try:
            then = parse_retirements(shown.stdout.decode("utf-8"))
        except (BadInput, UnicodeDecodeError):
            continue  # a version that did not validate retired nothing
        for old in then.retired:
            if now.get(old.path) != old:
                problems.append(
                    Problem(old.path, f"was retired in commit {sha[:12]}, and that entry is gone or changed")
                )
    return problems


def retired_blob(retirements: Retirements, path: str) -> str | None:
    """The blob id a retirement entry gives for `path` (a file of the repository), or None."""
    for entry in retirements.retired:
        prefix = entry.path.rstrip("/") + "/"
        if path.startswith(prefix) and path.removeprefix(prefix) in entry.files:
            return entry.files[path.removeprefix(prefix)]
    return None


def covered(retirements: Retirements, path: str, blob: str) -> bool:
    """Whether removing `path` (a file of the repository) whose content was `blob` is a retirement."""
    return retired_blob(retirements, path) == blob


def blob_bytes(root: Path, blob: str) -> bytes | None:
    """The content of a git blob (None when git has no such blob)."""
    proc = _git(root, "cat-file", "blob", blob)
    return proc.stdout if proc.returncode == 0 else None
