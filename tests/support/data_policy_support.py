"""A DATA_DIR of mixed sources and the mixture policy served over it, step by step as the loop serves it."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np

from contracts.ledger import Ledger
from stack.data.curriculum import Phase
from stack.data.policy import MixturePolicy, build_policy
from stack.data.prepare import prepare_corpus
from stack.data.reader import TokenReader

T = 16


SOURCES = ("chat", "garbage", "prose")


BANDIT = {"reward": "improvement", "reference": {}, "warmup_steps": 0, "gamma": 0.1, "eta": 1.0}


def words(seed: int, n: int) -> str:
    rng = np.random.default_rng(seed)
    letters = np.array(list("abcdefghijklmnopqrstuvwxyz"))
    return " ".join("".join(rng.choice(letters, int(rng.integers(2, 9)))) for _ in range(n))


def mixed_corpus(root: Path) -> Path:
    """A DATA_DIR of two sources of varied words and one of "region region region" (the 120M run's
    garbage), each with held-out documents."""
    texts = {
        "chat": {f"c{i:02d}.txt": words(i, 200) for i in range(24)},
        "prose": {f"p{i:02d}.txt": words(100 + i, 200) for i in range(24)},
        "garbage": {f"g{i:02d}.txt": "region " * (200 + i) for i in range(24)},
    }
    inputs = []
    for source, docs in texts.items():
        for name, text in docs.items():
            (root / source).mkdir(exist_ok=True)
            (root / source / name).write_text(text, encoding="utf-8")
        inputs.append(f"{source}={root / source}")
    # The diversity filter would drop "region region region"; the mixture's own gates are under test here.
    waiver = {"garbage": "planted repetitive source: GATE-DATA-011 must see it"}
    prepare_corpus(inputs, root / "data", val_fraction=0.25, seed=0, no_filter=waiver)
    return root / "data"


def policy_reader(data: Path, exclude: list[str] | None = None) -> TokenReader:
    return TokenReader(data, batch_size=8, seq_len=T, seed=3, exclude=exclude)


def mixture_policy(
    data: Path,
    phases: list[Phase] | None = None,
    exclude: list[str] | None = None,
    bandit: dict | None = None,
) -> MixturePolicy:
    phases = phases or [Phase(0, {}, {}, {})]
    return build_policy(policy_reader(data, exclude), phases, exclude or [], active=True, bandit=bandit)


def serve_steps(policy: MixturePolicy, first: int, last: int) -> None:
    """Steps first..last as the loop serves them: policy, one batch, books."""
    for step in range(first, last + 1):
        policy.before_step(step)
        policy.reader.next_batch()
        policy.after_step()


def gate_verdict(ledger: Ledger, gate_id: str) -> str:
    return {g.id: g.verdict for g in ledger.gate_results(expected=[gate_id])}[gate_id].value


def raw_loss(now: float, _before: float | None, _reference: float | None) -> float:
    """The 120M run's reward: the lower the loss, the better the source."""
    return -now


def restored_with_chat_excluded(data: Path) -> MixturePolicy:
    """A bandit that learned to like chat, saved, and restored by a run that excludes chat."""
    before = mixture_policy(data, bandit=BANDIT)
    serve_steps(before, 1, 4)
    before.update({"chat": 3.0, "prose": 3.0, "garbage": 3.0})
    before.update({"chat": 1.0, "prose": 2.9, "garbage": 2.9})
    state = json.loads(json.dumps(before.state_dict(4)))
    after = mixture_policy(data, exclude=["chat"], bandit=BANDIT)
    after.reader.load_state_dict(before.reader.state_dict())
    after.load_bandit(state)  # the zombie arm's weight comes back with the state
    serve_steps(after, 5, 12)
    after.close_window(12)
    return after
