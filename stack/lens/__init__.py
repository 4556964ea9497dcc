"""Lenses: what each layer's residual stream would predict if the model stopped there.

    residual    the pre-norm residual stream entering each block, captured by the trace's hooks
    probes      the tuned lens: one affine probe per layer, starting at the identity; its file
    readout     per layer the distribution, its top tokens, entropy and KL to the final one
    train       fitting the probes on a DATA_DIR with the model frozen; the held-out comparison
    defaults    the training defaults (the tuned-lens package's), readable without torch
    report      the table, JSON, CSV and evidence data of `stack lens`

docs/trace.md walks through a logit lens and a tuned lens on a trained model.
"""
