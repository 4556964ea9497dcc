"""`train.task` → its objective: the one table of the training loop's tasks.

Each objective lives in a module of its own (stack.train.objective holds the contract and
pretraining); this table names them all, so the loop and the run's set-up look a task up in one
place and an objective never needs to know of the others.
"""

from __future__ import annotations

from collections.abc import Callable

from contracts.errors import BadInput
from stack.train.distill_objective import Distill
from stack.train.dpo_objective import Dpo
from stack.train.objective import DEFAULT_TASK, Objective, Pretrain
from stack.train.sft_objective import Sft

OBJECTIVES: dict[str, Callable[[], Objective]] = {
    DEFAULT_TASK: Pretrain,
    Sft.name: Sft,
    Dpo.name: Dpo,
    Distill.name: Distill,
}


def objective_for(task: str | None) -> Objective:
    """The objective `train.task` names (unset: pretraining); an unknown task is bad input."""
    name = task or DEFAULT_TASK
    if name not in OBJECTIVES:
        raise BadInput(f"unknown train.task {name!r}; tasks: {', '.join(sorted(OBJECTIVES))}")
    return OBJECTIVES[name]()
