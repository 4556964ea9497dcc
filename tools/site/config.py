"""The site's own settings (tools/site_config.toml): where source links point, which runs to compare.

Kept out of mkdocs.yml on purpose: the generator reads it, not the site builder, so the pages
stay the same whichever renderer turns them into HTML.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from contracts.errors import BadInput

CONFIG_FILE = Path("tools") / "site_config.toml"


@dataclass(frozen=True)
class SiteConfig:
    """Settings of one build; the defaults hold for a repository without a config file."""

    repository_url: str = ""
    compare: list[tuple[str, str]] = field(default_factory=list)


def load_site_config(root: Path) -> SiteConfig:
    """Read `root`'s tools/site_config.toml; a missing file means the defaults.

    A malformed file is bad input naming the file and the key, so a typo cannot quietly drop a
    comparison page.
    """
    path = root / CONFIG_FILE
    if not path.is_file():
        return SiteConfig()
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise BadInput(f"{path} is not valid TOML: {exc}") from None
    unknown = sorted(set(data) - {"repository_url", "compare"})
    if unknown:
        raise BadInput(f"{path} has unknown key(s) {', '.join(unknown)}; known: repository_url, compare")
    url = data.get("repository_url", "")
    pairs = data.get("compare", [])
    if not isinstance(url, str):
        raise BadInput(f"{path}: repository_url must be a string (empty for a copy of the source)")
    if not isinstance(pairs, list) or not all(
        isinstance(p, list) and len(p) == 2 and all(isinstance(x, str) for x in p) for p in pairs
    ):
        raise BadInput(
            f'{path}: compare must be a list of [RUN_A, RUN_B] pairs of run ids, e.g. [["a", "b"]]'
        )
    return SiteConfig(url.rstrip("/"), [(a, b) for a, b in pairs])
