"""Preference tuning, distillation and synthetic instruction data: the math, the runs, the gates.

    pairs        preference JSONL (plain or chat form), tokenized apart, batched and resumable
    dpo          sequence log-probs over completion tokens, the DPO loss and rewards; DPO-001/003/004/005
    distill      the distillation loss α·T²·KL + (1 − α)·NLL; KD-001/003/004
    frozen       the reference or teacher frozen and hashed; DPO-002, KD-002
    synth        Magpie-style generation, filters with counted reasons; SYNTH-001/002
    settings     every setting and its default (free of torch, for the command line)
    rundir       `stack dpo`'s own loop: checkpoints, resume, the evidence record
    dpo_run, synth_run    each command's run: set-up, resume, the record

Distillation runs in the training loop (stack.train.distill_objective, `train.task = "distill"`).

docs/preferences.md describes the commands, the equations and the gates.
"""
