"""Held-out items with reference completions: one JSON object per line, {"id", "prompt", "completion"}.

Evaluation matrices name every item by its id, so the rows can be shown to score the same items
and a few-shot example can be shown not to be the item it precedes (GATE-FT-002). The id is the
user's (a string, or an integer read as its decimal string); the content digest catches the same
item under another id.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

from contracts.errors import BadInput
from stack.data.line_ends import text_lines


@dataclass(frozen=True)
class Item:
    """One prompt, the completion it should get, and the name it goes by."""

    id: str
    prompt: str
    completion: str

    @property
    def text(self) -> str:
        """The item as a few-shot example shows it: its prompt, then its completion."""
        return self.prompt + self.completion

    @property
    def sha256(self) -> str:
        """The digest of the content (prompt, NUL, completion): the same item whatever its id."""
        return hashlib.sha256(f"{self.prompt}\0{self.completion}".encode()).hexdigest()


def _field(where: str, record: dict[str, object], name: str) -> str:
    value = record.get(name)
    if not isinstance(value, str):
        raise BadInput(f"{where}: {name!r} is {value!r}; each line needs a string {name!r}")
    return value


def _item(where: str, line: str) -> Item:
    try:
        record = json.loads(line)
    except json.JSONDecodeError as exc:
        raise BadInput(f"{where}: not a JSON object ({exc.msg}); write one object per line") from None
    if not isinstance(record, dict):
        raise BadInput(f"{where}: a JSON {type(record).__name__}, not an object with id, prompt, completion")
    raw_id = record.get("id")
    if isinstance(raw_id, bool) or not isinstance(raw_id, str | int) or raw_id == "":
        raise BadInput(f"{where}: 'id' is {raw_id!r}; give every item a non-empty string or integer id")
    completion = _field(where, record, "completion")
    if not completion:
        raise BadInput(f"{where}: the completion is empty; there is nothing to score")
    return Item(str(raw_id), _field(where, record, "prompt"), completion)


def read_items(path: Path, option: str) -> list[Item]:
    """The items of a JSONL file, in file order; refused when empty or when an id repeats."""
    lines, _, _ = text_lines(path, f"{option} as a JSONL file")
    found: list[Item] = []
    seen: dict[str, int] = {}
    for number, line in lines:
        if not line.strip():
            continue
        item = _item(f"{option} {path} line {number}", line)
        if item.id in seen:
            raise BadInput(
                f"{option} {path} line {number}: id {item.id!r} is also on line {seen[item.id]}; "
                "ids must be unique"
            )
        seen[item.id] = number
        found.append(item)
    if not found:
        raise BadInput(f"{option} {path} holds no item; write one JSON object per line")
    return found
