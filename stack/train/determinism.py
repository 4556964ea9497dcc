"""`train.deterministic`: deterministic kernels as a setting, and a record that says what ran.

On (the default) a run uses only deterministic kernels, strictly: PyTorch raises on an op that
has none instead of warning and running it (warn-only mode, the stack's default before, let a
non-deterministic kernel run while the record said otherwise). Off, the run takes PyTorch's
fastest kernels, says so on stderr and in its record, and its replay is judged within a tolerance
(GATE-CKPT-003) instead of bit for bit.

What "on" switches, and why each (docs/gpu.md has the measurements):

- `torch.use_deterministic_algorithms(True)`, not warn-only: ops pick their deterministic
  implementation (the embedding's backward without atomics, one key split in the
  memory-efficient attention's backward, FlashAttention-2's deterministic backward) and an op
  without one raises, which the loop turns into a one-line refusal naming it.
- cuBLAS's workspace fixed (CUBLAS_WORKSPACE_CONFIG), cuDNN deterministic and not benchmarking,
  Inductor's deterministic mode (no on-device benchmarking of numerically different choices).
- Not `torch.utils.deterministic.fill_uninitialized_memory`, which PyTorch's deterministic mode
  turns on by default: it fills every new tensor with NaN before an op writes it, so that an op
  whose result reads memory it never wrote gives the same (NaN) answer each time. A model whose
  training ends finite under it has no such read: the fill buys nothing there, and it costs a
  fill kernel per allocation (3.8 % of a `demo` step on a CPU; on an H200 at `gpt2` a plain
  loop's two steps held 1,180 fill kernels, 7 % of their GPU time: docs/gpu.md). Should an op
  ever read unwritten memory, the in-process replay's bit-for-bit comparison of the first steps
  (GATE-CKPT-003) halts the run rather than let it claim repeatability.
- SDPA without its cuDNN backend. In PyTorch's source (aten/src/ATen/native/transformers/cuda/
  attention_backward.cu and aten/src/ATen/native/cudnn/MHA.cpp) strict mode makes the flash and
  memory-efficient backward passes deterministic, while the cuDNN backward graph has no such
  switch: strict mode runs it non-deterministically and without a word (seen on an H100 at
  12 layers × 768, ctx 1024; docs/gpu.md, "Determinism"). The math backend is plain matmuls.
  The Triton attention (stack.kernels.flash_attention) is deterministic by construction: each
  program writes its own tiles, nothing is accumulated with atomics.

`Alerts` collects what PyTorch reports about non-determinism during a run, counted per op, into
the record instead of the terminal; `Switches.now()` reads the switches as torch has them, which
the loop records at its first step (the record states what ran, never what was asked for).
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import asdict, dataclass, replace
from typing import Any

import torch

from contracts.derive.training import (
    CUBLAS_REPRODUCIBLE,
    NONDETERMINISTIC_SDPA,
    SDPA_BACKENDS,
    SWITCHES_WHEN_DETERMINISTIC,
    UNFILLED,
)
from contracts.errors import BadInput

CUBLAS_ENV = "CUBLAS_WORKSPACE_CONFIG"
INDUCTOR_ENV = "TORCHINDUCTOR_DETERMINISTIC"
INDUCTOR_CONFIG = "torch._inductor.config"
# How PyTorch words a non-deterministic op: "<op> does not have a deterministic implementation"
# (an alert, raised or warned), "<op> defaults to a non-deterministic algorithm" (the attention
# backends under warn-only), and cuBLAS without its workspace fixed.
ALERT_PATTERNS = (
    re.compile(
        r"(?P<op>[A-Za-z_][\w.]*(?: [A-Za-z][\w.]*){0,2}) does not have a deterministic implementation"
    ),
    re.compile(r"(?P<op>[A-Za-z_][\w.]*(?: [A-Za-z][\w.]*){0,2}) defaults to a non-deterministic algorithm"),
    re.compile(r"not deterministic because it uses (?P<op>CuBLAS)"),
)
ALERT_WARNING = (
    r".*(does not have a deterministic implementation|non-deterministic algorithm|because it uses CuBLAS)"
)


def alerted_op(message: str) -> str | None:
    """The op a PyTorch non-determinism report names, or None when `message` is no such report."""
    for pattern in ALERT_PATTERNS:
        found = pattern.search(message)
        if found is not None:
            return found.group("op")
    return None


def _sdpa_enabled(backend: str) -> bool:
    return bool(getattr(torch.backends.cuda, f"{backend}_sdp_enabled")())


def _inductor_deterministic() -> bool:
    """Inductor's deterministic mode; read from its environment variable until Inductor is loaded
    (importing it takes seconds, and only train.compile needs it)."""
    inductor = sys.modules.get(INDUCTOR_CONFIG)
    if inductor is None:
        return os.environ.get(INDUCTOR_ENV) == "1"
    return bool(inductor.deterministic)


def _set_inductor_deterministic(on: bool) -> None:
    """Set Inductor's deterministic mode: its config where it is loaded, and its environment
    variable in every case. The variable is what an Inductor loaded later reads, and what the
    processes this one starts inherit, so it must say the same as the config: a run that loaded
    Inductor after setting it would otherwise leave it set when the switches are put back."""
    inductor = sys.modules.get(INDUCTOR_CONFIG)
    if inductor is not None:
        inductor.deterministic = on
    if on:
        os.environ[INDUCTOR_ENV] = "1"
    else:
        os.environ.pop(INDUCTOR_ENV, None)


@dataclass(frozen=True)
class Switches:
    """Every process-wide switch that decides which kernels run, as torch reports it."""

    deterministic_algorithms: bool
    warn_only: bool
    fill_uninitialized_memory: bool
    cudnn_deterministic: bool
    cudnn_benchmark: bool
    inductor_deterministic: bool
    sdpa_backends: tuple[str, ...]
    cublas_workspace_config: str | None

    @classmethod
    def now(cls) -> Switches:
        return cls(
            deterministic_algorithms=torch.are_deterministic_algorithms_enabled(),
            warn_only=torch.is_deterministic_algorithms_warn_only_enabled(),
            fill_uninitialized_memory=torch.utils.deterministic.fill_uninitialized_memory,  # type: ignore[attr-defined]
            cudnn_deterministic=torch.backends.cudnn.deterministic,
            cudnn_benchmark=torch.backends.cudnn.benchmark,
            inductor_deterministic=_inductor_deterministic(),
            sdpa_backends=tuple(b for b in SDPA_BACKENDS if _sdpa_enabled(b)),
            cublas_workspace_config=os.environ.get(CUBLAS_ENV),
        )

    def wanted(self, deterministic: bool) -> Switches:
        """These switches with `train.deterministic` applied: on, every one set for determinism;
        off, PyTorch's determinism checks off and everything else left as it was. A cuBLAS
        workspace the environment sets is kept when it is one cuBLAS documents as reproducible;
        any other is refused under `train.deterministic` (CUDA's deterministic mode would raise at
        the first product, and a CPU run's record would claim a workspace no GPU run could use)."""
        switched = replace(self, **SWITCHES_WHEN_DETERMINISTIC[deterministic])
        if not deterministic:
            return switched
        workspace = self.cublas_workspace_config
        if workspace is not None and workspace not in CUBLAS_REPRODUCIBLE:
            raise BadInput(
                f"{CUBLAS_ENV}={workspace!r} is not one of cuBLAS's reproducible settings "
                f"({', '.join(CUBLAS_REPRODUCIBLE)}), which train.deterministic needs: unset it, set one of "
                "those, or set train.deterministic=false"
            )
        return replace(
            switched,
            **UNFILLED,  # buys no repeatability, costs a fill per allocation
            sdpa_backends=tuple(b for b in self.sdpa_backends if b not in NONDETERMINISTIC_SDPA),
            cublas_workspace_config=self.cublas_workspace_config or CUBLAS_REPRODUCIBLE[0],
        )

    def apply(self) -> None:
        """Make these the process's switches."""
        if self.cublas_workspace_config is None:
            os.environ.pop(CUBLAS_ENV, None)
        else:
            os.environ[CUBLAS_ENV] = self.cublas_workspace_config
        # torch.use_deterministic_algorithms would also import Inductor (seconds) to set its
        # deterministic mode, which _set_inductor_deterministic sets without loading it.
        torch._C._set_deterministic_algorithms(self.deterministic_algorithms, warn_only=self.warn_only)
        torch.utils.deterministic.fill_uninitialized_memory = self.fill_uninitialized_memory  # type: ignore[attr-defined]
        torch.backends.cudnn.deterministic = self.cudnn_deterministic
        torch.backends.cudnn.benchmark = self.cudnn_benchmark
        _set_inductor_deterministic(self.inductor_deterministic)
        for backend in SDPA_BACKENDS:
            getattr(torch.backends.cuda, f"enable_{backend}_sdp")(backend in self.sdpa_backends)

    def as_flags(self) -> dict[str, Any]:
        """The switches as the record's determinism flags."""
        return {**asdict(self), "sdpa_backends": list(self.sdpa_backends)}


@contextlib.contextmanager
def switched(switches: Switches) -> Iterator[None]:
    """`switches` for the length of the block; the switches that were there before are put back
    afterwards, so a test or a notebook that trains twice starts clean. (benchmarks/
    determinism_parts.py sets every switch but one as `train.deterministic` would, to price each.)"""
    before = Switches.now()
    switches.apply()
    try:
        yield
    finally:
        before.apply()


@contextlib.contextmanager
def kernels(deterministic: bool) -> Iterator[Alerts]:
    """`train.deterministic` for the length of a run, set-up included; yields the run's `Alerts`.

    An op PyTorch refuses under strict mode becomes the run's one-line refusal (set-up's forward
    checks reach the model's ops before anything is written).
    """
    alerts = Alerts()
    with switched(Switches.now().wanted(deterministic)):
        try:
            with alerts.watching():
                yield alerts
        except RuntimeError as exc:
            refusal = alerts.refusal(exc)
            if refusal is None:
                raise
            raise refusal from None


class Alerts:
    """The non-deterministic ops PyTorch reported during a run, counted per op.

    Under strict mode PyTorch raises on such an op; `refusal` turns that error into the run's one
    line. Anything PyTorch only warns about (warn-only code elsewhere, a library that sets it) is
    counted here rather than printed: the record is where a reader looks for it.
    """

    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    @contextlib.contextmanager
    def watching(self) -> Iterator[Alerts]:
        """Count non-determinism warnings raised inside the block; other warnings pass through."""
        with warnings.catch_warnings():
            warnings.filterwarnings("always", message=ALERT_WARNING)  # every report, not only the first
            shown = warnings.showwarning

            def show(message: Warning | str, category: type[Warning], *args: Any, **kwargs: Any) -> None:
                op = alerted_op(str(message))
                if op is None:
                    shown(message, category, *args, **kwargs)
                else:
                    self.counts[op] += 1

            warnings.showwarning = show
            yield self

    def refusal(self, error: BaseException) -> BadInput | None:
        """The one-line refusal for an error PyTorch raised on a non-deterministic op (counted);
        None for any other error."""
        op = alerted_op(str(error))
        if op is None:
            return None
        self.counts[op] += 1
        return BadInput(
            f"{op} has no deterministic implementation, and train.deterministic=true runs only deterministic "
            "kernels: set train.deterministic=false to run it (the run is then not claimed repeatable "
            "bit for bit), or change the setting that needs it"
        )

    def as_flags(self) -> dict[str, int]:
        return dict(sorted(self.counts.items()))
