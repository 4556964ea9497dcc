#!/usr/bin/env python3
"""`python tools/retire.py`: retire ledger records, with proof.

The command keeps this path, where the Makefile, CI and the docs run it; the code is
tools/records/retire.py.
"""

import sys

from tools.records.retire import main

if __name__ == "__main__":
    sys.exit(main())
