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
from contracts.filter_rules import script_names
from contracts.reading import load_yaml

DEFAULTS_FILE = Path(__file__).with_name("defaults.yaml")
FILTER_NAMES = ("leak", "oversize", "encoding", "diversity", "script", "dedup")


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class TurnMarkers(_Section):
    """How one chat transcript format marks its user's turn in text: the turn runs from `user` to
    `end`. `needs_end`: the markers are plain words, so they mark a transcript only when `end` follows."""

    user: str = Field(min_length=1)
    end: str = Field(min_length=1)
    needs_end: bool = False


class LeakSettings(_Section):
    """A leaked system prompt: markdown headers and fingerprint phrases in a first user turn."""

    head_chars: int = Field(ge=1)
    max_title_words: int = Field(ge=1)
    max_headers: int = Field(ge=0)
    max_header_weight: float = Field(gt=0)
    fingerprints: list[str]
    fingerprint_min_chars: int = Field(ge=0)
    turns: list[TurnMarkers] = Field(min_length=1)


class OversizeSettings(_Section):
    """Documents a separator or a record format produced, longer than max_bytes."""

    max_bytes: int = Field(ge=1)


class DiversitySettings(_Section):
    """A first window that repeats itself: its zlib compression ratio."""

    window_chars: int = Field(ge=1)
    min_chars: int = Field(ge=1)
    min_compression_ratio: float = Field(ge=0, le=1)


class SampleSettings(_Section):
    """What the letter-reading filters (encoding, script) read of a document: `bytes` in `spans`
    stretches spread evenly over it, the whole of it when shorter."""

    bytes: int = Field(ge=1)
    spans: int = Field(ge=1)


class EncodingSettings(_Section):
    """Text decoded with the wrong encoding: U+FFFD where its letters were."""

    max_replaced_share: float = Field(ge=0, le=1)
    min_letters: int = Field(ge=1)


# Writing systems written with more than one script (stack.data.filters.script); any other script
# is a system of its own. `expected` names these or scripts.
SYSTEMS: dict[str, frozenset[str]] = {
    "CJK": frozenset({"CJK", "BOPOMOFO"}),
    "JAPANESE": frozenset({"CJK", "HIRAGANA", "KATAKANA"}),
    "KOREAN": frozenset({"CJK", "HANGUL"}),
}


class ScriptSettings(_Section):
    """A document's letters in its source's writing system: measured per source, or `expected` for all."""

    expected: list[str] | None = Field(default=None, min_length=1)
    main_share: float = Field(gt=0, le=1)
    min_documents: int = Field(ge=1)
    min_share: float = Field(ge=0, le=1)
    min_letters: int = Field(ge=1)
    code_suffixes: list[str]

    @field_validator("expected")
    @classmethod
    def _upper(cls, names: list[str] | None) -> list[str] | None:
        """Scripts are named in upper case (contracts.filter_rules.script_of): `cyrillic` means
        CYRILLIC; a name of no script nor system is refused, since no letter would be in it."""
        if names is None:
            return None
        upper = [name.strip().upper() for name in names]
        unknown = [name for name in upper if name not in script_names() and name not in SYSTEMS]
        if unknown:
            raise ValueError(
                f"{', '.join(unknown)} names no Unicode script nor writing system; name scripts as Unicode "
                f"does (LATIN, CYRILLIC, ARABIC, DEVANAGARI, ...) or a system ({', '.join(sorted(SYSTEMS))})"
            )
        return upper

    @field_validator("code_suffixes")
    @classmethod
    def _lower(cls, suffixes: list[str]) -> list[str]:
        """Suffixes are compared in lower case, with their dot: `PY` means `.py`."""
        return [f".{suffix.strip().lower().lstrip('.')}" for suffix in suffixes]


class DedupSettings(_Section):
    """Exact duplicates by content hash, near duplicates by MinHash with banded lookup."""

    shingle_bytes: int = Field(ge=1, le=32)
    permutations: int = Field(ge=1, le=256)
    bands: int = Field(ge=1)
    min_jaccard: float = Field(gt=0, le=1)


class SourceSettings(_Section):
    """How one source is read: prose, or code (every document of it is code, which the script filter
    does not judge, whatever its file's suffix); whether it claims to be clean."""

    kind: Literal["prose", "code"] = "prose"
    pre_clean: bool = False


class FilterSettings(_Section):
    """Every filter's settings, and the filters run when none is named."""

    default: list[Literal["leak", "oversize", "encoding", "diversity", "script", "dedup"]]
    leak: LeakSettings
    oversize: OversizeSettings
    sample: SampleSettings
    encoding: EncodingSettings
    diversity: DiversitySettings
    script: ScriptSettings
    dedup: DedupSettings
    sources: dict[str, SourceSettings] = {}

    def source(self, name: str) -> SourceSettings:
        """The settings of one source (prose, not pre-clean, unless the file says otherwise)."""
        return self.sources.get(name, SourceSettings())


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        raw = load_yaml(path.read_text(encoding="utf-8"))
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


def dedup_flags() -> str:
    """`stack prepare`'s flags that drop repeated documents or examples and still run the default
    filters: the filters named replace the default list, so `--filter dedup` alone would run
    nothing else. What a held-out split that repeats its windows is advised to be prepared with."""
    names = dict.fromkeys([*load_settings().default, "dedup"])
    return " ".join(f"--filter {name}" for name in names)


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
        cause = first.get("ctx", {}).get("error")  # a validator's own words, without pydantic's prefix
        raise BadInput(f"--filters {path}: {where}: {cause if cause is not None else first['msg']}") from None
