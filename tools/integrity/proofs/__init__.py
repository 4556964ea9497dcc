"""The proof by mutation held to the working tree: each gate's code fingerprint, the falsifier tests
the proof lock lists, and whether evidence/proofs.lock proves today's code."""
