"""The drop log: one line per document the filters dropped, kept in DATA_DIR beside the manifest.

`drops.jsonl` holds, in reading order, a JSON object per dropped document: its `source`, the
`reason`, `doc` (the sha256 of its text, the id the document index keeps a prefix of) and
`where` it was read (the file below its input, with the line, row, document or byte range). The
manifest lists the file with its sha256 like every other, and its per-source drop counts must be
the log's lines counted again (GATE-DATA-014, `stack prepare --verify`): a report cannot claim
drops the log does not hold, nor hide ones it does. Canaries are not documents and are not in it.
"""

from __future__ import annotations

import json
from collections import Counter, defaultdict
from pathlib import Path
from typing import IO

from stack.data.damage import Damaged
from stack.data.shards import naming

DROP_LOG_FILE = "drops.jsonl"


class DropLog:
    """Appends the dropped documents of one prepare to DATA_DIR/drops.jsonl in its staging directory."""

    def __init__(self, directory: Path) -> None:
        self.path = directory / DROP_LOG_FILE
        self._handle: IO[str] | None = None

    def add(self, source: str, reason: str, sha: bytes, where: str) -> None:
        """Log one dropped document."""
        if self._handle is None:
            self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed by close()
        row = {"source": source, "reason": reason, "doc": sha.hex(), "where": where}
        with naming(self.path):
            self._handle.write(json.dumps(row, ensure_ascii=False) + "\n")

    def close(self) -> Path:
        """Finish the file (an empty one when nothing was dropped) and return its path."""
        if self._handle is None:
            self._handle = open(self.path, "w", encoding="utf-8")  # noqa: SIM115 - closed just below
        with naming(self.path):
            self._handle.close()
        return self.path


def recount(path: Path) -> dict[str, dict[str, int]]:
    """Drops per source and reason, counted from a drop log; a log that does not parse is BadInput."""
    counts: defaultdict[str, Counter[str]] = defaultdict(Counter)
    try:
        with open(path, encoding="utf-8") as handle:
            for number, line in enumerate(handle, start=1):
                try:
                    row = json.loads(line)
                    counts[row["source"]][row["reason"]] += 1
                except (ValueError, KeyError, TypeError):
                    raise Damaged(Path(path).parent, f"{path}:{number} is not a drop log line") from None
    except OSError as exc:
        raise Damaged(Path(path).parent, f"cannot read {path} ({exc.strerror})") from None
    return {source: dict(sorted(reasons.items())) for source, reasons in sorted(counts.items())}
