"""Defaults of `stack prepare`, in a module light enough for the CLI to import at start-up."""

DEFAULT_SOURCE = "main"
DEFAULT_VAL_FRACTION = 0.05
DEFAULT_BPE_VOCAB = 8192
# 64 Mi tokens (128 MiB of uint16) per shard: few files, and a memory map per shard is cheap.
DEFAULT_SHARD_TOKENS = 1 << 26
# A text file read without --doc-sep is cut into documents of at most this many bytes, or fewer
# where the corpus would make too few (stack.data.doc_size): 1 MiB holds every file of the default
# corpus whole (the largest is 0.7 MiB), whose 1,790 files the split spreads as they are.
DEFAULT_DOC_BYTES = 1 << 20
# Without --doc-bytes, a corpus of text files that would make fewer documents than this many over
# --val-fraction is cut finer (stack.data.doc_size): with 20 held out in expectation, the split holds
# out between half and twice the share asked of them in more than 99.5 % of prepares.
HELDOUT_DOCUMENTS = 20
# The finest that fitting cuts: a piece still fills the diversity filter's 4,000-character window
# (stack/data/filters/defaults.yaml); a corpus smaller than that allows is left short of documents,
# and prepare says so.
MIN_FITTED_DOC_BYTES = 1 << 12
DEFAULT_TEXT_FIELD = "text"  # the JSONL field or Parquet column that holds a record's text
