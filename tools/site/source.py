"""Links from the site to the code: a gate's bindings, its falsifiers, the YAML that defines it.

A `file:line` in prose makes the reader go and find it; a link takes them there. With a
repository URL configured (tools/site_config.toml) links point at the commit the site was built
from; without one, the site carries a highlighted copy of each cited file with an anchor per
line, so a site built from a checkout, offline, still links every binding to its line.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

from pygments import highlight
from pygments.formatters import HtmlFormatter
from pygments.lexers import get_lexer_for_filename
from pygments.util import ClassNotFound

from tools.site.cache import kept
from tools.site.formatting import BANNER, code, link
from tools.site.raw import raw_html

SOURCE_DIR = "source"
# Source copies are for following links, not for the search box.
FRONT_MATTER = "---\nsearch:\n  exclude: true\n---\n\n"


def head_commit(root: Path) -> str:
    """The commit the site is built from, so repository links don't drift as the branch moves."""
    done = subprocess.run(["git", "-C", str(root), "rev-parse", "HEAD"], capture_output=True, text=True)
    return done.stdout.strip() if done.returncode == 0 else "HEAD"


class SourceLinks:
    """Makes links to `file:line` places and, without a repository URL, the pages they land on."""

    def __init__(self, root: Path, repository_url: str = "") -> None:
        self.root = root
        self.repository_url = repository_url
        self.commit = head_commit(root) if repository_url else ""
        self.cited: set[str] = set()

    def link(self, page: str, file: str, line: int, label: str | None = None) -> str:
        """A Markdown link from generated page `page` to line `line` of repository file `file`."""
        shown = code(label or f"{file}:{line}")
        if self.repository_url:
            return f"[{shown}]({self.repository_url}/blob/{self.commit}/{file}#L{line})"
        if not (self.root / file).is_file():
            return shown  # nothing to copy: the text stays, unlinked
        self.cited.add(file)
        return f"[{shown}]({link(page, f'{SOURCE_DIR}/{file}.md#L-{line}')})"

    def pages(self) -> dict[str, str]:
        """source/<file>.md for every file linked so far: the file highlighted, a span per line."""
        return {f"{SOURCE_DIR}/{file}.md": source_page(self.root, file) for file in sorted(self.cited)}


def source_page(root: Path, file: str) -> str:
    """One repository file as a page, each line `#L-<n>` so a link can land on it."""
    source = (root / file).read_text(encoding="utf-8", errors="replace")
    body = raw_html(highlighted(file, source))
    return f"{FRONT_MATTER}{BANNER}# {file}\n\nAs of the build; line numbers are link targets.\n\n{body}\n"


@kept
def highlighted(file: str, source: str) -> str:
    """`source` as HTML, coloured by the lexer its file name picks, a span per line."""
    try:
        lexer = get_lexer_for_filename(file, stripnl=False)
    except ClassNotFound:
        lexer = get_lexer_for_filename("plain.txt", stripnl=False)
    formatter = HtmlFormatter(linenos="inline", linespans="L", wrapcode=True, cssclass="highlight gs-source")
    return highlight(source, lexer, formatter)


def line_of(root: Path, file: str, pattern: str) -> int:
    """The first line of `file` matching the regular expression `pattern` (1 if none does)."""
    path = root / file
    if path.is_file():
        for number, text in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
            if re.search(pattern, text):
                return number
    return 1
