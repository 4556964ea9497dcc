"""The judges of the synthetic-data gates (spec/gates/synth.yaml): pure functions of what a
`stack synth` run measured and the thresholds of the gate.
"""

from __future__ import annotations

from contracts.judges.base import Judges, Malformed, Measured, Thresholds, count, has, items
from contracts.judges.train import seeded_problems
from contracts.synth_budget import PARTS, part_budget, text_tokens

judges = Judges()


def _budget_problems(m: Measured) -> list[str]:
    """Each continuation of a synthesis against contracts.synth_budget: the tokens it drew are the
    budget of its part under the stated setting, the context and its prompt's length, and its text
    was decoded from the tokens drawn before the first end-of-text (all of them without one), so a
    part ends at its end-of-text or is exactly its budget long."""
    ctx = count(m, "ctx")
    asked = {part: count(m, f"max_{part}_tokens") for part in PARTS}
    short, cut = [], []
    for c in items(m, "continuations"):
        if not isinstance(c, dict) or c.get("part") not in PARTS:
            raise Malformed(f"a continuation {c!r} is not {{part, prompt_tokens, drawn, eot_at, text}}")
        drawn, eot_at = count(c, "drawn"), c.get("eot_at")
        if eot_at is not None and (isinstance(eot_at, bool) or not isinstance(eot_at, int)):
            raise Malformed(f"a continuation's eot_at is {eot_at!r}, not a position or null")
        budget = part_budget(c["part"], asked[c["part"]], ctx, count(c, "prompt_tokens"))
        if drawn != budget:
            short.append(f"{c['part']} drew {drawn} token(s), its budget {budget}")
        if count(c, "text") != text_tokens(drawn, eot_at):
            cut.append(f"{c['part']} keeps {c['text']} of {drawn} drawn (end-of-text at {eot_at})")
    problems = []
    if short:
        problems.append(
            f"{len(short)} continuation(s) drew other than the budget contracts.synth_budget gives "
            f"max_instruction_tokens {asked['instruction']}, max_response_tokens {asked['response']} and "
            f"ctx {ctx} (first: {short[0]}): a budget read from the wrong setting?"
        )
    if cut:
        problems.append(
            f"{len(cut)} continuation(s) keep other tokens than those drawn before the end-of-text "
            f"(first: {cut[0]})"
        )
    return problems


# The reasons `stack synth` may drop a sample for (stack.tune.synth reads them from here).
SYNTH_REASONS = ("short", "repetitive", "duplicate", "no_room")


@judges("GATE-SYNTH-001", needs=("generated", "kept", "lines", "dropped"))
def _counts_add_up(m: Measured, t: Thresholds) -> list[str]:
    generated, kept, lines = count(m, "generated"), count(m, "kept"), count(m, "lines")
    dropped = m.get("dropped")
    if not isinstance(dropped, dict):
        raise Malformed(f"'dropped' is {dropped!r}, not an object of counts by reason")
    problems = [
        f"drops under an unknown reason {reason!r}" for reason in dropped if reason not in SYNTH_REASONS
    ]
    drops = sum(count(dropped, reason) for reason in dropped)
    if kept + drops != generated:
        problems.append(
            f"{generated} generated but {kept} kept and {drops} dropped: "
            f"{generated - kept - drops} unaccounted for"
        )
    if lines != kept:
        problems.append(f"the file holds {lines} record(s), the report says {kept} were kept")
    return problems


@judges(
    "GATE-SYNTH-002",
    checks={
        "replay": ("replayed", "generated", "mismatched"),
        # the samples were drawn from the state a generator seeded with the stated seed holds
        "seeded": ("seed", "generator_device", "generator_state_sha256", "seeded_state_sha256"),
        # every continuation drew the budget contracts.synth_budget gives the stated length
        # setting, the context and its prompt, and its text is what it drew before the end-of-text
        "budgets": ("continuations", "ctx", "max_instruction_tokens", "max_response_tokens"),
    },
)
def _replays(m: Measured, t: Thresholds) -> list[str]:
    problems = seeded_problems(m) if has(m, *judges.checks["GATE-SYNTH-002"]["seeded"]) else []
    if has(m, *judges.checks["GATE-SYNTH-002"]["budgets"]):
        problems += _budget_problems(m)
    if not has(m, "replayed", "generated", "mismatched"):
        return problems
    replayed, generated, mismatched = count(m, "replayed"), count(m, "generated"), count(m, "mismatched")
    if replayed < min(int(t["replay_samples"]), generated):
        problems.append(
            f"only {replayed} sample(s) were replayed, not {min(int(t['replay_samples']), generated)}"
        )
    if mismatched:
        problems.append(f"{mismatched} of {replayed} sample(s) came out otherwise from the same seed")
    return problems
