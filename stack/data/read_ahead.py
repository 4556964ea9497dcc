"""Reading ahead on a thread: the next batch is read, split and hashed while this one is encoded.

The tokenizers library releases the GIL while it encodes a batch on every core, so the Python
work of preparing the next batch (reading, finding separators, parsing JSON, repairing and
hashing) can go on beside it instead of after it. The thread runs at most `depth` items ahead,
which bounds the memory it adds to that many batches. An error on the thread is raised where
the item would have been; when the consumer stops early (an error, Ctrl-C), the thread stops
too and closes its files before the consumer goes on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Generator, Iterator
from typing import TypeVar

T = TypeVar("T")
POLL_SECONDS = 0.1


def read_ahead(source: Generator[T, None, None], depth: int = 1) -> Iterator[T]:
    """The items of `source`, produced on a thread up to `depth` items before they are asked for."""
    items: queue.Queue[tuple[bool, object]] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(entry: tuple[bool, object]) -> bool:
        while not stop.is_set():
            try:
                items.put(entry, timeout=POLL_SECONDS)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        ending: tuple[bool, object] = (False, None)
        try:
            for item in source:
                if not put((True, item)):
                    return
        except BaseException as exc:  # handed to the consumer, which raises it as its own
            ending = (False, exc)
        finally:
            source.close()
        put(ending)

    thread = threading.Thread(target=produce, name="prepare-read-ahead", daemon=True)
    thread.start()
    try:
        while True:
            more, value = items.get()
            if not more:
                if isinstance(value, BaseException):
                    raise value
                return
            yield value  # type: ignore[misc]  # an item of source, as put
    finally:
        stop.set()
        thread.join()
