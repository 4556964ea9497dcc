"""The activation-patching metric, read where GATE-PATCH-002's check `scores` says it is read.

It lives in the contracts, apart from the patching run (stack.trace.patch), because a score the
run computes with its own hooks on, at a position it picks itself, is self-consistent whatever that
position is: a metric read at the second-to-last token moves every recovered fraction to the wrong
token and every number still agrees with every other. The check applies this function to the logits
of a plain forward of each prompt (no hook on the model) and holds the run's clean and corrupted
scores to it; the run's own metric calls it too, so a correct run matches it bit for bit.

The recovered fraction is a formula over those scores and lives here for the same reason: a run
that computes (clean − patched)/(clean − corrupted) reports every cell inverted and the full patch,
proved bit-exact, as recovering 0.0. GATE-PATCH-002's check `recovery` recomputes every recorded
fraction from the recorded scores with this function.

Which cells the command line asks for is a rule of its words and the prompt's length alone, and it
lives here too: a run that patches at the last token where `--patch-position 5` asks records
position 10 as the one it patched, every cell agrees with that statement, and every other gate
passes. GATE-PATCH-002's check `asked` holds the grid's cells to `asked_cells`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # the judges read `recovered_fraction`, and a prepare loads them without torch
    import torch


def last_position_score(logits: torch.Tensor, target: int, foil: int | None) -> float:
    """The metric of batch row 0 of `logits` (batch, positions, vocabulary) at its last position, in
    float64: logit(target) − logit(foil) with a foil, else log p(target)."""
    import torch

    last = logits[0, logits.shape[1] - 1].double()
    if foil is not None:
        return float(last[target] - last[foil])
    return float(last[target] - torch.logsumexp(last, dim=0))


def recovered_fraction(patched: float, clean: float, corrupted: float) -> float:
    """(patched − corrupted) / (clean − corrupted): 0 where the patched run scores as the corrupted
    one, 1 where it scores as the clean one."""
    return (patched - corrupted) / (clean - corrupted)


def asked_cells(asked: Mapping[str, Any], tokens: int, sites: Sequence[str]) -> list[tuple[str, int]]:
    """The (site, position) cells `stack trace --patch` asks for on a `tokens`-token prompt, in
    order: `--patch-site S` the one cell at `--patch-position P`, the last position (tokens − 1)
    where none is given; `--patch-sweep KIND` every position 0..tokens−1 of each site among `sites`
    (the grid's) that is a block's KIND site (which blocks can patch KIND is the model's layout)."""
    if asked.get("sweep") is not None:
        swept = [
            s
            for s in dict.fromkeys(sites)
            if s.startswith("layers.") and s.split(".", 2)[2:] == [asked["sweep"]]
        ]
        return [(site, p) for site in swept for p in range(tokens)]
    position = asked.get("position")
    return [(str(asked.get("site")), tokens - 1 if position is None else int(position))]
