"""The judges of the supervised fine-tuning gates (spec/gates/sft.yaml): data supervision, template
markers, packing.
"""

from __future__ import annotations

from contracts.judges.base import Judges, Measured, Thresholds, count, flag, has, number

judges = Judges()


@judges(
    "GATE-SFT-001",
    checks={
        "examples": ("examples", "fewest_supervised_tokens", "examples_without_eos", "unsupervised_eos"),
        "turns": ("turns_held", "turns_mismatched", "turns_unjudged"),
        # every supervised position can be scored: none of padding, none opening its example
        "scorable": ("padding_supervised", "opening_supervised"),
        # every id of an example, its prompt too, is every message of its conversation
        "rendered": ("examples_rendered", "examples_by_content", "examples_misrendered"),
        # an EOS that ends a prompt's turn, which only a model's own template writes
        "prompt": ("prompt_eos", "model_template"),
        # the windows written are the greedy packing of the examples (contracts.packing)
        "packed": (
            "windows_written",
            "windows_packed",
            "tokens_written",
            "tokens_packed",
            "examples_misplaced",
        ),
        # a preference pair's mask, read back as text, is its prompt/completion boundary
        "boundary": ("pairs_held", "pairs_off_boundary", "pairs_unjudged"),
    },
)
def _examples_supervised(m: Measured, t: Thresholds) -> list[str]:
    """Every example supervised, its EOS included, and every supervised position a target the loss
    can score (the tables, at prepare and in every run); and, at prepare, each assistant turn
    supervising exactly its content and its EOS, and every example's ids, its prompt too, reading
    back as every message of its conversation (`rendered`)."""
    problems = []
    if has(m, "windows_written", "windows_packed", "tokens_written", "tokens_packed", "examples_misplaced"):
        problems += _packing_problems(m)
    if has(m, "examples", "fewest_supervised_tokens", "examples_without_eos", "unsupervised_eos"):
        problems += _example_problems(m, t)
    if has(m, "padding_supervised", "opening_supervised"):
        problems += _unscorable_problems(m)
    if has(m, "prompt_eos", "model_template"):
        problems += _prompt_eos_problems(m, t)
    if has(m, "turns_held", "turns_mismatched", "turns_unjudged") and (wrong := count(m, "turns_mismatched")):
        problems.append(
            f"{wrong} assistant turn(s) supervise other tokens than their content and EOS (first: "
            f"{m.get('first_mismatch')}): the supervision starts before or after the text that follows "
            "the template's marker, or does not end with the EOS"
        )
    if has(m, "examples_rendered", "examples_by_content", "examples_misrendered") and (
        wrong := count(m, "examples_misrendered")
    ):
        problems.append(
            f"{wrong} example(s) (first: {m.get('first_misrendered')}) have ids that are not every message "
            "of their conversation, each with its role's text around it: a turn (a system prompt, an "
            "earlier user turn) is missing from, or other text is in, what the model is trained on"
        )
    if has(m, "pairs_held", "pairs_off_boundary", "pairs_unjudged"):
        problems += _boundary_problems(m)
    return problems


def _boundary_problems(m: Measured) -> list[str]:
    """GATE-SFT-001's check boundary: every preference pair, read at its mask, is a pair of the data."""
    if not (off := count(m, "pairs_off_boundary")):
        return []
    return [
        f"{off} preference pair(s) (first: window {m.get('first_off_boundary')}) are scored off their "
        "prompt/completion boundary: read at the mask (contracts.pair_rows), the rows are no pair of the "
        "data (a completion's first token left in the prompt, or the prompt's last one scored)"
    ]


def _unscorable_problems(m: Measured) -> list[str]:
    """Supervised positions that are no target of an example: padding, or an example's first token."""
    problems = []
    if padding := count(m, "padding_supervised"):
        problems.append(
            f"{padding} padding position(s) (example 0, the filler of packed windows) are marked "
            "supervised: the loss would teach the model to emit filler after every example"
        )
    if opening := count(m, "opening_supervised"):
        problems.append(
            f"{opening} example(s) open with a supervised token, which nothing of the example before it "
            "predicts, so no loss scores it (an empty prompt?): give each example a prompt, or join "
            "prompt and completion as chat turns (--join chat-turns)"
        )
    return problems


def _example_problems(m: Measured, t: Thresholds) -> list[str]:
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


def _prompt_eos_problems(m: Measured, t: Thresholds) -> list[str]:
    """EOS ids left unsupervised with a supervised token of their example after them end a prompt's
    turn: a model's own template writes them (Qwen2's <|im_end|> after the user's turn); the stack's
    templates write an EOS only after an assistant's turn, to be supervised."""
    prompt = count(m, "prompt_eos")
    if prompt <= t["max_unsupervised_eos"] or flag(m, "model_template"):
        return []
    return [
        f"{prompt} EOS token(s) inside examples are masked out of the loss (allowed "
        f"{t['max_unsupervised_eos']:g}), and the stack's templates write an EOS only after an "
        "assistant's turn, to be supervised: an earlier turn never learns to stop"
    ]


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


@judges(
    "GATE-SFT-003",
    checks={"start-up": ("max_abs_logit_diff",), "probe": ("max_abs_token_loss_diff", "probe_positions")},
)
def _packing_isolated(m: Measured, t: Thresholds) -> list[str]:
    """The start-up check on a window split in two (logits), the probe of a batch the loss used
    (per-token losses through the loss), or both, each within its own threshold."""
    problems = []
    if has(m, "max_abs_logit_diff"):
        diff = number(m, "max_abs_logit_diff")
        if not diff <= t["max_abs_logit_diff"]:  # NaN compares false: a NaN difference fails
            problems.append(
                f"rewriting one example of a packed window moved another example's logits by {diff:.3g} "
                f"(allowed {t['max_abs_logit_diff']:g}): attention crosses examples; the batch must carry "
                "document ids"
            )
    if has(m, "max_abs_token_loss_diff", "probe_positions"):
        diff, positions = number(m, "max_abs_token_loss_diff"), count(m, "probe_positions")
        if not positions:
            problems.append("the probe of the batch the loss used compared no position of another example")
        if not diff <= t["max_abs_token_loss_diff"]:
            problems.append(
                f"rewriting the first example of each row of the batch the loss used moved another "
                f"example's per-token loss by {diff:.3g} (allowed {t['max_abs_token_loss_diff']:g}) over "
                f"{positions} position(s): the loss's forward lets examples attend to each other; pass "
                "the batch's document ids (`docs`) to the model and keep attention block-diagonal"
            )
    return problems


def _packing_problems(m: Measured) -> list[str]:
    """GATE-SFT-001's check packed: the tables hold the windows, the tokens and each example's start
    the greedy packing of the examples' lengths gives (contracts.packing.greedy_packing)."""
    problems = []
    windows, packed = count(m, "windows_written"), count(m, "windows_packed")
    tokens, want = count(m, "tokens_written"), count(m, "tokens_packed")
    if windows != packed or tokens != want:
        problems.append(
            f"the tables hold {windows} windows ({tokens} tokens) where the greedy packing of their examples "
            f"fills {packed} ({want}): {tokens - want:+d} tokens of padding"
        )
    if misplaced := count(m, "examples_misplaced"):
        problems.append(
            f"{misplaced} examples start elsewhere than the greedy packing puts them: one that fits the room "
            "left in a window was moved to the next?"
        )
    return problems
