"""Test-wide set-up: threads, Triton's interpreter for the tests marked `triton`, Hypothesis's
profile, the law fully on, the cyclic collector, and the order the files run in.

TRITON_INTERPRET must be set before triton is first imported, so the kernels are built here, at
collection.
"""

from __future__ import annotations

import atexit
import gc
import importlib
import os
import pkgutil
import shutil
import tempfile
from collections.abc import Iterator

# One intra-op thread, here and in every subprocess a test starts: the tests' models are tiny, so
# a second thread buys nothing, and on a loaded machine OpenMP's threads spin waiting for each
# other (a 0.1 s evaluation took 3.5 s with two threads while another job ran).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import hypothesis
import pytest
import torch  # after the thread count, which torch reads when it loads

import stack.kernels

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

# Without a GPU, Triton's kernels run in its interpreter, which must be on when triton is first
# imported: it is, here, so every kernel module is built interpreted in every worker. Then it is
# switched off again, and only the tests marked `triton` (the kernel's, the attention paths', the
# options matrix's) switch it on, for themselves and the commands they start (`triton_interpreter`).
# Every other test runs as a CPU user's command does: GATE-MODEL-001's start-up check compares the
# sdpa and naive paths, not the interpreted kernel, which took a tenth of a second every run.
INTERPRETED = not torch.cuda.is_available() and "TRITON_INTERPRET" not in os.environ
if INTERPRETED:
    os.environ["TRITON_INTERPRET"] = "1"
    for kernels in pkgutil.iter_modules(stack.kernels.__path__, "stack.kernels."):
        importlib.import_module(kernels.name)  # every kernel module, built interpreted once
    del os.environ["TRITON_INTERPRET"]

# Hypothesis holds no example to a time limit: its default fails an example that takes over 200 ms,
# which on a loaded machine measures the machine, not the property (a speed is a benchmark's
# evidence, never an assertion). Registered before the test modules are imported, so every
# `@settings` there starts from it.
hypothesis.settings.register_profile("gatestack", deadline=None)
hypothesis.settings.load_profile("gatestack")

# Tests run with the law fully on unless a test says otherwise.
os.environ.setdefault("GATESTACK_CONTRACTS", "full")

# A crash file a test provokes goes to a directory of this session, not the user's state dir; the
# session that made the directory removes it when it ends.
if "GATESTACK_CRASH_DIR" not in os.environ:
    os.environ["GATESTACK_CRASH_DIR"] = tempfile.mkdtemp(prefix="gatestack-test-crashes-")
    atexit.register(shutil.rmtree, os.environ["GATESTACK_CRASH_DIR"], ignore_errors=True)

# CPython's cyclic collector, at its default thresholds (700, 10, 10), walks every live container
# object again and again; a worker of this suite holds over a million of them (torch's modules, and
# the parsed sources and logs the integrity checks keep across hundreds of repository copies), and
# those full walks take a tenth of a worker's time. Young objects are collected every 50,000
# allocations instead of 700, so the full walks come a hundred times less often; everything the
# tests create is still collected.
gc.set_threshold(50_000, 20, 10)

# The proof by mutation re-checked against evidence/proofs.lock (`make test`, `make proofs`).
pytest_plugins = ["tests.gate_plugin"]

from tests.support.site_build import BuiltSite, build_site_once  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The repository's site, built once a session for every test that reads it."""
    return build_site_once(tmp_path_factory)


# The files of ten seconds or more (seconds of one core each on a 2-core CI machine, the mean of two
# `make test` runs' junit durations, 2026-12-02), longest first; every other file takes less. Under
# `--dist loadfile` a file runs whole on one worker and files are handed out in collection order
# (the Makefile turns off xdist's reordering by test count), so one of these handed out last would
# keep one core at work while the other waits: they are collected first. The order changes no result.
LONGEST_FILES = (
    "tests/integrity/test_integrity_tampering.py",  # 111 s
    "tests/benchmarks/test_benchmark_records.py",  # 85 s
    "tests/train/test_dist.py",  # 85 s
    "tests/cli/test_options_matrix.py",  # 49 s
    "tests/cli/test_fuzz_cli.py",  # 28 s
    "tests/integrity/test_integrity_derived.py",  # 26 s
    "tests/site/test_site_browser.py",  # 24 s
    "tests/es/test_es_signal_resume.py",  # 21 s
    "tests/benchmarks/test_reference_run.py",  # 19 s
    "tests/es/test_es.py",  # 17 s
    "tests/benchmarks/test_stats_tiles.py",  # 15 s
    "tests/model/test_reference_forward.py",  # 15 s
    "tests/train/test_train_resume.py",  # 15 s
    "tests/export/test_export_onnx.py",  # 14 s
    "tests/proofs/test_gate_plugin.py",  # 14 s
    "tests/train/test_finetune_dataset_sizes.py",  # 13 s
    "tests/data/test_data_filters.py",  # 12 s
    "tests/train/test_replay_state.py",  # 11 s
    "tests/tune/test_tune_distill.py",  # 11 s
    "tests/trace/test_trace_tracer.py",  # 10 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES), every other test in its collected order."""
    rank = {path: place for place, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


def _interpret_if_marked(request: pytest.FixtureRequest) -> Iterator[None]:
    """TRITON_INTERPRET=1 while a test (or module) marked `triton` runs, on a machine without a GPU."""
    if not INTERPRETED or request.node.get_closest_marker("triton") is None:
        yield
        return
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("TRITON_INTERPRET", "1")
        yield


@pytest.fixture(autouse=True, scope="module")
def triton_interpreter_for_module(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a module marked `triton`: its module fixtures too run the kernel interpreted."""
    yield from _interpret_if_marked(request)


@pytest.fixture(autouse=True)
def triton_interpreter(request: pytest.FixtureRequest) -> Iterator[None]:
    """For a test marked `triton` (itself, its class or its module)."""
    yield from _interpret_if_marked(request)
