"""A record's settings derived again: its command lines, config.toml, presets, and the defaults and
constants of the code at the record's commit."""
