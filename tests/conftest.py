"""Test-wide set-up: Triton runs in its interpreter on machines without a GPU.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection.
"""

from __future__ import annotations

import atexit
import gc
import os
import shutil
import tempfile

# One intra-op thread, here and in every subprocess a test starts: the tests' models are tiny, so
# a second thread buys nothing, and on a loaded machine OpenMP's threads spin waiting for each
# other (a 0.1 s evaluation took 3.5 s with two threads while another job ran).
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest
import torch  # after the thread count, which torch reads when it loads

torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

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
# those full walks took a tenth of a worker's time. Young objects are now collected every 50,000
# allocations instead of 700, and what is alive once the tests are collected is frozen out of the
# walks (pytest_collection_finish); everything the tests themselves create is still collected.
gc.set_threshold(50_000, 20, 10)

# The proof by mutation re-checked against evidence/proofs.lock (`make test`, `make proofs`).
pytest_plugins = ["tests.gate_plugin"]

from tests.support.site_build import BuiltSite, build_site_once  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The repository's site, built once a session for every test that reads it."""
    return build_site_once(tmp_path_factory)


# The files of ten seconds or more (seconds of one core each on the 2-core CI machine, from
# `--durations=0`, 2026-11-28), longest first; every other file takes less. Under `--dist loadfile`
# a file runs whole on one worker and files are handed out in collection order (the Makefile turns
# off xdist's reordering by test count), so one of these handed out last would keep one core at
# work while the other waits: they are collected first. The order changes no result.
LONGEST_FILES = (
    "tests/integrity/test_integrity_tampering.py",  # 88 s
    "tests/train/test_dist.py",  # 81 s
    "tests/cli/test_options_matrix.py",  # 51 s
    "tests/integrity/test_integrity_derived.py",  # 49 s
    "tests/proofs/test_gate_plugin.py",  # 46 s
    "tests/benchmarks/test_benchmark_records.py",  # 41 s
    "tests/cli/test_fuzz_cli.py",  # 28 s
    "tests/model/test_reference_forward.py",  # 26 s
    "tests/train/test_finetune_dataset_sizes.py",  # 22 s
    "tests/site/test_site_browser.py",  # 21 s
    "tests/cli/test_artifacts.py",  # 21 s
    "tests/train/test_train_resume.py",  # 21 s
    "tests/tune/test_tune_dpo.py",  # 20 s
    "tests/es/test_es_signal_resume.py",  # 20 s
    "tests/export/test_export_onnx.py",  # 20 s
    "tests/benchmarks/test_reference_run.py",  # 17 s
    "tests/es/test_es.py",  # 13 s
    "tests/data/test_data_formats.py",  # 13 s
    "tests/kernels/test_kernel_flash_attention.py",  # 13 s
    "tests/train/test_replay_state.py",  # 13 s
    "tests/tune/test_tune_distill.py",  # 12 s
    "tests/data/test_data_filters.py",  # 11 s
    "tests/train/test_train_gates.py",  # 10 s
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """The longest files first (LONGEST_FILES), every other test in its collected order."""
    rank = {path: place for place, path in enumerate(LONGEST_FILES)}
    items.sort(key=lambda item: rank.get(item.nodeid.partition("::")[0], len(rank)))


def pytest_collection_finish() -> None:
    """Freeze what the imports and collection left alive, so that no collection walks it again."""
    gc.collect()
    gc.freeze()
