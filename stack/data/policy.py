"""The mixture policy: which share of each optimizer step's windows each source gets, and its gates.

A policy walks the curriculum (stack.data.curriculum), asks the bandit (stack.data.bandit) for
the probabilities it wants when there is one, or takes each source's weight times its size when
there is not, and projects them onto the phase's caps and floors (`project_shares`,
contracts.curriculum).
When the shares change it hands them to the reader (`TokenReader.set_shares`). Without caps,
floors, phases or a bandit (`active` False) it never touches the reader: the run reads exactly
what it read before policies existed, and the policy only keeps the books.

The books are an evaluation window: windows served per source, and the windows the policy
expected (its share at each step times the windows of that step). At each evaluation the
window is judged (GATE-DATA-008: realised shares within a multinomial tolerance of the policy,
within caps and floors, and nothing of an excluded source) and, for an active policy, whether
it concentrates on a repetitive or incoherent source (GATE-DATA-011, a warning). The whole
policy goes into every checkpoint with the shares it will serve next, which a restore must
reproduce bit for bit (GATE-DATA-010).

What the policy asks for is judged as each step first serves it, against rules written out apart
from its own code. A static policy's shares are held to contracts.curriculum.static_shares of the
phase's configured weights, caps and floors and the windows of the manifest's shards (GATE-DATA-008
check static). A bandit's statistics are held to what the policy measured outside it: its pulls
to the windows served of each arm since it began (`served_total`, counted from the batches the
reader served; check tallied), its log-weights to EXP3's steps (contracts.rewards) by the rewards
it was paid from the first payment on (`paid_log_weights`; check stepped), and the probabilities
it asks for to EXP3's of those two (check wanted), never to its own memory of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import torch

from contracts.curriculum import UNWEIGHTED, project_shares, split_windows
from contracts.errors import BadInput
from contracts.filter_rules import compression_ratio
from contracts.gates import Outcome, gate_require, measure
from contracts.rewards import EXP3_START, exp3_log_weights
from stack.data import mixture
from stack.data.bandit import Exp3
from stack.data.curriculum import Phase, check_phase, phase_at
from stack.data.heldout import heldout_batches
from stack.data.manifest import load_manifest
from stack.data.reader import TokenReader

# Tokens of each source read to profile it for GATE-DATA-011: enough that zlib's own overhead
# (a few dozen bytes) does not hide repetition, few enough to read in a moment.
PROFILE_TOKENS = 1 << 14


def _window_outcome(window: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-DATA-008", window, step=step, holds="realised shares follow the policy")


@gate_require("GATE-DATA-008", _window_outcome)
def check_window(window: dict[str, Any], step: int) -> None:
    """Refuse to go on when the windows read were not the mixture the policy asked for."""


def _paid_outcome(paid: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-DATA-008", paid, step=step, holds="each arm is paid its rule on its own text")


@gate_require("GATE-DATA-008", _paid_outcome)
def check_paid(paid: dict[str, Any], step: int) -> None:
    """Refuse to go on when a bandit arm's reward is not its rule's, on its own held-out windows."""


def tallied_measured(bandit: Exp3, served: Mapping[str, int]) -> dict[str, Any]:
    """GATE-DATA-008's check `tallied`: the pulls the bandit counts, beside the windows of each arm
    the reader served since the bandit began (`served`, the policy's books)."""
    return {
        "tallied_pulls": {arm: bandit.pulls[arm] for arm in bandit.arms},
        "tallied_served": {arm: served.get(arm, 0) for arm in bandit.arms},
    }


def static_measured(
    phase: Phase, windows: dict[str, int], excluded: Iterable[str], shares: dict[str, float]
) -> dict[str, Any]:
    """GATE-DATA-008's check `static`: the shares a policy without a bandit serves, beside what
    contracts.curriculum.static_shares derives them from (the phase's weights, caps and floors as
    configured, the exclusions and the windows of each source in the manifest's shards)."""
    return {
        "static_weights": dict(phase.weights),
        "static_caps": dict(phase.caps),
        "static_floors": dict(phase.floors),
        "static_excluded": sorted(excluded),
        "static_windows": windows,
        "static_shares": dict(shares),
    }


def _wanted_outcome(measured: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-DATA-008", measured, step=step, holds="the bandit asks for what EXP3 wants")


@gate_require("GATE-DATA-008", _wanted_outcome)
def check_wanted(measured: dict[str, Any], step: int) -> None:
    """Refuse a mixture the bandit asked for other than EXP3's probabilities of the state the policy
    measured (the arms served, the log-weights its rewards give), or a bandit whose pulls are not
    the windows served."""


def _static_outcome(measured: dict[str, Any], step: int) -> Outcome:
    return measure("GATE-DATA-008", measured, step=step, holds="a static policy serves its rule's shares")


@gate_require("GATE-DATA-008", _static_outcome)
def check_static(measured: dict[str, Any], step: int) -> None:
    """Refuse a static policy's shares other than the weights times the manifest's natural shares,
    projected onto the phase's caps and floors (contracts.curriculum.static_shares)."""


def _concentration_outcome(
    shares: dict[str, float], profiles: dict[str, dict[str, float]], step: int
) -> Outcome:
    measured = {"shares": shares, "profiles": profiles}
    return measure("GATE-DATA-011", measured, step=step, holds="no repetitive source dominates the mixture")


@gate_require("GATE-DATA-011", _concentration_outcome)
def check_concentration(shares: dict[str, float], profiles: dict[str, dict[str, float]], step: int) -> None:
    """Warn when the policy gives a large share to a source whose text is repetitive or incoherent."""


def _restored_outcome(saved: dict[str, float], restored: dict[str, float], step: int) -> Outcome:
    measured = {"saved_next_shares": saved, "restored_next_shares": restored}
    return measure(
        "GATE-DATA-010", measured, step=step, holds="the restored policy serves what the saved one would"
    )


@gate_require("GATE-DATA-010", _restored_outcome)
def check_restored_policy(saved: dict[str, float], restored: dict[str, float], step: int) -> None:
    """Refuse a resume whose policy would serve other shares than the saved one."""


def weighted(weights: Mapping[str, float], sizes: Mapping[str, int]) -> dict[str, float]:
    """What a policy without a bandit asks for: each source's weight times its windows, over the
    sum of those ({} when it is 0), before caps and floors."""
    total = math.fsum(weights[n] * sizes[n] for n in sizes)
    return {n: weights[n] * sizes[n] / total for n in sizes} if total > 0 else {}


def text_profile(texts: Iterable[str], score: Callable[[str], float]) -> dict[str, float]:
    """zlib's compressed/raw size over all the text (contracts.filter_rules), and the mean coherence score."""
    texts = list(texts)
    ratio = compression_ratio("".join(texts).encode("utf-8", "replace"))
    return {"compression_ratio": ratio, "coherence": math.fsum(map(score, texts)) / max(len(texts), 1)}


class MixturePolicy:
    """The curriculum's mixtures, optionally a bandit, and the books of the current window."""

    def __init__(
        self,
        reader: TokenReader,
        phases: list[Phase],
        exclude: Iterable[str],
        bandit: Exp3 | None,
        active: bool,
    ) -> None:
        self.reader, self.phases, self.bandit, self.active = reader, phases, bandit, active
        self.exclude = frozenset(exclude)
        sizes = reader.source_windows
        known = reader.manifest.sources
        for i, phase in enumerate(phases):
            for kind, given in (("weights", phase.weights), ("caps", phase.caps), ("floors", phase.floors)):
                mixture.check_known(f"phase {i} {kind}", given, known)
        empty = sorted(n for n, size in sizes.items() if size == 0)
        self.bounds = [
            mixture.share_bounds(sizes, phase.caps, phase.floors, self.exclude | set(empty))
            for phase in phases
        ]
        for name in empty:
            if any(phase.floors.get(name, 0.0) > 0 for phase in phases):
                raise BadInput(f"source {name!r} has a floor but no window of {reader.split}; drop its floor")
        self.after_steps = [phase.after_step for phase in phases]
        self.phase = 0
        self.applied: dict[str, float] | None = None
        self.switches: list[dict[str, int]] = []
        self._judged = False  # whether this process has judged a step's phase yet (GATE-DATA-009)
        self.profiles: dict[str, dict[str, float]] = {}
        self._shares: dict[str, float] = {}
        self._cache: dict[tuple[Any, ...], dict[str, float]] = {}
        # What the shares were computed from when they last were, until a step serves them
        # (GATE-DATA-008's checks wanted and static judge the shares a step reads, not a look ahead).
        self._asked: dict[str, Any] | None = None
        # The windows of each source in the manifest's shards, numbered as the reader numbers them
        # (contracts.curriculum.split_windows): what check static derives a static policy's shares from.
        shards = [shard.model_dump() for shard in reader.manifest.shards]
        self.manifest_windows = split_windows(shards, reader.split, reader.seq_len)
        # A bandit's books, kept apart from it (checks tallied, stepped and wanted): the windows of
        # each arm served since it began, and EXP3's log-weights of every reward it was paid.
        arms = bandit.arms if bandit is not None else []
        self.served_total: dict[str, int] = dict.fromkeys(arms, 0)
        self.paid_log_weights: dict[str, float] = dict.fromkeys(arms, EXP3_START)
        self._open_window()
        for phase in phases:  # a phase whose shares cannot sum to 1 is refused at set-up, not at its step
            self.shares_at(phase.after_step + 1)

    # -- what to serve ---------------------------------------------------------------------

    def shares_at(self, step: int) -> dict[str, float]:
        """The share of each source in optimizer step `step`: computed once per phase and, with a
        bandit, once per state of the policy's books of it (the warmup passed, which eligible arms
        were served, the log-weights its rewards give), so the bandit is asked again whenever EXP3's
        answer may change, and judged (check wanted) each time."""
        index = phase_at(self.phases, step)
        caps, floors = self.bounds[index]
        key: tuple[Any, ...] = (index,)
        if self.bandit is not None:
            # A phase's weight 0 (or cap 0) takes an arm out of that phase; other weights are the bandit's.
            weights = self.phases[index].weights
            eligible = [arm for arm in self.bandit.arms if caps[arm] > 0 and weights.get(arm, UNWEIGHTED) > 0]
            pulled = tuple(self.served_total[arm] > 0 for arm in eligible)
            key = (
                index,
                step > self.bandit.warmup_steps,
                pulled,
                tuple(sorted(self.paid_log_weights.items())),
            )
        if key not in self._cache:
            sizes = self.reader.source_windows
            if self.bandit is not None:
                wanted = self.bandit.wanted(step, eligible)
                self._asked = self.wanted_measured(step, eligible, wanted)  # judged when served
            else:
                weights = mixture.effective_weights(
                    sizes, self.phases[index].weights, self.exclude, "the policy"
                )
                wanted = weighted(weights, sizes)
            self._cache = {key: project_shares(wanted, caps, floors)}
            if self.bandit is None:  # judged when served, as a bandit's are
                phase = self.phases[index]
                self._asked = static_measured(phase, self.manifest_windows, self.exclude, self._cache[key])
        return self._cache[key]

    def wanted_measured(self, step: int, eligible: list[str], wanted: dict[str, float]) -> dict[str, Any]:
        """GATE-DATA-008's checks `wanted` and `tallied`: the probabilities the bandit asked for at
        `step` among the arms it took as eligible, beside the phase's configured weights and caps
        they are eligible by, the state EXP3 takes them from as the policy measured it (the
        log-weights its rewards give, the eligible arms served at least one window, γ and the
        warmup), and the bandit's pulls beside the windows served."""
        bandit = self.bandit
        assert bandit is not None
        phase = self.phases[phase_at(self.phases, step)]
        return {
            "wanted_step": step,
            "wanted_warmup": bandit.warmup_steps,
            "wanted_arms": list(bandit.arms),
            "wanted_phase_weights": dict(phase.weights),
            "wanted_phase_caps": dict(phase.caps),
            "wanted_eligible": list(eligible),
            "wanted_pulled": [arm for arm in eligible if self.served_total.get(arm, 0) > 0],
            "wanted_log_weights": {arm: self.paid_log_weights[arm] for arm in eligible},
            "wanted_gamma": bandit.gamma,
            "wanted_shares": dict(wanted),
            **tallied_measured(bandit, self.served_total),
        }

    @property
    def shares(self) -> dict[str, float]:
        """The share of each source the step being taken is meant to read (what the books expect)."""
        return dict(self._shares)

    def before_step(self, step: int) -> int | None:
        """Set up the reader for `step`; returns the new phase's index when the phase changed."""
        index = phase_at(self.phases, step)
        due = not self._judged or index != self.phase or step - 1 in self.after_steps
        if len(self.phases) > 1 and due:  # the first step served, and every switch that is or should be
            check_phase(step, index, self.after_steps)
            self._judged = True
        self._shares = self.shares_at(step)
        if self._asked is not None:  # new shares, judged as they are first served
            (check_wanted if self.bandit is not None else check_static)(self._asked, step)
            self._asked = None
        if self.active and self._shares != self.applied:
            self.reader.set_shares(self._shares)
            self.applied = self._shares
        switched = index != self.phase
        self.phase = index
        if switched:
            self.switches.append({"phase": index, "step": step})
        self._bound_window(index)
        return index if switched else None

    def after_step(self) -> None:
        """Book the windows `step` read against the shares it was meant to read."""
        served = self.reader.take_served()
        windows = sum(served.values())
        for name, n in served.items():
            self.window["served"][name] += n
            self.window["expected"][name] += self._shares.get(name, 0.0) * windows
        self.window["windows"] += windows
        if self.bandit is not None:
            self.bandit.record_pulls(served)
            for arm in self.served_total:
                self.served_total[arm] += served.get(arm, 0)

    # -- the evaluation window -------------------------------------------------------------

    def close_window(self, step: int) -> dict[str, float]:
        """Judge the window (GATE-DATA-008, and GATE-DATA-011 when active); returns realised shares."""
        window, n = self.window, self.window["windows"]
        expected = {name: e / n for name, e in window["expected"].items()} if n else {}
        measured = {
            "windows": n,
            "served": dict(window["served"]),
            "expected_share": expected,
            "caps": dict(window["caps"]),
            "floors": dict(window["floors"]),
            "excluded": sorted(self.exclude),
        }
        check_window(measured, step)
        if self.active and self.profiles and expected:
            check_concentration(expected, self.profiles, step)
        self._open_window()
        self._bound_window(self.phase)
        return {name: c / n for name, c in window["served"].items()} if n else {}

    def _open_window(self) -> None:
        names = sorted(self.reader.source_windows)
        self.window: dict[str, Any] = {
            "windows": 0,
            "served": dict.fromkeys(names, 0),
            "expected": dict.fromkeys(names, 0.0),
            "caps": dict.fromkeys(names, 0.0),
            "floors": dict.fromkeys(names, 1.0),
        }

    def _bound_window(self, index: int) -> None:
        """A window spanning phases is judged against the loosest of their bounds."""
        caps, floors = self.bounds[index]
        for name in caps:
            self.window["caps"][name] = max(self.window["caps"][name], caps[name])
            self.window["floors"][name] = min(self.window["floors"][name], floors[name])

    def profile_sources(self, decode: Callable[[list[int]], str], score: Callable[[str], float]) -> None:
        """Profile each source's text once (for GATE-DATA-011): compressibility and coherence."""
        for name, size in self.reader.source_windows.items():
            if size:
                windows = self.reader.source_tokens(name, PROFILE_TOKENS // (self.reader.seq_len + 1) + 1)
                self.profiles[name] = text_profile((decode(row.tolist()) for row in windows), score)

    def update(self, losses: Mapping[str, float]) -> dict[str, float]:
        """Pay the bandit from each source's held-out loss (nothing without a bandit), and step the
        policy's own account of its log-weights by EXP3's rule with the rewards paid."""
        if self.bandit is None:
            return {}
        paid = self.bandit.update(losses)
        self.paid_log_weights = exp3_log_weights(self.paid_log_weights, paid, self.bandit.eta)
        return paid

    # -- state -----------------------------------------------------------------------------

    def state_dict(self, step: int) -> dict[str, Any]:
        """A JSON-able snapshot after `step`, with the shares step + 1 will be served."""
        return {
            "phase": self.phase,
            "applied": self.applied,
            "shares": self._shares,
            "window": self.window,
            "switches": self.switches,
            "bandit": self.bandit.state_dict() if self.bandit is not None else None,
            **({"served_total": self.served_total} if self.bandit is not None else {}),
            **({"paid_log_weights": self.paid_log_weights} if self.bandit is not None else {}),
            "next_shares": self.shares_at(step + 1),
        }

    def load_state_dict(self, state: Mapping[str, Any] | None, step: int) -> None:
        """Continue from a snapshot of `state_dict(step)`; GATE-DATA-010 compares the next shares
        (a checkpoint that holds no policy state saved none to compare with, and fails)."""
        if state is None:
            check_restored_policy({}, self.shares_at(step + 1), step)
            return
        if self.bandit is not None and state["bandit"] is not None:
            self.load_bandit(state)
        self.phase, self.applied, self._shares = state["phase"], state["applied"], dict(state["shares"])
        self.window = {
            key: value if key == "windows" else dict(value) for key, value in state["window"].items()
        }
        self.switches = [dict(s) for s in state["switches"]]
        self._cache = {}
        check_restored_policy(state["next_shares"], self.shares_at(step + 1), step)

    def load_bandit(self, state: Mapping[str, Any]) -> None:
        """The bandit of a `state_dict` and the policy's books of it, for this bandit's arms (the
        zombie filter). A checkpoint of before 1.30.0 kept no books of the policy's own: the
        bandit's pulls and log-weights stand in for them."""
        assert self.bandit is not None
        self.bandit.load_state_dict(state["bandit"])
        served = state.get("served_total", self.bandit.pulls)
        weights = state.get("paid_log_weights", self.bandit.log_weights)
        known = self.bandit.known_arms(served)
        self.served_total.update({arm: int(served[arm]) for arm in known})
        self.paid_log_weights.update({arm: float(weights[arm]) for arm in known})


def build_policy(
    reader: TokenReader,
    phases: list[Phase],
    exclude: Iterable[str],
    *,
    active: bool,
    bandit: Mapping[str, Any] | None,
) -> MixturePolicy:
    """The policy of a run: `bandit` holds `[data.bandit]`'s settings when data.policy = "bandit"."""
    exp3 = None
    if bandit is not None:
        arms = [name for name, size in reader.source_windows.items() if size and name not in set(exclude)]
        if bandit["reward"] == "excess" and (missing := sorted(set(arms) - set(bandit["reference"]))):
            raise BadInput(
                'data.bandit.reward = "excess" needs a reference loss for every source; '
                f"missing: {', '.join(missing)}"
            )
        exp3 = Exp3(
            arms,
            reward=bandit["reward"],
            gamma=bandit["gamma"],
            eta=bandit["eta"],
            warmup_steps=bandit["warmup_steps"],
            reference=bandit["reference"],
        )
    return MixturePolicy(reader, phases, exclude, exp3, active)


def source_heldout(
    data_dir: Path, arms: Iterable[str], batch_size: int, seq_len: int, n_batches: int
) -> dict[str, list[torch.Tensor]]:
    """Held-out batches of each arm alone: the bandit's reward is judged on text it never trains on."""
    sources = load_manifest(data_dir).sources
    return {
        arm: heldout_batches(
            data_dir, batch_size, seq_len, n_batches, exclude=[s for s in sources if s != arm]
        )
        for arm in sorted(arms)
    }
