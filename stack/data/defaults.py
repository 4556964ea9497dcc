"""Defaults of `stack prepare`, in a module light enough for the CLI to import at start-up."""

DEFAULT_SOURCE = "main"
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_BPE_VOCAB = 8192
# 64 Mi tokens (128 MiB of uint16) per shard: few files, and a memory map per shard is cheap.
DEFAULT_SHARD_TOKENS = 1 << 26
# A text file read without --doc-sep is cut into documents of at most this many bytes: 1 MiB
# holds every file of the default corpus whole (the largest is 0.7 MiB) and cuts a 100 MB
# byte-level benchmark file into about a hundred documents for the split to spread.
DEFAULT_DOC_BYTES = 1 << 20
DEFAULT_TEXT_FIELD = "text"  # the JSONL field or Parquet column that holds a record's text
