"""Preference tuning, distillation and synthetic instruction data: the math, the runs, the gates.

    pairs        a preference line (plain or chat form); pair rows and the mask DPO scores by
    dpo          sequence log-probs over completion tokens, the DPO loss and rewards; DPO-001/003/004/005
    distill      the distillation loss α·T²·KL + (1 − α)·NLL; KD-001/003/004
    frozen       the reference or teacher frozen and hashed; DPO-002, KD-002
    synth        Magpie-style generation, filters with counted reasons; SYNTH-001/002
    settings     every setting and its default (free of torch, for the command line)
    synth_run    `stack synth`'s output directory, sidecar and evidence record

DPO and distillation run in the training loop (stack.train.dpo_objective, `train.task = "dpo"`;
stack.train.distill_objective, `train.task = "distill"`); their data is a prepared DATA_DIR.

docs/preferences.md describes the commands, the equations and the gates.
"""
