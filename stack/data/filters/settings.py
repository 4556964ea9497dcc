"""Filter settings as data: the built-in defaults.yaml, a user's --filters FILE over them.

Every number a filter uses is here, typed and validated (`extra="forbid"`, so a misspelt key
is refused, not ignored). A user file replaces whole sections it names (`leak:`, `script:`
...), key by key inside a section; `sources:` entries are merged by source name.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from contracts.errors import BadInput

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
FILTER_NAMES = ("leak", "oversize", "diversity", "script", "dedup")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class LeakSettings(_Section):
    """A leaked system prompt: markdown headers and fingerprint phrases in the head region."""

    head_chars: int = Field(ge=1)
    max_title_words: int = Field(ge=1)
    max_headers: int = Field(ge=0)
    max_header_weight: float = Field(gt=0)
    fingerprints: list[str]


class OversizeSettings(_Section):
    """Documents a separator or a record format produced, longer than max_bytes."""

    max_bytes: int = Field(ge=1)


class DiversitySettings(_Section):
    """A first window that repeats itself: its zlib compression ratio."""

    window_chars: int = Field(ge=1)
    min_chars: int = Field(ge=1)
    min_compression_ratio: float = Field(ge=0, le=1)


class ScriptSettings(_Section):
    """The share of letters in the scripts of the document's source: measured, or `expected` for all."""

    expected: list[str] | None = Field(default=None, min_length=1)
    source_share: float = Field(gt=0, le=1)
    min_share: float = Field(ge=0, le=1)
    window_chars: int = Field(ge=1)
    min_letters: int = Field(ge=1)

    @field_validator("expected")
    @classmethod
    def _upper(cls, names: list[str] | None) -> list[str] | None:
        """Scripts are named as in Unicode names, upper case: `cyrillic` means CYRILLIC."""
        return None if names is None else [name.strip().upper() for name in names]


class DedupSettings(_Section):
    """Exact duplicates by content hash, near duplicates by MinHash with banded lookup."""

    shingle_bytes: int = Field(ge=1, le=32)
    permutations: int = Field(ge=1, le=256)
    bands: int = Field(ge=1)
    min_jaccard: float = Field(gt=0, le=1)


class SourceSettings(_Section):
    """How one source is read: prose or code (code skips the header rules); whether it claims to be clean."""

    kind: Literal["prose", "code"] = "prose"
    pre_clean: bool = False


class FilterSettings(_Section):
    """Every filter's settings, and the filters run when none is named."""

    default: list[Literal["leak", "oversize", "diversity", "script", "dedup"]]
    leak: LeakSettings
    oversize: OversizeSettings
    diversity: DiversitySettings
    script: ScriptSettings
    dedup: DedupSettings
    sources: dict[str, SourceSettings] = {}

    def source(self, name: str) -> SourceSettings:
        """The settings of one source (prose, not pre-clean, unless the file says otherwise)."""
        return self.sources.get(name, SourceSettings())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = yaml.safe_load(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise BadInput(
            f"--filters {path} does not exist; give a YAML file shaped like {DEFAULTS_FILE.name}"
        ) from None
    except (OSError, UnicodeDecodeError) as exc:
        raise BadInput(f"--filters {path} cannot be read ({exc}); give a UTF-8 YAML file") from None
    except yaml.YAMLError as exc:
        raise BadInput(f"--filters {path} is not YAML ({' '.join(str(exc).split())[:160]})") from None
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise BadInput(f"--filters {path} must be a YAML mapping of sections (leak:, script:, ...)")
    return raw


def _merged(base: dict[str, Any], over: dict[str, Any]) -> dict[str, Any]:
    """`over` on `base`: mappings merge key by key, anything else is replaced."""
    merged = dict(base)
    for key, value in over.items():
        if isinstance(value, dict) and isinstance(base.get(key), dict):
            merged[key] = _merged(base[key], value)
        else:
            merged[key] = value
    return merged


def load_settings(path: Path | None = None) -> FilterSettings:
    """The built-in settings, with a user's file over them when given; a bad file is BadInput."""
    raw = _read_yaml(DEFAULTS_FILE)
    if path is not None:
        raw = _merged(raw, _read_yaml(Path(path)))
    try:
        return FilterSettings.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first["loc"]) or "settings"
        raise BadInput(f"--filters {path}: {where}: {first['msg']}") from None
