"""Everything a command writes goes through here: one set of rules, written once (docs/reliability.md).

    destination   whether a path can take an output: no link, nothing in the way, writable, UTF-8
    ownership     what --force may replace: only files this command's own record lists, unchanged
    lock          one writer per directory
    staging       an output assembled out of sight and moved into place at once
    rundir        the life of a run-like directory: check, open (new or resumed), refuse, commit
    ledger        filing the evidence record into --evidence-dir

Nothing here knows a model, a tokenizer or a checkpoint: the rules are about paths and records,
so every room of the stack, the data pipeline included, can stand on them.
"""
