"""Weight surgery: a trained model's matrices rewritten, and a new run-like checkpoint of the result.

    targets     the matrices a surgery may touch, named by the trace site each one produces
    laser       LASER: a matrix replaced by its rank-ρ truncation (exact SVD)
    hqq         half-quadratic quantisation, and round-to-nearest as the baseline it must beat
    changes     what a surgery changed: tensor hashes against the source, tied embeddings
    agreement   the quantised model's next-token distributions against the original's
    output      OUT/config.toml + OUT/checkpoints/step-…/ with the surgery's provenance and evidence

docs/surgery.md describes both commands and their gates.
"""
