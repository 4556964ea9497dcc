"""Defaults of `stack prepare`, in a module light enough for the CLI to import at start-up."""

DEFAULT_SOURCE = "main"
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_BPE_VOCAB = 8192
# 64 Mi tokens (128 MiB of uint16) per shard: few files, and a memory map per shard is cheap.
DEFAULT_SHARD_TOKENS = 1 << 26
