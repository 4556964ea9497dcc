"""The model registry (`evidence/registry.yaml`): what was released, from what, with which evidence."""

from __future__ import annotations

import functools
from pathlib import Path, PurePosixPath
from urllib.parse import urlsplit

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from contracts.errors import BadInput
from contracts.reading import load_yaml, read_text

REGISTRY_FILE = Path("evidence") / "registry.yaml"


class Entry(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegistryArtifact(Entry):
    """A released file: a repository-relative path, or a URL for weights kept elsewhere."""

    path: str | None = None
    url: str | None = None
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    bytes: int = Field(ge=0)

    @model_validator(mode="after")
    def _one_location(self) -> RegistryArtifact:
        if (self.path is None) == (self.url is None):
            raise ValueError("an artifact names exactly one of path or url")
        return self

    @property
    def name(self) -> str:
        """The file's name: the last segment of its path, or of its URL's path."""
        return PurePosixPath(self.path if self.path is not None else urlsplit(str(self.url)).path).name


class EvidenceCitation(Entry):
    """A ledger record by id and by content: the sha256 of its metadata.json bytes."""

    run: str  # the run id, a directory under evidence/runs/
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")


class AcceptedWaiver(Entry):
    """A blocking gate the cited record waived, accepted for this release by `stack release
    --accept-waiver GATE --reason TEXT`: the release says, with a reason, that it knows."""

    gate: str = Field(pattern=r"^GATE-[A-Z]+-\d{3}$")
    reason: str = Field(min_length=1)


class ReleasedModel(Entry):
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    version: str
    spec_version: str
    git_sha: str = Field(pattern=r"^[0-9a-f]{40}$")
    evidence: list[EvidenceCitation] = Field(min_length=1)
    artifacts: list[RegistryArtifact] = Field(default_factory=list)
    license: str
    card: str  # a repository-relative path to the model card
    accepted_waivers: list[AcceptedWaiver] = Field(default_factory=list)
    # The model-signing bundle over the released directory's files (contracts.signing.sign_model),
    # when the release was signed.
    signature: RegistryArtifact | None = None
    # A release is never deleted; one that no longer stands is withdrawn, with the reason.
    withdrawn: str | None = Field(default=None, min_length=1)

    @property
    def key(self) -> str:
        return f"{self.name}@{self.version}"

    @property
    def directory(self) -> str:
        """The release's directory, repository-relative: where its card, manifest and state lie,
        and its weights too unless they are kept elsewhere (a URL)."""
        return PurePosixPath(self.card).parent.as_posix()

    def artifact(self, name: str) -> RegistryArtifact | None:
        """The released file called `name` (model.safetensors, state.json), wherever it is kept."""
        return next((a for a in self.artifacts if a.name == name), None)


class Registry(Entry):
    models: list[ReleasedModel] = Field(default_factory=list)

    @field_validator("models", mode="before")
    @classmethod
    def _none_is_empty(cls, value: object) -> object:
        """`models:` with nothing under it (a registry before its first release) lists none."""
        return [] if value is None else value


def read_registry(path: Path) -> Registry:
    """Load and validate a registry file; problems are BadInput naming the file. Each caller gets
    its own copy, so none can change what another reads."""
    if not Path(path).exists():
        raise BadInput(f"no registry at {path}")
    text = read_text(path)  # a file that does not read raises Unreadable, a BadInput naming it
    try:
        return _parsed_registry(text).model_copy(deep=True)
    except (yaml.YAMLError, ValidationError) as exc:
        text = " ".join(str(exc).split())[:300]
        raise BadInput(f"{path} is not a valid registry: {text}") from None


@functools.lru_cache(maxsize=16)
def _parsed_registry(text: str) -> Registry:
    """A registry's text parsed and validated, once per content: the integrity check resolves a
    released checkpoint for every record that names one, each through the same file."""
    return Registry.model_validate(load_yaml(text) or {})
