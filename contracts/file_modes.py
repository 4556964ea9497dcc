"""The mode a file the stack writes must have: the statute GATE-CKPT-001's check `modes` holds
each weights file of a checkpoint to, read back with stat after the save, apart from the writer that
set it (stack.outputs.tensor_files).

A file the stack writes gets the mode a newly created file gets under the process's umask, 0666 with
the umask's bits cleared, as its JSON files do (safetensors alone writes 0600).
The umask applied without its complement writes weights mode 0022, which their owner cannot
read, and no gate would see it.
"""

from __future__ import annotations

from collections.abc import Mapping

CREATED = 0o666  # what a newly created file asks for, before the umask


def created_mode(umask: int) -> int:
    """The permission bits a file created under `umask` gets."""
    return CREATED & ~umask


def off_mode(modes: Mapping[str, int], umask: int) -> list[str]:
    """Each file of `modes` (name → permission bits as read back) whose bits are not `created_mode`."""
    wanted = created_mode(umask)
    return [f"{name} {mode:#o} (not {wanted:#o})" for name, mode in modes.items() if mode != wanted]
