"""The integrity check (`tools/check_integrity.py`): spec, registry, evidence and code held to each other.

`check` runs it; `record_checks` asks of one record whether it is true; `audit` reads the repository
as text (the site reads it through the same module). Three sub-packages derive again what a record
restates: `settings` (its command lines, config, presets and the code's defaults at its commit),
`models` (what committed models and checkpoints decide) and `proofs` (the proof by mutation held to
the working tree).
"""
