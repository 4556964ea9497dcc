"""Weight surgery: a trained model's matrices rewritten, and a new run-like checkpoint of the result.

    laser       LASER: a matrix replaced by its rank-ρ truncation (exact SVD)
    hqq         half-quadratic quantisation, and round-to-nearest as the baseline it must beat
    changes     what a surgery changed: tensor hashes against the source, tied embeddings
    agreement   the quantised model's next-token distributions against the original's
    output      OUT/config.toml + OUT/checkpoints/step-…/ with the surgery's provenance and evidence

The matrices a surgery may touch are chosen by stack.model.targets, which LoRA's targets share.
docs/surgery.md describes both commands and their gates.
"""
