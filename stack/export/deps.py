"""The optional libraries of export and import, and the one-line fix when one is missing."""

from __future__ import annotations

import importlib.util
from importlib import metadata

from contracts.errors import BadInput
from stack import __version__

INSTALL_HINT = "pip install 'gatestack[export]'"
# What each format needs: transformers is the reference for HF, onnxscript is what torch's
# ONNX exporter is written in, onnxruntime runs and quantises the graphs; peft loads a LoRA
# adapter's export the way its users will.
NEEDS = {
    "hf": ("transformers",),
    "onnx": ("onnx", "onnxscript", "onnxruntime"),
    "peft": ("transformers", "peft"),
}
# Recorded in export.json, so an export says which libraries checked it: these from their installed
# package metadata, and this project's own from the code that ran (`versions`).
RECORDED = ("torch", "transformers", "peft", "onnx", "onnxscript", "onnxruntime", "tokenizers")
PROJECT = "gatestack"


def require(fmt: str) -> None:
    """Refuse, before any work, when a library the format needs is not installed."""
    missing = [name for name in NEEDS[fmt] if importlib.util.find_spec(name) is None]
    if missing:
        raise BadInput(f"{fmt} export/import needs {', '.join(missing)}: {INSTALL_HINT}")


def versions() -> dict[str, str | None]:
    """The versions of the libraries that took part, None for one not installed.

    The project's own is `stack.__version__`, the version of the code that ran: package metadata
    says None for a checkout run through PYTHONPATH, and could name another installed copy than
    the one imported."""
    found: dict[str, str | None] = {}
    for name in RECORDED:
        try:
            found[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            found[name] = None
    found[PROJECT] = __version__
    return found
