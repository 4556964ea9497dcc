"""Retirement records (`evidence/retired.yaml`): how a file leaves the ledger without being lost.

The ledger is append-only, so a record is never edited or removed silently. It may still leave the
working tree, once nothing cites it, when keeping it costs every clone more than it tells anyone:
a superseded copy, an old proof by mutation, an example record the tests now keep as a fixture.
Such a record is *retired*: an entry here names its directory, the last commit that carried it and
the git blob id of every file it held, and says why. Git keeps the bytes, and the blob ids pin them,
so the record stays verifiable from history for good (`check_integrity --record ID`), while the
working tree stops carrying it. The checker (tools/retirement.py) holds every entry to git and
refuses a removal that no entry covers, or an entry for a record that a release or the docs cite.
A withdrawn release's directory may be retired the same way.
"""

from __future__ import annotations

from pathlib import Path, PurePosixPath

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.errors import BadInput
from contracts.reading import load_yaml

RETIRED_FILE = Path("evidence") / "retired.yaml"
HEADER = """\
# Files retired from the working tree of the ledger (contracts/retirement.py). Each entry names a
# directory, the last commit that carried it, the git blob id of every file it held and why it left;
# tools/check_integrity.py holds each one to git, and `check_integrity.py --record ID` verifies a
# retired record from history. Entries are never removed or changed: retire with tools/retire.py.
"""


class Retired(BaseModel):
    """One retired directory (a ledger record, or a withdrawn release) and what pins its bytes."""

    model_config = ConfigDict(extra="forbid")

    path: str  # repository-relative: evidence/runs/<id>, or a withdrawn release's directory
    commit: str = Field(pattern=r"^[0-9a-f]{40}$")  # the last commit that carried it
    files: dict[str, str]  # each file, relative to `path` → its git blob id
    reason: str = Field(min_length=1)
    verified_under: str  # the spec version of the check that passed over it when it was retired

    @field_validator("path")
    @classmethod
    def _inside_evidence(cls, path: str) -> str:
        parts = PurePosixPath(path).parts
        if PurePosixPath(path).is_absolute() or ".." in parts or parts[:1] != ("evidence",) or len(parts) < 3:
            raise ValueError(f"{path!r} is not a directory under evidence/")
        return path

    @field_validator("files")
    @classmethod
    def _blob_ids(cls, files: dict[str, str]) -> dict[str, str]:
        if not files:
            raise ValueError("a retired directory names at least one file")
        for name, blob in files.items():
            if ".." in PurePosixPath(name).parts or len(blob) != 40 or blob.strip("0123456789abcdef"):
                raise ValueError(f"{name!r}: {blob!r} is not a file with its git blob id")
        return files

    @property
    def run(self) -> str:
        """The directory's name: a record's run id."""
        return PurePosixPath(self.path).name


class Retirements(BaseModel):
    model_config = ConfigDict(extra="forbid")

    retired: list[Retired] = []

    def by_path(self) -> dict[str, Retired]:
        return {entry.path: entry for entry in self.retired}


def parse_retirements(text: str) -> Retirements:
    """The entries of a retired.yaml text; BadInput naming what is wrong when it is not one."""
    try:
        return Retirements.model_validate(load_yaml(text) or {})
    except (yaml.YAMLError, ValidationError) as exc:
        first = str(exc).splitlines()[:3]
        raise BadInput(f"{RETIRED_FILE} does not validate: {' '.join(first)}") from None


def read_retirements(root: Path) -> Retirements:
    """The retirements of the repository at `root` (none when it has no retired.yaml)."""
    path = root / RETIRED_FILE
    if not path.is_file():
        return Retirements()
    try:
        return parse_retirements(path.read_text(encoding="utf-8"))
    except UnicodeDecodeError:
        raise BadInput(f"{RETIRED_FILE} is not UTF-8 text") from None


def render_retirements(retirements: Retirements) -> str:
    """retired.yaml's text: the header, then one block an entry."""
    body = yaml.safe_dump(retirements.model_dump(), sort_keys=False, width=100, allow_unicode=True)
    return HEADER + body
