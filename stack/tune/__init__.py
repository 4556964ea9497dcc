"""Preference tuning, distillation and synthetic instruction data: the math and the gates.

    pairs        a batch of pair rows and the mask DPO scores by (a preference line itself is
                 read by stack.data.prefs_rows)
    dpo          sequence log-probs over completion tokens, the DPO loss and rewards; DPO-001/003/004/005
    distill      the distillation loss α·T²·KL + (1 − α)·NLL; KD-001/003/004
    frozen       the reference or teacher frozen and hashed; DPO-002, KD-002
    synth        Magpie-style generation, filters with counted reasons; SYNTH-001/002
    settings     synth's settings and their defaults (free of torch, for the command line)

This room stands below the training loop: DPO and distillation run in it (stack.train.dpo_objective,
`train.task = "dpo"`; stack.train.distill_objective, `train.task = "distill"`; their settings are
stack.train.tune_settings), and `stack synth`'s output directory is stack.synth_run's.

docs/preferences.md describes the commands, the equations and the gates.
"""
