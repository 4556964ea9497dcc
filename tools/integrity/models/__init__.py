"""What a record states of a model or a text it read, derived again from the committed model, its
checkpoint and its tokenizer (forwards, probes and tokens run again on the CPU)."""
