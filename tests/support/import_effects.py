"""What importing a module changes of its process's environment, seen from a fresh interpreter.

The test process has imported most of the repository already (and its conftest sets variables of
its own), so each module is imported in a new Python whose environment holds only PATH, HOME and
the path to import from: a variable a module sets is seen whatever the caller's shell had set.
The variables set, changed or removed while each import ran are reported against that module.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

# Run in the fresh interpreter: import each module named on stdin and report what it changed.
_IMPORT_EACH = """
import importlib, json, os, sys
changed = {}
for name in json.load(sys.stdin):
    before = dict(os.environ)
    importlib.import_module(name)
    after = dict(os.environ)
    keys = sorted(k for k in before.keys() | after.keys() if before.get(k) != after.get(k))
    if keys:
        changed[name] = keys
print()  # the report on a line of its own, after anything an import printed
print(json.dumps(changed))
"""


def environment_set_on_import(modules: list[str], path: list[Path]) -> dict[str, list[str]]:
    """module → the environment variables its import changed, for each module that changed any,
    imported in this order in one fresh interpreter with `path` first on its sys.path."""
    env = {key: os.environ[key] for key in ("PATH", "HOME") if key in os.environ}
    env["PYTHONPATH"] = os.pathsep.join(map(str, path))
    done = subprocess.run(
        [sys.executable, "-c", _IMPORT_EACH],
        input=json.dumps(modules),
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    return json.loads(done.stdout.splitlines()[-1])
