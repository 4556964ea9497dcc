"""BM25, the statute: what a retrieved passage scores for a query, written out once from its definition.

A passage and a query are bags of lower-cased words (`\\w+`). A passage p scores, for the query's
words w as they occur (a repeated word counts each time),

    score(p) = Σ_w idf(w) · f(w, p) · (k1 + 1) / (f(w, p) + k1 · (1 − b + b · |p| / avgdl))
    idf(w)   = ln(1 + (N − n(w) + 0.5) / (n(w) + 0.5))

with f(w, p) the count of w in p, |p| its length in words, avgdl the mean length, N passages and
n(w) of them holding w: Robertson and Zaragoza's BM25 with the non-negative idf Lucene uses,
k1 = 1.2 and b = 0.75. GATE-FT-002's check retrieval rescores every passage with this, apart from
the retriever's own index (stack.eval.retrieval), so a scorer bug the retriever and a rescore by
the same scorer would share (an idf without its 1, which turns common words negative) shows as
passages left out that score above those retrieved, or fewer retrieved than asked.

Which passages a folder holds is the statute's too (`folder_passages`): every file under it whose
name ends in .txt or .md (any case), in sorted path order, read as UTF-8 without a byte-order mark
and with CRLF as LF, cut at blank lines, each piece stripped, the empty ones dropped. The check
rescores the passages this walk finds, not the retriever's list, and holds that list to them: a
reader that skips the .md files would otherwise be judged against itself and pass.
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections import Counter
from collections.abc import Callable
from pathlib import Path

K1 = 1.2
B = 0.75
WORD = re.compile(r"\w+")
DOCUMENT_SUFFIXES = (".txt", ".md")
BLANK_LINE = re.compile(r"\n\s*\n")
# One passage of a folder: the file's path under it (POSIX), its paragraph number, its text.
FolderPassage = tuple[str, int, str]


def words(text: str) -> list[str]:
    """The lower-cased words of `text`, in order."""
    return WORD.findall(text.lower())


def bm25(passages: list[str]) -> Callable[[str], list[float]]:
    """The scorer of `passages`: a query → every passage's BM25 score, by the definition above, in
    the passages' order (the counts made once, so each item's query costs one pass)."""
    bags = [Counter(words(text)) for text in passages]
    lengths = [sum(bag.values()) for bag in bags]
    avgdl = sum(lengths) / max(1, len(passages))
    n = len(passages)
    idf = {
        w: math.log(1 + (n - held + 0.5) / (held + 0.5))
        for w, held in Counter(w for bag in bags for w in bag).items()
    }

    def scores(query: str) -> list[float]:
        asked = words(query)
        return [
            sum(
                idf[w] * bag[w] * (K1 + 1) / (bag[w] + K1 * (1 - B + B * length / avgdl))
                for w in asked
                if w in bag
            )
            for bag, length in zip(bags, lengths, strict=True)
        ]

    return scores


def folder_passages(folder: Path) -> list[FolderPassage]:
    """Every passage of the documents under `folder`, by the walk the module docstring states."""
    passages: list[FolderPassage] = []
    paths = sorted(p for p in folder.rglob("*") if p.suffix.lower() in DOCUMENT_SUFFIXES and p.is_file())
    for path in paths:
        data = path.read_bytes().removeprefix(b"\xef\xbb\xbf").replace(b"\r\n", b"\n")
        pieces = [piece.strip() for piece in BLANK_LINE.split(data.decode("utf-8", errors="replace"))]
        name = path.relative_to(folder).as_posix()
        passages += [(name, i, text) for i, text in enumerate(piece for piece in pieces if piece)]
    return passages


def passages_read(passages: list[FolderPassage]) -> dict[str, object]:
    """A passage list as GATE-FT-002's check retrieval compares two: how many passages each file
    gave, and the sha256 of the whole list (sources, numbers and texts, in order)."""
    files = dict(Counter(source for source, _, _ in passages))
    digest = hashlib.sha256(json.dumps([list(p) for p in passages], ensure_ascii=False).encode("utf-8"))
    return {"files": files, "sha256": digest.hexdigest()}
