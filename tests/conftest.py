"""Test-wide set-up: Triton runs in its interpreter on machines without a GPU.

TRITON_INTERPRET must be set before triton is first imported, so it is set here, at collection.
"""

from __future__ import annotations

import os
import shutil

import torch

if not torch.cuda.is_available():
    os.environ.setdefault("TRITON_INTERPRET", "1")

# Tests run with the law fully on unless a test says otherwise.
os.environ.setdefault("GATESTACK_CONTRACTS", "full")

HAS_GIT = shutil.which("git") is not None
