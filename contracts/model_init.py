"""What a fresh model's parameters start from, by name: the initialisation GPT's docstring names.

Every weight matrix ~ N(0, init_std²) but the two projections that write into the residual
stream (attn.o and each feed-forward's down), drawn at init_std / √(2 n_layers); norm gains 1,
biases 0, a differential attention's λ vectors ~ N(0, LAMBDA_STD²). One home for the table:
`stack.model.gpt.GPT.init_weights` draws by these constants, GATE-MODEL-003's `init` check
(stack.model.initialisation) holds a freshly built model to `named_initialisation`, and the
integrity check derives what a record's check names for each parameter from its config.toml by
it (contracts/derive/restated.py): a record naming another std, with what the tensor held scaled
to match, is the record of another model's start.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

# The four λ vectors of a differential attention start N(0, LAMBDA_STD²), as the paper's code draws them.
LAMBDA_STD = 0.1
# The projections that write into the residual stream, by the end of their parameter's name.
RESIDUAL_WRITERS = ("attn.o.weight", ".down.weight")


@dataclass(frozen=True)
class Named:
    """A tensor's named initialisation: N(0, std²) when `std` is set, else every element `value`."""

    std: float | None = None
    value: float | None = None


def named_initialisation(name: str, model: Mapping[str, Any]) -> Named:
    """What GPT's docstring names for the parameter `name` of the model a `[model]` table describes."""
    if name.endswith("norm.weight"):  # attn_norm, ffn_norm, final_norm, q_norm, k_norm, head_norm
        return Named(value=1.0)
    if name.endswith(".bias"):
        return Named(value=0.0)
    if ".lambda_" in name:
        return Named(std=LAMBDA_STD)
    std = float(model["init_std"])
    if name.endswith(RESIDUAL_WRITERS):
        return Named(std=std / math.sqrt(2 * int(model["n_layers"])))
    return Named(std=std)
