"""Judges of the supervised fine-tuning gates (GATE-SFT-…): data supervision, template markers, packing.

Pure functions of what prepare or a training run measured and the gate's thresholds, like every
judge in `contracts.judges`; imported at the end of that module so they register with the others.
"""

from __future__ import annotations

from contracts.judges import Measured, Thresholds, count, judges, number


@judges(
    "GATE-SFT-001",
    needs=("examples", "fewest_supervised_tokens", "examples_without_eos", "unsupervised_eos"),
)
def _examples_supervised(m: Measured, t: Thresholds) -> list[str]:
    problems = []
    fewest = count(m, "fewest_supervised_tokens")
    if count(m, "examples") == 0:
        problems.append("no example at all: there is nothing to fine-tune on")
    elif fewest < t["min_supervised_tokens"]:
        problems.append(
            f"example {count(m, 'first_example_fewest')} has {fewest} supervised token(s), fewer than "
            f"{t['min_supervised_tokens']:g}: it teaches nothing (is the assistant marker past its end?)"
        )
    if count(m, "examples_without_eos"):
        problems.append(
            f"{count(m, 'examples_without_eos')} example(s) hold no EOS: nothing teaches them to stop"
        )
    unsupervised = count(m, "unsupervised_eos")
    if unsupervised > t["max_unsupervised_eos"]:
        problems.append(
            f"{unsupervised} EOS token(s) of examples are masked out of the loss (allowed "
            f"{t['max_unsupervised_eos']:g}): the model never learns to stop (a pad id equal to the EOS id?)"
        )
    return problems


@judges("GATE-SFT-002", needs=("markers_missing",))
def _markers_found(m: Measured, t: Thresholds) -> list[str]:
    missing = count(m, "markers_missing")
    if missing <= t["max_markers_missing"]:
        return []
    return [
        f"the template's assistant marker was not found in the tokenized text of {missing} of "
        f"{count(m, 'assistant_turns')} assistant turn(s) (allowed {t['max_markers_missing']:g}): the "
        "tokenizer merges it with its neighbours or the template writes another text; fix the template's "
        "assistant_marker"
    ]


@judges("GATE-SFT-003", needs=("max_abs_logit_diff",))
def _packing_isolated(m: Measured, t: Thresholds) -> list[str]:
    diff = number(m, "max_abs_logit_diff")
    if diff <= t["max_abs_logit_diff"]:  # NaN compares false: a NaN difference fails
        return []
    return [
        f"rewriting one example of a packed window moved another example's logits by {diff:.3g} (allowed "
        f"{t['max_abs_logit_diff']:g}): attention crosses examples; the batch must carry document ids"
    ]
