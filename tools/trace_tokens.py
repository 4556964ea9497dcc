"""A trace's token count, derived from its prompt by its model's tokenizer.

A trace (or patching) record restates the number of tokens its prompt is (`config.tokens`), and
GATE-TRACE-003's site counts are that number × each site's width. The number is a function of the
prompt and the tokenizer alone: the byte tokenizer makes 'def main():' 11 tokens. A record whose
count was edited, its config digest made to agree, passed (the round-4 ledger audit's T30). Here
the checkpoint its command line names is found (the word under this repository, where the run
resolved it to the same path, `checkpoint_reads.in_repository`; else where the run resolved it),
its tokenizer rebuilt from its state by the stack's own code, and the prompt encoded again. A
checkpoint no longer where the record names it is not checked here (the token axis of the traced
sites still is, contracts.derive.reports.traced_tokens).
"""

from __future__ import annotations

from pathlib import Path

from argv_record import given
from checkpoint_reads import in_repository

from contracts.errors import BadInput
from contracts.evidence import REPO_ROOT, EvidenceRecord
from stack.data.tokenizer_record import tokenizer_from_state
from stack.train.checkpoint import read_state
from stack.train.trained import resolve_checkpoint

TRACE_KINDS = frozenset({"trace", "patch"})


def _checkpoint(record: EvidenceRecord, root: Path) -> Path | None:
    """The checkpoint the record's command line names, where it can still be read; else None."""
    word = (given(record.run.argv or []) or {}).get("path")
    if word is None:
        return None
    for candidate in (in_repository(record, str(word), root), (record.run.places or {}).get(str(word))):
        if candidate is None or not Path(candidate).exists():
            continue
        try:
            return resolve_checkpoint(Path(candidate))
        except BadInput:
            continue
    return None


def trace_token_problems(record: EvidenceRecord, root: Path = REPO_ROOT) -> list[str]:
    """config.tokens against the prompt as the named checkpoint's tokenizer encodes it."""
    config = record.config if isinstance(record.config, dict) else {}
    prompt, tokens = config.get("prompt"), config.get("tokens")
    if record.run.kind not in TRACE_KINDS or not isinstance(prompt, str) or not isinstance(tokens, int):
        return []
    checkpoint = _checkpoint(record, root)
    if checkpoint is None:
        return []
    try:
        tokenizer = tokenizer_from_state(read_state(checkpoint)["tokenizer"])
    except BadInput as exc:
        return [f"the tokenizer of {checkpoint}, which its command line names, cannot be rebuilt: {exc}"]
    encoded = len(tokenizer.encode(prompt))
    if encoded == tokens:
        return []
    return [
        f"config.tokens is {tokens}, but the tokenizer of {checkpoint} makes its prompt {prompt!r} "
        f"{encoded} token(s)"
    ]
