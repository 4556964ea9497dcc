"""`python -m stack` is the `stack` command (torchrun launches it this way: a worker of a
data-parallel run ends with its command's code, without the interpreter's teardown)."""

import sys

from stack.cli import main
from stack.train.launch import end_worker

code = main()
end_worker(code)
sys.exit(code)
