"""Running a function over many tasks on worker processes, results in task order.

`stack prepare` fans the files of a corpus out to worker processes and merges what they return
in file order, so what it writes is the same for any number of workers. With one worker the
tasks run in this process, one after the other, through the same function.

Workers are started fresh ("spawn"): a forked copy of a process whose tokenizer already ran its
thread pool would deadlock, or be told to run single-threaded. Starting one costs about a
second (its imports), so one pool serves every pass of a prepare: each pass writes its job (what
all its tasks share: settings, the tokenizer) to a file once, and a worker reads it at its first
task of the pass. The cores are shared out among the workers' own thread pools (the tokenizers
library's encode_batch runs on RAYON_NUM_THREADS threads). At most two tasks per worker are
handed out ahead of the one being merged, which bounds what waits in memory and on disk.
"""

from __future__ import annotations

import multiprocessing
import os
import pickle
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from itertools import islice
from pathlib import Path
from types import TracebackType
from typing import Any, TypeVar

J = TypeVar("J")
T = TypeVar("T")
R = TypeVar("R")

AHEAD_PER_WORKER = 2

_jobs: dict[str, Any] = {}  # in a worker: the job of each pass, by the file it came in


def cores() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def _start(threads: int) -> None:
    os.environ["RAYON_NUM_THREADS"] = str(threads)


def _run(function: Callable[[Any, Any], Any], job_file: str, task: Any) -> Any:
    if job_file not in _jobs:
        _jobs.clear()  # a new pass: the last one's job is done with
        _jobs[job_file] = pickle.loads(Path(job_file).read_bytes())
    return function(_jobs[job_file], task)


class Fanout:
    """`workers` processes (none when 1) for the passes of one prepare; `scratch` holds the job files."""

    def __init__(self, workers: int, scratch: Path) -> None:
        self.workers, self.scratch = workers, scratch
        self._pool: ProcessPoolExecutor | None = None
        self._passes = 0
        if workers > 1:
            context = multiprocessing.get_context("spawn")
            threads = max(1, cores() // workers)
            self._pool = ProcessPoolExecutor(
                workers, mp_context=context, initializer=_start, initargs=(threads,)
            )

    def __enter__(self) -> Fanout:
        return self

    def __exit__(
        self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None
    ) -> None:
        if self._pool is not None:
            self._pool.shutdown(wait=True, cancel_futures=True)

    def ordered(self, function: Callable[[J, T], R], job: J, tasks: Sequence[T]) -> Iterator[R]:
        """`function(job, task)` for every task, in task order; an exception of a task is raised here.

        `function` must be a module-level function and `job` and each task picklable.
        """
        if self._pool is None:
            for task in tasks:
                yield function(job, task)
            return
        self._passes += 1
        job_file = self.scratch / f".job-{self._passes}.pickle"
        job_file.write_bytes(pickle.dumps(job))
        pool, remaining = self._pool, iter(tasks)
        pending: deque[Future[R]] = deque()
        try:
            for task in islice(remaining, AHEAD_PER_WORKER * self.workers):
                pending.append(pool.submit(_run, function, str(job_file), task))
            while pending:
                result = pending.popleft().result()
                for task in islice(remaining, 1):
                    pending.append(pool.submit(_run, function, str(job_file), task))
                yield result
        finally:
            for future in pending:
                future.cancel()
            job_file.unlink(missing_ok=True)
