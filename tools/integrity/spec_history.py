"""The spec as it was: a policy file of an older revision by its digest, the revisions at a commit.

A record cites the revision and the content digest of every policy file that decided what it
must judge (`spec.policies`). The checker holds a record to the policy it cites, not to today's:
a record judged under run_kinds rev 1 must have judged every gate rev 1 required. The file of an
older revision is in the repository's history; `PolicyHistory` finds it there by the digest the
record cites (`contracts.spec.policy_digest` of its content), with one `git log` and one batched
`git cat-file` per policy file, the first time a record asks. A digest no version of the file
ever had finds nothing (the caller reports what it cannot check).

`revision_in_force` reads spec/revisions.yaml at a record's commit: the revision of a gate or
policy file the record's own commit had, which a clean record's verdict or citation cannot be
older than.
"""

from __future__ import annotations

import contextlib
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path

import yaml

from contracts.reading import load_yaml
from contracts.spec import POLICY_FILES, RunKind, RunKindsFile, policy_digest


def files_at(
    root: Path, wanted: list[tuple[str, str]], kind: bytes = b"blob"
) -> dict[tuple[str, str], bytes]:
    """The content of each (commit, path) of `wanted` that git has as a `kind` object (a file's bytes,
    or a tree's raw entries), in one `git cat-file --batch`."""
    found = objects(root, [f"{sha}:{path}" for sha, path in wanted], kind)
    return {key: found[f"{key[0]}:{key[1]}"] for key in wanted if f"{key[0]}:{key[1]}" in found}


def commit_reader(root: Path, sha: str, known: dict[tuple[str, str], bytes]) -> Callable[[str], bytes | None]:
    """A reader of the files of commit `sha`: each from `known` (what `files_at` already read), else
    from git, once (a file the commit lacks reads as None)."""
    read: dict[str, bytes | None] = {}

    def at(path: str) -> bytes | None:
        if (sha, path) in known:
            return known[(sha, path)]
        if path not in read:
            read[path] = files_at(root, [(sha, path)]).get((sha, path))
        return read[path]

    return at


# The objects git gave before. An object id is the hash of the object's bytes, so it can never
# name other bytes, in this repository or in a copy of it; the ids asked for are those a listing
# of the repository itself gave (`git ls-tree`, `git log`), so the object is there. A full commit
# id with a path names one object for good too, but whether the commit is in a repository is part
# of the answer, so such names are kept for the repository last asked only (a check of one
# repository reads some 40 MB of them). A check reads the same few hundred files at many commits
# (the records of one commit ask for the same ones), and the test suite checks copies of one
# repository dozens of times. What git lacked is asked again.
_BY_ID: dict[tuple[str, bytes], bytes] = {}  # (object id, kind) → the object's bytes


@dataclass
class _LastRepository:
    """The repository `objects` was last asked of, and the (`commit:path`, kind) bytes it gave."""

    root: str = ""
    kept: dict[tuple[str, bytes], bytes] = field(default_factory=dict)


_LAST = _LastRepository()
_OBJECT_ID = re.compile(r"^[0-9a-f]{40}$")
_AT_COMMIT = re.compile(r"^[0-9a-f]{40}:")


def _kept(root: Path, name: str) -> dict[tuple[str, bytes], bytes] | None:
    """Where `objects` keeps `name`'s bytes, or None for a name that can come to mean other bytes
    (a branch, `HEAD`, a short id)."""
    if _OBJECT_ID.match(name):
        return _BY_ID
    if not _AT_COMMIT.match(name):
        return None
    if _LAST.root != str(root):
        _LAST.root, _LAST.kept = str(root), {}
    return _LAST.kept


