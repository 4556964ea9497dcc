"""The corpus as prepare consumes it: batches of short documents, long documents, and file ends.

Documents come in the order they are read, which is the order they are written in. Short ones
are gathered into batches of at most the working set's batch size, a batch may span files;
a long document (longer than a batch) ends the batch before it and comes alone, to be encoded
in pieces (stack.data.long_documents). After the last document of a file comes its FileEnd, so
the per-file counts of the manifest can be kept however documents are batched.
"""

from __future__ import annotations

from collections.abc import Callable, Generator, Sequence
from dataclasses import dataclass

from stack.data.corpus import Document, FileRegion, InputFile, Skipped
from stack.data.formats import Layout, read_documents
from stack.data.line_ends import Normalised
from stack.data.working_set import WorkingSet


@dataclass(frozen=True)
class Long:
    """A document too long for a batch, and the file it is in."""

    item: InputFile
    document: Document | FileRegion


@dataclass(frozen=True)
class FileEnd:
    """The last document of a file has come; whether one of its short documents had invalid UTF-8."""

    item: InputFile
    invalid_utf8: bool


Event = list[Document] | Long | Skipped | Normalised | FileEnd


def is_long(found: Document | FileRegion, working: WorkingSet) -> bool:
    """Whether a document is encoded in pieces rather than in a batch."""
    return isinstance(found, FileRegion) or len(found.data) > working.batch_bytes


def batched(
    files: Sequence[InputFile], layout: Layout, working: WorkingSet, advance: Callable[[int], None]
) -> Generator[Event, None, None]:
    """Every file's documents, as events in reading order; `advance` counts input bytes read."""
    batch: list[Document] = []
    size = 0
    for item in files:
        invalid = False
        for found in read_documents(item, layout, working.batch_bytes, advance):
            if isinstance(found, Skipped | Normalised):
                yield found
            elif is_long(found, working):
                if batch:
                    yield batch
                    batch, size = [], 0
                yield Long(item, found)
            else:
                assert isinstance(found, Document)  # is_long is true for every FileRegion
                invalid |= found.invalid_utf8
                if size + len(found.data) > working.batch_bytes:
                    yield batch
                    batch, size = [], 0
                batch.append(found)
                size += len(found.data)
        yield FileEnd(item, invalid)
    if batch:
        yield batch
