"""Finished HTML the site renders itself, passed through Markdown untouched.

render_site writes some blocks as HTML that is complete as it stands: a source file highlighted
by Pygments (a span per token, 16 MB over some two hundred pages) and a record's JSON in a
`<details>`. Python-Markdown would run its HTML parser over every tag of them only to hand them
back unchanged; the source pages alone took 5 s of a 36 s build. `raw_html` wraps such a block in two
HTML comments. Loaded by mkdocs as a hook (mkdocs.yml, `hooks:`), this module lifts each wrapped
block out of a page before Markdown reads it, leaving a token, and puts the block back, byte for
byte, where Markdown left the token. The search index, the table of contents and the links are
made from the page after that, so they see what they saw before. A page Markdown renders without
the hook shows the same: the comments are comments, and the block is valid HTML as it is.
"""

from __future__ import annotations

import re
import secrets
from typing import Any

OPEN = "<!--gs-raw-->"
CLOSE = "<!--/gs-raw-->"
_WRAPPED = re.compile(re.escape(OPEN) + "(.*?)" + re.escape(CLOSE), re.DOTALL)
# Letters and digits only, so Markdown leaves it as it is; the build's own random part keeps a
# page's text from ever matching it by chance.
_TOKEN = f"gsraw{secrets.token_hex(8)}n"
# Alone on its line the token became a paragraph, which a block must not be wrapped in.
_PLACED = re.compile(f"(<p>)?{_TOKEN}(\\d+)x(?(1)</p>)")
_lifted: dict[str, list[str]] = {}


def raw_html(html: str) -> str:
    """`html`, marked to be passed through Markdown untouched. It must not hold CLOSE."""
    return f"{OPEN}{html}{CLOSE}"


def lift(markdown: str) -> tuple[str, list[str]]:
    """`markdown` with each wrapped block replaced by a token, and the blocks in token order."""
    blocks: list[str] = []

    def token(match: re.Match[str]) -> str:
        blocks.append(match.group(1))
        return f"{_TOKEN}{len(blocks) - 1}x"

    return _WRAPPED.sub(token, markdown), blocks


def restore(html: str, blocks: list[str]) -> str:
    """`html` with each token `lift` left replaced by its block."""
    if not blocks:
        return html
    return _PLACED.sub(lambda match: blocks[int(match.group(2))], html)


def on_page_markdown(markdown: str, page: Any, **_: Any) -> str:
    """mkdocs: before Markdown reads the page, lift its wrapped blocks out."""
    lifted, blocks = lift(markdown)
    _lifted[page.file.src_uri] = blocks
    return lifted


def on_page_content(html: str, page: Any, **_: Any) -> str:
    """mkdocs: once Markdown has made the page's HTML, put its blocks back."""
    return restore(html, _lifted.pop(page.file.src_uri, []))
