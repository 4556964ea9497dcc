"""Whether a document read from a text file with `stack prepare --doc-sep SEP` still holds SEP: the
statute GATE-DATA-014's check `separated` measures each document the reader yields against,
apart from the reader that split the file (stack.data.text_input).

A file is split at every occurrence of the separator as the file writes it: in a file with CRLF
line ends the separator's line ends are CRLF too, and each document's CRLF are then read as LF. So
a document read with CRLF as LF holds the separator when it holds the separator with LF line ends;
any other holds it when it holds the separator's bytes. A document split from a file at the
separator never does (a reader that misses the separator reads 60 documents as 1 holding the 59
separators).
"""

from __future__ import annotations

CRLF, LF = b"\r\n", b"\n"


def holds_separator(text: bytes, separator: bytes, crlf: bool) -> bool:
    """Whether a document's `text` (its CRLF read as LF when `crlf`) holds `separator`."""
    return (separator.replace(CRLF, LF) if crlf else separator) in text
