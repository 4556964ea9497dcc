#!/usr/bin/env python3
"""`python tools/current_records.py` (make fixtures): the tests' current records made again.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/records/current.py.
"""

import sys

from tools.records.current import main

if __name__ == "__main__":
    sys.exit(main())
