"""Synthetic instruction data, Magpie-style: a chat model asked for a user turn, then its answer.

For each sample, from one seeded generator:

1. the model continues the template's user prefix (`User: `) up to the user suffix (or its
   end-of-text, or `max_instruction_tokens`, or half the context): that is the instruction;
2. it continues `user prefix + instruction + user suffix + assistant prefix` up to its
   end-of-text (or `max_response_tokens`, or the context less one position, kept for the
   end-of-text that closes the turn when the sample is prepared as a chat): that is the response.

The kept samples are written as chat records (`{"messages": [user, assistant]}`), which `stack
prepare --format chat` reads as they are.

A length setting past what the context leaves is cut to it, and the cut is recorded (`clamps`:
synth.json, the record's config, a note on the terminal).

Quality filters, each a named reason with its count: `short` (instruction or response under
`min_chars` characters), `repetitive` (a coherence score, stack.train.coherence, under
`min_coherence`: a repetition loop), `duplicate` (the same instruction and response, by
sha256, as an earlier sample), `no_room` (the instruction left no context for a response).
The gates bound here:

- GATE-SYNTH-001 the counts add up: every generated sample is kept or dropped for one reason,
  and the file holds exactly the kept ones (`check_counts`);
- GATE-SYNTH-002 same seed, same samples: the first samples are generated again from the seed
  and must hash the same (`check_replay`); a replay seeded the way the synthesis was repeats a
  wrong seed too, so the state the generator held before the first draw is also held to the one
  a generator freshly seeded with the stated seed holds (check seeded, contracts.seeds).
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from contracts.coherence import coherence_score
from contracts.gates import Outcome, gate_require, measure
from contracts.judges.synth import SYNTH_REASONS
from contracts.seeds import seeded_state_sha256, state_sha256
from contracts.spec import load_spec
from stack.data.sft_template import ChatTemplate, Segment, encode_turn
from stack.data.tokenizer import Tokenizer
from stack.model.generate import generate
from stack.model.gpt import GPT
from stack.model.sampling_checks import (
    PROBE_TOKENS,
    DrawTally,
    Sampler,
    SpreadLogits,
    check_drawn,
    probe_width,
    watching_draws,
)
from stack.tune.settings import SynthSettings

REASONS = SYNTH_REASONS
USER, ASSISTANT = "user", "assistant"


@dataclass(frozen=True)
class Sample:
    """One generated instruction and response, and the sha256 that names the pair."""

    instruction: str
    response: str

    @property
    def sha256(self) -> str:
        """sha256 of the pair as canonical JSON: what deduplication and the replay compare."""
        text = json.dumps([self.instruction, self.response], ensure_ascii=False)
        return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Report:
    """What a synthesis produced: the kept samples, the drop counts by reason, the raw hashes."""

    kept: list[Sample] = field(default_factory=list)
    dropped: dict[str, int] = field(default_factory=lambda: dict.fromkeys(REASONS, 0))
    raw_sha256: list[str] = field(default_factory=list)
    # the generator the samples were drawn with: its device, and the sha256 of its state before the first draw
    generator_device: str | None = None
    generator_state_sha256: str | None = None
    # every continuation's draws with the logits they were drawn from, for GATE-TRAIN-005 to replay
    tally: DrawTally | None = None
    # every continuation as drawn, in order (`drawn_measured`): GATE-SYNTH-002's check budgets
    continuations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def generated(self) -> int:
        """How many samples the model generated (kept or not)."""
        return len(self.raw_sha256)


def new_generator(seed: int, device: torch.device | str = "cpu") -> torch.Generator:
    """The one generator a synthesis draws from, in sample order, on the model's device (the
    sampler draws where the logits are)."""
    return torch.Generator(device=device).manual_seed(seed)


def _sampled(
    model: torch.nn.Module, idx: torch.Tensor, budget: int, settings: SynthSettings, rng: torch.Generator
) -> torch.Tensor:
    """The `budget` tokens sampled after each row of `idx` (B, budget): the one call that draws both
    a synthesis's continuations and GATE-TRAIN-005's spread probe, so both are drawn alike."""
    out = generate(model, idx, budget, temperature=settings.temperature, generator=rng)
    return out[:, idx.shape[1] :]


def drawn_measured(part: str, prompt_tokens: int, drawn: list[int], eot_id: int, kept: int) -> dict[str, Any]:
    """One continuation as GATE-SYNTH-002's check budgets reads it: its part, its prompt's length, the
    tokens the sampler returned, where the first end-of-text among them is (None: none) and how many
    of them the text was decoded from (`kept`)."""
    eot_at = drawn.index(eot_id) if eot_id in drawn else None
    return {"part": part, "prompt_tokens": prompt_tokens, "drawn": len(drawn), "eot_at": eot_at, "text": kept}


def _continue(
    model: GPT,
    tokenizer: Tokenizer,
    prompt: list[Segment],
    budget: int,
    stop: str,
    settings: SynthSettings,
    rng: torch.Generator,
    report: Report,
    reserve: int = 0,
) -> str | None:
    """The model's continuation of `prompt`, cut at end-of-text or at `stop`, leaving `reserve`
    positions of the context free; None without room. The prompt is encoded as prepared chat data
    encodes a turn (`encode_turn`): the template's special tokens are their ids, the model's own
    instruction text is only text, so the model is asked in the markup it was tuned on. Its draws,
    with the logits they were made from, go to the report's tally, and what it drew to its
    continuations (`drawn_measured`, a response by `reserve`)."""
    assert report.tally is not None
    part = "response" if reserve else "instruction"
    ids = encode_turn(tokenizer, prompt)
    budget = min(budget, model.config.ctx - len(ids) - reserve)
    if budget < 1:
        report.continuations.append(drawn_measured(part, len(ids), [], tokenizer.eot_id, 0))
        return None
    idx = torch.tensor([ids], device=rng.device)
    with watching_draws(model, rng) as draws:
        drawn = _sampled(model, idx, budget, settings, rng)
    report.tally.add(draws, drawn, model, idx)
    new = drawn[0].tolist()
    if tokenizer.eot_id in new:
        new = new[: new.index(tokenizer.eot_id)]
    report.continuations.append(drawn_measured(part, len(ids), drawn[0].tolist(), tokenizer.eot_id, len(new)))
    text = tokenizer.text_of(new)
    return text.split(stop)[0] if stop else text


def _instruction_room(model: GPT, tokenizer: Tokenizer, template: ChatTemplate) -> int:
    """The most tokens an instruction may take: half the context left after the user prefix (the
    rest is the response's)."""
    return (model.config.ctx - len(_template_ids(tokenizer, template.spec.roles[USER].prefix))) // 2


def _response_room(model: GPT, tokenizer: Tokenizer, template: ChatTemplate) -> int:
    """The most tokens a response may take: the context less the prompt around an empty instruction
    (a longer instruction leaves less)."""
    user, assistant = template.spec.roles[USER], template.spec.roles[ASSISTANT]
    return model.config.ctx - len(_template_ids(tokenizer, user.prefix + user.suffix + assistant.prefix))


def _template_ids(tokenizer: Tokenizer, text: str) -> list[int]:
    """Token ids of the template's own text, its special tokens as their ids (`encode_turn`)."""
    return encode_turn(tokenizer, [(text, True)])


def clamps(
    model: GPT, tokenizer: Tokenizer, template: ChatTemplate, settings: SynthSettings
) -> dict[str, Any]:
    """Each length setting the model's context cuts: what was asked and the most it can get. A
    synthesis records these, so no sample is thought to have had room it did not have."""
    found = {}
    for name, room in (
        ("max_instruction_tokens", _instruction_room(model, tokenizer, template)),
        ("max_response_tokens", _response_room(model, tokenizer, template)),
    ):
        asked = getattr(settings, name)
        if asked > room:
            found[name] = {"asked": asked, "at_most": room, "ctx": model.config.ctx}
    return found


def draw(
    model: GPT,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    settings: SynthSettings,
    rng: torch.Generator,
    report: Report,
) -> Sample | None:
    """One instruction and its response; None when the instruction leaves no room for a response."""
    roles = template.spec.roles
    user, assistant = roles[USER], roles[ASSISTANT]
    budget = min(settings.max_instruction_tokens, _instruction_room(model, tokenizer, template))
    instruction = _continue(
        model, tokenizer, [(user.prefix, True)], budget, user.suffix, settings, rng, report
    )
    if instruction is None:
        return None
    prompt = [(user.prefix, True), (instruction, False), (user.suffix + assistant.prefix, True)]
    # One position is kept for the end-of-text that closes the assistant's turn in SFT data, so the
    # sample, prepared as a chat, fits a window of the model's context.
    budget = settings.max_response_tokens
    response = _continue(model, tokenizer, prompt, budget, "", settings, rng, report, reserve=1)
    return None if response is None else Sample(instruction.strip(), response.strip())


def drop_reason(sample: Sample, seen: set[str], settings: SynthSettings) -> str | None:
    """The first filter `sample` fails, or None when it is kept."""
    if min(len(sample.instruction), len(sample.response)) < settings.min_chars:
        return "short"
    if min(coherence_score(sample.instruction), coherence_score(sample.response)) < settings.min_coherence:
        return "repetitive"
    if sample.sha256 in seen:
        return "duplicate"
    return None


@torch.no_grad()
def synthesize(
    model: GPT,
    tokenizer: Tokenizer,
    template: ChatTemplate,
    settings: SynthSettings,
    on_sample: Callable[[int], None] = lambda done: None,
) -> Report:
    """Generate `settings.samples` samples from the seed and filter them."""
    model.eval()
    rng, seen = new_generator(settings.seed, next(model.parameters()).device), set()
    report = Report(
        generator_device=rng.device.type,
        generator_state_sha256=state_sha256(rng.get_state()),
        tally=DrawTally(Sampler(settings.temperature)),
    )
    for done in range(1, settings.samples + 1):
        sample = draw(model, tokenizer, template, settings, rng, report)
        if sample is None:
            report.raw_sha256.append("")
            report.dropped["no_room"] += 1
        else:
            report.raw_sha256.append(sample.sha256)
            reason = drop_reason(sample, seen, settings)
            seen.add(sample.sha256)
            if reason is None:
                report.kept.append(sample)
            else:
                report.dropped[reason] += 1
        on_sample(done)
    return report


# What to change when every sample was dropped, by the reason most of them were: the line `stack synth`
# ends with instead of leaving the user an empty file and counts to interpret.
REMEDIES = {
    "short": "its turns end before --min-chars ({min_chars}) characters: synthesize from a model that "
    "writes longer ones (one trained on whole conversations: `stack sft` supervises the assistant's "
    "turns only), or give a smaller --min-chars",
    "repetitive": "its turns repeat themselves (coherence under --min-coherence {min_coherence}): "
    "give a higher --temperature, or a smaller --min-coherence",
    "duplicate": "its samples repeat one another: give a higher --temperature "
    "(at 0 every sample is the same)",
    "no_room": "its instructions leave no room for a response in its context: give a smaller "
    "--max-instruction-tokens",
}


def none_kept(report: Report, settings: SynthSettings) -> str | None:
    """Why a synthesis that kept nothing kept nothing, and what to change (None when something was
    kept): the reason most samples were dropped for, with its remedy."""
    if report.kept or not report.generated:
        return None
    reason, count = max(report.dropped.items(), key=lambda item: item[1])
    remedy = REMEDIES[reason].format(min_chars=settings.min_chars, min_coherence=settings.min_coherence)
    return f"no sample was kept: {count} of {report.generated} were {reason.replace('_', ' ')}; {remedy}"


def chat_record(sample: Sample) -> dict[str, list[dict[str, str]]]:
    """One sample as a chat record, the form `stack prepare --format chat` (and TRL's conversational
    datasets) read: the instruction as the user's message, the response as the assistant's."""
    return {
        "messages": [
            {"role": USER, "content": sample.instruction},
            {"role": ASSISTANT, "content": sample.response},
        ]
    }


def write_records(path: Path, samples: list[Sample]) -> None:
    """The kept samples as JSONL chat records, one per line (`chat_record`)."""
    lines = [json.dumps(chat_record(s), ensure_ascii=False) for s in samples]
    path.write_text("".join(line + "\n" for line in lines), encoding="utf-8")


# -- GATE-TRAIN-005: drawn at the recorded temperature ---------------------------------------


@torch.no_grad()
def check_draws(model: GPT, settings: SynthSettings, report: Report) -> None:
    """GATE-TRAIN-005 over every continuation of the synthesis, replayed at the temperature the
    record states (`settings`), with the spread probe (seeded with the synthesis's seed) drawn by
    the same call: a young model's nearly flat logits hide a wrong temperature, the probe's peaked
    rows do not."""
    assert report.tally is not None
    device = next(model.parameters()).device
    spread = SpreadLogits(probe_width(model.config.vocab, None), device, settings.seed)
    rng = new_generator(settings.seed, device)
    with watching_draws(spread, rng) as draws:
        drawn = _sampled(spread, spread.prompt, PROBE_TOKENS, settings, rng)
    report.tally.add_probe(draws, spread.prompt, drawn)
    check_drawn(report.tally, None)


# -- GATE-SYNTH-001: the counts add up -------------------------------------------------------


def counts_measured(report: Report, written: Path) -> dict[str, object]:
    """The report's counts and the lines of the file as written."""
    lines = [line for line in written.read_text(encoding="utf-8").splitlines() if line.strip()]
    return {
        "generated": report.generated,
        "kept": len(report.kept),
        "dropped": dict(report.dropped),
        "lines": len(lines),
    }


def counts_outcome(report: Report, written: Path) -> Outcome:
    """GATE-SYNTH-001 over a synthesis and its file."""
    return measure(
        "GATE-SYNTH-001",
        counts_measured(report, written),
        holds="every sample is kept or dropped for a reason",
    )


@gate_require("GATE-SYNTH-001", lambda report, written: counts_outcome(report, written))
def check_counts(report: Report, written: Path) -> None:
    """Judge the report against the file once it is written."""


# -- GATE-SYNTH-002: same seed, same samples -------------------------------------------------


def replay_measured(
    model: GPT, tokenizer: Tokenizer, template: ChatTemplate, settings: SynthSettings, report: Report
) -> dict[str, object]:
    """The first samples generated again from the seed: how many, and how many hash otherwise;
    (check seeded) the state the synthesis's generator started from against a generator freshly
    seeded with the stated seed; and (check budgets) every continuation as the sampler returned it,
    with the model's context and the length settings stated."""
    wanted = int(load_spec().threshold("GATE-SYNTH-002", "replay_samples"))
    count = min(wanted, report.generated)
    again = synthesize(model, tokenizer, template, SynthSettings(**{**settings.__dict__, "samples": count}))
    mismatched = sum(a != b for a, b in zip(again.raw_sha256, report.raw_sha256[:count], strict=True))
    device = report.generator_device
    return {
        "replayed": count,
        "generated": report.generated,
        "mismatched": mismatched,
        "seed": settings.seed,
        "generator_device": device,
        "generator_state_sha256": report.generator_state_sha256,
        "seeded_state_sha256": None if device is None else seeded_state_sha256(settings.seed, device),
        **budgets_measured(model, settings, report),
    }


def budgets_measured(model: GPT, settings: SynthSettings, report: Report) -> dict[str, Any]:
    """GATE-SYNTH-002's check budgets: every continuation as drawn (`drawn_measured`), the context of
    the model that drew them, and the length settings the record states; synth.json keeps the same."""
    return {
        "continuations": report.continuations,
        "ctx": model.config.ctx,
        "max_instruction_tokens": settings.max_instruction_tokens,
        "max_response_tokens": settings.max_response_tokens,
    }


def replay_outcome(
    model: GPT, tokenizer: Tokenizer, template: ChatTemplate, settings: SynthSettings, report: Report
) -> Outcome:
    """GATE-SYNTH-002 over a synthesis."""
    measured = replay_measured(model, tokenizer, template, settings, report)
    return measure("GATE-SYNTH-002", measured, holds="the seed gives the same samples again")


@gate_require(
    "GATE-SYNTH-002",
    lambda model, tokenizer, template, settings, report: replay_outcome(
        model, tokenizer, template, settings, report
    ),
)
def check_replay(
    model: GPT, tokenizer: Tokenizer, template: ChatTemplate, settings: SynthSettings, report: Report
) -> None:
    """Judge the synthesis's determinism after it ran."""
