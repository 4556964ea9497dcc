"""Test-wide set-up: Triton runs in its interpreter on machines without a GPU.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection.
"""

from __future__ import annotations

import atexit
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

# The proof by mutation re-checked against evidence/proofs.lock (`make test`, `make proofs`).
pytest_plugins = ["tests.gate_plugin"]

from tests.support.site_build import BuiltSite, build_site_once  # noqa: E402  (after the environment above)


@pytest.fixture(scope="session")
def built_site(tmp_path_factory: pytest.TempPathFactory) -> BuiltSite:
    """The repository's site, built once a session for every test that reads it."""
    return build_site_once(tmp_path_factory)
