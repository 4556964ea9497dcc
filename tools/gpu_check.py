#!/usr/bin/env python3
"""`python tools/gpu_check.py` (make gpu-check): the GPU check, filed as one evidence record.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/records/gpu_check.py.
"""

import sys

from tools.records.gpu_check import main

if __name__ == "__main__":
    sys.exit(main())