def objects(root: Path, names: list[str], kind: bytes = b"blob") -> dict[str, bytes]:
    """The content of each git object named in `names` (an object id, or `commit:path`) that git has
    as a `kind` object, in one `git cat-file --batch` for those not read before (kept where `_kept` says)."""
    found: dict[str, bytes] = {}
    asked = []
    for name in names:
        kept = _kept(root, name)
        if kept is not None and (name, kind) in kept:
            found[name] = kept[(name, kind)]
        else:
            asked.append(name)
    if not asked:
        return found
    proc = subprocess.run(
        ["git", "-C", str(root), "cat-file", "--batch"],
        input="".join(f"{name}\n" for name in asked).encode(),
        capture_output=True,
        check=False,
    )
    out, at = proc.stdout, 0
    for name in asked:
        end = out.find(b"\n", at)
        if end < 0:
            break
        header = out[at:end].split()
        at = end + 1
        if len(header) != 3 or header[1] not in (b"blob", b"tree", b"commit", b"tag"):
            continue  # "<object> missing": nothing follows
        if header[1] != kind:
            at += int(header[2]) + 1
            continue
        size = int(header[2])
        found[name] = out[at : at + size]
        at += size + 1
        kept = _kept(root, name)
        if kept is not None:
            kept[(name, kind)] = found[name]
    return found


def tree_names(raw: bytes) -> list[str]:
    """The entry names of a raw git tree object (each entry: mode, space, name, NUL, 20-byte id)."""
    names, at = [], 0
    while at < len(raw):
        nul = raw.find(b"\0", at)
        if nul < 0:
            break
        names.append(raw[raw.find(b" ", at) + 1 : nul].decode("utf-8", "replace"))
        at = nul + 21
    return names


@lru_cache(maxsize=1024)
def committed_yaml(blob: bytes) -> object:
    """A committed YAML file's bytes, parsed (raises yaml.YAMLError, UnicodeDecodeError).

    Cached by content, once per process: a check reads the same few spec files at dozens of
    commits, and a process checking several copies of one history (the checker's tests) reads
    them again for each. Callers only read what it returns.
    """
    return load_yaml(blob.decode("utf-8"))


class SpecHistory:
    """The spec files of one repository's history: each policy file's versions by content digest,
    and the gate revisions of spec/revisions.yaml at a commit."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root)
        self._by_digest: dict[str, dict[str, object]] = {}
        self._unread: dict[str, list[bytes]] = {}  # each policy file's committed versions not yet parsed
        self._revisions: dict[str, dict[str, int]] = {}

    def revision_in_force(self, sha: str, name: str) -> int | None:
        """The latest revision of gate or policy file `name` that spec/revisions.yaml lists at
        commit `sha` (None: the commit has no such file, or it does not list `name`)."""
        if sha not in self._revisions:
            self._revisions[sha] = {}
            blob = files_at(self.root, [(sha, "spec/revisions.yaml")]).get((sha, "spec/revisions.yaml"))
            with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError, AttributeError, TypeError):
                data = committed_yaml(blob)  # type: ignore[arg-type]
                listed = {**(data.get("policies") or {}), **data["revisions"]}
                self._revisions[sha] = {
                    key: max(int(e["revision"]) for e in entries) for key, entries in listed.items()
                }
        return self._revisions[sha].get(name)

    def content(self, name: str, digest: str) -> object | None:
        """The parsed content of policy `name` whose digest is `digest`, or None when no committed
        version of the file has it."""
        if name not in self._by_digest:
            self._by_digest[name], self._unread[name] = {}, self._blobs(name)
        found, unread = self._by_digest[name], self._unread[name]
        while digest not in found and unread:  # newest first: records mostly cite recent versions
            with contextlib.suppress(yaml.YAMLError, UnicodeDecodeError):
                data = committed_yaml(unread.pop(0))
                found.setdefault(policy_digest(data), data)
        return found.get(digest)

    def run_kinds(self, digest: str) -> dict[str, RunKind] | None:
        """The run kinds of the run_kinds.yaml whose digest is `digest` (None: no such version)."""
        data = self.content("run_kinds", digest)
        if data is None:
            return None
        try:
            return RunKindsFile.model_validate(data).run_kinds
        except ValueError:
            return None

    def _blobs(self, name: str) -> list[bytes]:
        """Every committed version of policy file `name`, newest first, one per distinct content."""
        path = f"spec/{POLICY_FILES[name]}"
        log = subprocess.run(
            ["git", "-C", str(self.root), "log", "--format=%H", "--", path], capture_output=True, check=False
        )
        shas = log.stdout.decode().split()
        found = files_at(self.root, [(sha, path) for sha in shas])
        return list(dict.fromkeys(found[(sha, path)] for sha in shas if (sha, path) in found))
