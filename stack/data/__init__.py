"""The data layer: tokenizers, `stack prepare`'s shards and manifest, and the readers over them.

Everything here is deterministic by construction: a document's split is a function of its
content, a batch is a function of (seed, epoch, step, rank, world size), and every file is
checked against the manifest's sha256 before a token of it is read.
"""
