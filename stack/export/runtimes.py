"""Logits from the foreign runtimes an export is made for, on the same token windows.

Each loads the exported files the way a user would (transformers' `AutoModelForCausalLM` with
no custom code and no hub access; an ONNX Runtime CPU session), so a check passes only if the
files on disk are right, not just the tensors in memory.
"""

from __future__ import annotations

import contextlib
import copy
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch

from contracts.errors import BadInput
from contracts.logits_parity import max_abs_difference
from stack.export.onnx_export import INPUT, OUTPUT


@contextlib.contextmanager
def quiet_transformers() -> Iterator[None]:
    """Silence transformers' progress bars and notices for the duration (the CLI prints its own lines)."""
    from transformers.utils import logging as hf_logging

    verbosity = hf_logging.get_verbosity()
    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        hf_logging.set_verbosity(verbosity)
        hf_logging.enable_progress_bar()


def load_hf_model(hf_dir: Path) -> torch.nn.Module:
    """The directory as transformers loads it: AutoModelForCausalLM, fp32, local files only, eval mode."""
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            str(hf_dir), dtype=torch.float32, local_files_only=True, trust_remote_code=False
        )
    return model.eval()


def load_as_user(hf_dir: Path) -> torch.nn.Module:
    """The directory as a user's plain `AutoModelForCausalLM.from_pretrained(DIR)` loads it: no dtype
    asked for (transformers then takes the one config.json declares), local files only, eval mode.
    What an export's parity judges (GATE-EXPORT-001), so a config.json whose dtype is not its
    weights' loads, and is judged, as users get it."""
    from transformers import AutoModelForCausalLM

    with quiet_transformers():
        model = AutoModelForCausalLM.from_pretrained(
            str(hf_dir), local_files_only=True, trust_remote_code=False
        )
    return model.eval()


def stored_dtypes(weights: Path) -> list[str]:
    """The dtypes a safetensors file stores its tensors in, read from its header
    (contracts.hf_export.stored_dtypes)."""
    from contracts.hf_export import stored_dtypes as header_dtypes
    from contracts.reading import safetensors_header

    return header_dtypes(safetensors_header(weights))


@torch.no_grad()
def hf_logits(hf_dir: Path, windows: torch.Tensor) -> torch.Tensor:
    """Logits (N, T, vocab) of the HF directory's model on `windows`."""
    return logits_of(load_hf_model(hf_dir), windows)


@torch.no_grad()
def logits_of(hf_model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """Logits (N, T, vocab) of a loaded transformers model on `windows`."""
    return hf_model(input_ids=windows).logits.float()


# The special token ids a config names, which generation reads to start, stop and pad.
SPECIAL_KEYS = ("bos_token_id", "eos_token_id", "pad_token_id")


def hf_special_ids(hf_dir: Path, hf_model: torch.nn.Module) -> dict[str, Any]:
    """The special token ids of an HF directory as a user's transformers reads them: the loaded
    model's config and generation config (what `generate` starts and stops with), and the
    end-of-sequence id of its tokenizer (AutoTokenizer), by where each was read."""
    from transformers import AutoTokenizer

    with quiet_transformers():
        tokenizer = AutoTokenizer.from_pretrained(str(hf_dir), local_files_only=True)
    found = {f"config.json {key}": getattr(hf_model.config, key, None) for key in SPECIAL_KEYS}
    found |= {f"generation {key}": getattr(hf_model.generation_config, key, None) for key in SPECIAL_KEYS}
    return found | {"tokenizer eos_token_id": tokenizer.eos_token_id}


@torch.no_grad()
def peft_logits(base_dir: Path, adapter_dir: Path, windows: torch.Tensor) -> tuple[torch.Tensor, list[str]]:
    """Logits (N, T, vocab) of peft's `PeftModel` (the adapter of `adapter_dir` on the HF model of
    `base_dir`) on `windows`, and the adapter file's keys peft did not load as they are in the file
    (peft only warns about keys that miss the model)."""
    from peft import PeftModel
    from peft.utils import get_peft_model_state_dict
    from safetensors.torch import load_file

    from stack.export.peft_format import WEIGHTS

    base = load_hf_model(base_dir)
    with quiet_transformers(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # deprecation notices of transformers' internals, not ours to act on
        model = PeftModel.from_pretrained(base, str(adapter_dir), is_trainable=False).eval()
        loaded = get_peft_model_state_dict(model, save_embedding_layers=False)
    written = load_file(str(Path(adapter_dir) / WEIGHTS))
    not_loaded = sorted(k for k, v in written.items() if k not in loaded or not torch.equal(loaded[k], v))
    return model(input_ids=windows).logits.float(), not_loaded


def onnx_logits(graph: Path, windows: torch.Tensor) -> torch.Tensor:
    """Logits (N, T, vocab) of an ONNX graph on `windows`, run by ONNX Runtime on CPU."""
    import onnxruntime as ort
    from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only; warnings about unused initialisers are noise here
    try:
        session = ort.InferenceSession(str(graph), options, providers=["CPUExecutionProvider"])
    except (ort_errors.InvalidGraph, ort_errors.NotImplemented, ort_errors.Fail) as exc:
        # Typically an --opset newer than this onnxruntime implements.
        raise BadInput(
            f"onnxruntime {ort.__version__} cannot load the exported graph ({str(exc)[:160]}); "
            "choose a lower --opset (18 is the default) or upgrade onnxruntime"
        ) from None
    (logits,) = session.run([OUTPUT], {INPUT: windows.numpy()})
    return torch.from_numpy(logits).float()


@torch.no_grad()
def stack_rounding(model: torch.nn.Module, windows: torch.Tensor, logits: torch.Tensor) -> tuple[float, str]:
    """The rounding the stack's fp32 forward makes on `windows`: the largest difference of its
    `logits` from the same model's in float64 (contracts.logits_parity.max_abs_difference). Two
    correct fp32 implementations differ by about this much, which GATE-EXPORT-001's tolerance scales
    with (contracts.judges.export.hf_logits_tolerance); the float64 copy costs twice the weights' memory
    for the moment it is used. Returned with the dtype of the logits that forward gave, which
    GATE-EXPORT-001's check exact holds to float64: an fp32 "float64" copy measures no rounding."""
    exact = copy.deepcopy(model).double().eval()
    with torch.no_grad():
        logits64, _ = exact(windows)
    return max_abs_difference(logits64, logits), str(logits64.dtype)


def stack_logits(model: torch.nn.Module, windows: torch.Tensor) -> torch.Tensor:
    """The stack model's own logits on `windows`: the reference every export is held to (no graph
    kept: the logits are only compared)."""
    with torch.no_grad():
        logits, _ = model(windows)
    return logits.float()
