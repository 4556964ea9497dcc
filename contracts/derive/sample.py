"""The record of `stack sample` from its `sample.json`: the text digest, the draws, the prompt's length
and the seed GATE-TRAIN-005 replays; and from its config, the checkpoint GATE-CKPT-002 verified."""

from __future__ import annotations

import hashlib

from contracts.derive.base import Derivation, Deriver, Inputs, registrar
from contracts.derive.reports import report_of, seeded, verified_checkpoint

DERIVERS: dict[str, Deriver] = {}
derives = registrar(DERIVERS)  # @derives("kind", ...): the derivation of records of those kinds


# What `stack sample` writes beside its record: the text, the prompt's token count, the ids drawn.
SAMPLE_RESULT = "sample.json"
# The settings of the sampler GATE-TRAIN-005 states it drew with (its draws are replayed with them).
SAMPLER_SETTINGS = ("temperature", "top_k", "top_p", "repetition_penalty")


@derives("sample")
def sample_record(inputs: Inputs) -> Derivation:
    """A sample's text digest, its draws and its prompt's length from sample.json (cited since
    1.24.0): `stack sample` draws exactly config.tokens after the prompt, one row, so GATE-TRAIN-005
    replayed that many draws of a prompt of that many tokens, with the sampler's settings its
    config states."""
    derived = Derivation()
    report = report_of(inputs, derived, SAMPLE_RESULT, "1.24.0")
    if report is None:
        return derived
    if isinstance(text := report.get("text"), str):
        derived.put(("metrics", "text_sha256"), hashlib.sha256(text.encode("utf-8")).hexdigest())
    config = inputs.record.config if isinstance(inputs.record.config, dict) else {}
    drawn, asked = report.get("drawn"), config.get("tokens")
    if isinstance(drawn, list) and isinstance(asked, int) and len(drawn) != asked:
        derived.problems.append(
            f"{SAMPLE_RESULT} holds {len(drawn)} drawn token(s), but config.tokens is {asked}: "
            "`stack sample` draws exactly that many"
        )
    if "GATE-TRAIN-005" not in inputs.stale:
        if isinstance(drawn, list):
            derived.put(("gates", "GATE-TRAIN-005", "measured", "draws"), len(drawn), optional=True)
        if isinstance(prompt := report.get("prompt_tokens"), int):
            derived.put(("gates", "GATE-TRAIN-005", "measured", "prompt_tokens"), prompt, optional=True)
        for key in SAMPLER_SETTINGS:  # the sampler's settings, as its command line (the config) set them
            if key in config:
                derived.put(("gates", "GATE-TRAIN-005", "measured", key), config[key], optional=True)
    # check seeded (GATE-TRAIN-005): `stack sample --seed`, as its config states it
    seeded(inputs, derived, "GATE-TRAIN-005", config.get("seed"))
    verified_checkpoint(inputs, derived, config.get("checkpoint"))  # the checkpoint it drew from
    return derived
