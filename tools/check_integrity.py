#!/usr/bin/env python3
"""`python tools/check_integrity.py` (make integrity): the integrity check.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/integrity/check.py.
"""

import sys

from tools.integrity.check import main

if __name__ == "__main__":
    sys.exit(main())
