"""A lexical BM25 retriever over a folder of .txt and .md documents: no embeddings, no index files.

Each document is cut into passages at blank lines; a passage and a query are bags of lower-cased
words, scored by BM25 as contracts.bm25 defines it (the statute: Robertson and Zaragoza's BM25
with Lucene's non-negative idf, k1 = 1.2, b = 0.75; a word the query repeats counts each time).
This index computes the scores its own way, once per folder; GATE-FT-002's check retrieval
rescores every passage by the statute apart from it. Passages that share no word with the query
score 0 and are never returned, so an unrelated folder adds nothing rather than noise.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from dataclasses import dataclass
from pathlib import Path

from contracts.bm25 import K1, B, words
from contracts.errors import BadInput
from stack.data.line_ends import read_text

SUFFIXES = (".txt", ".md")
PARAGRAPH = re.compile(r"\n\s*\n")


@dataclass(frozen=True)
class Passage:
    """One paragraph of one document, and where it came from."""

    source: str
    index: int
    text: str


class BM25:
    """Passages with their word counts, ready to be ranked against a query."""

    def __init__(self, passages: list[Passage]) -> None:
        self.passages = passages
        self.counts = [Counter(words(p.text)) for p in passages]
        self.lengths = [sum(c.values()) for c in self.counts]
        self.avgdl = sum(self.lengths) / max(1, len(passages))
        holding = Counter(word for c in self.counts for word in c)
        n = len(passages)
        self.idf = {w: math.log(1 + (n - held + 0.5) / (held + 0.5)) for w, held in holding.items()}

    def score(self, query: str, at: int) -> float:
        """BM25 of passage `at` for `query` (a repeated query word counts each time it occurs)."""
        counts, norm = self.counts[at], K1 * (1 - B + B * self.lengths[at] / self.avgdl)
        return sum(
            self.idf[w] * counts[w] * (K1 + 1) / (counts[w] + norm) for w in words(query) if w in counts
        )

    def top(self, query: str, n: int) -> list[tuple[Passage, float]]:
        """The n best passages scoring above 0, best first; ties keep the folder's order."""
        scored = [(self.score(query, i), i) for i in range(len(self.passages))]
        ranked = sorted((pair for pair in scored if pair[0] > 0), key=lambda pair: (-pair[0], pair[1]))
        return [(self.passages[i], s) for s, i in ranked[:n]]


def read_passages(folder: Path) -> list[Passage]:
    """The paragraphs of every .txt and .md file under `folder`, in sorted path order."""
    if not folder.is_dir():
        raise BadInput(f"--docs {folder} is not a directory; give a folder of .txt or .md documents")
    passages = []
    for path in sorted(p for p in folder.rglob("*") if p.suffix.lower() in SUFFIXES and p.is_file()):
        try:
            text = read_text(path.read_bytes())
        except UnicodeDecodeError:
            raise BadInput(
                f"--docs: {path} is not UTF-8 text; convert it or move it out of the folder"
            ) from None
        name = path.relative_to(folder).as_posix()
        chunks = [c.strip() for c in PARAGRAPH.split(text)]
        passages += [Passage(name, i, c) for i, c in enumerate(c for c in chunks if c)]
    if not passages:
        raise BadInput(f"--docs {folder} holds no .txt or .md text to retrieve from")
    return passages
