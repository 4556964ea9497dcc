"""`python -m stack` is the `stack` command (torchrun launches it this way)."""

import sys

from stack.cli import main

sys.exit(main())
