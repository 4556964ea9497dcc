"""The page "What each command accepts": stack.cli.inputs and stack.artifacts as tables.

One row per input of each command, with the kinds of artifact it takes; then one row per kind,
with the files that define it and the command that writes it. Both come from the definitions
the commands check against, so the table cannot drift from what they do. docs/reliability.md
includes the first table (between the section markers below) in its section of the same name.
"""

from __future__ import annotations

from stack.artifacts import BY_NAME, KINDS, NEEDS
from stack.cli.inputs import INPUTS
from tools.site.formatting import BANNER, code, table, text

PAGE = "accepts.md"
SECTION = "accepts"  # the snippet section docs/reliability.md includes


def accepts_page() -> str:
    """The inputs table, then the kinds table."""
    rows = []
    for entry in INPUTS:
        need = NEEDS[entry.need]
        kinds = " ".join(code(BY_NAME[name].name) for name in need.kinds)
        when = f" ({text(entry.when)})" if entry.when else ""
        rows.append([code(f"stack {entry.command}"), code(entry.option) + when, text(need.noun), kinds])
    kinds = [
        [code(k.name), text(k.noun), text(k.defined_by), code(k.written_by) if k.written_by else "—"]
        for k in KINDS
    ]
    return "\n".join(
        [
            BANNER + "# What each command accepts\n",
            "Every input of every command, and the kinds of artifact it takes (`stack/cli/inputs.py`). "
            "Anything else is refused before any work, in one line that names what was given, what is "
            "needed, and the command that fits. The kinds are defined [below](#the-kinds) "
            "(`stack/artifacts.py`), most specific first: a path is the first kind whose files it holds.\n",
            f"<!-- --8<-- [start:{SECTION}] -->",
            *table(["command", "input", "takes", "the kinds it takes"], rows),
            f"<!-- --8<-- [end:{SECTION}] -->",
            "\n## The kinds\n",
            *table(["kind", "called", "defined by", "written by"], kinds),
            "",
        ]
    )
