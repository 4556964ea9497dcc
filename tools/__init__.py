"""The repository's own tools: the integrity check, the site's generator, and what makes or retires records.

The commands keep their paths (`python tools/check_integrity.py`, `python tools/render_site.py`, the
Makefile's targets): each script at the top of tools/ only calls the `main` of its module in a
sub-package:

- `tools.integrity`: the integrity check and everything it derives a record's truth with;
- `tools.site`: the site's generated pages (docs/reference/), drawn from the spec and the evidence;
- `tools.records`: what writes or retires records (the tests' current records, `make gpu-check`,
  `tools/retire.py`) and the scratch repositories the checker's tests and benchmark audit.

Dependencies run one way: `tools.records` and `tools.site` use `tools.integrity`, which uses
`contracts` and `stack`; nothing under `stack/` or `contracts/` imports `tools`.
"""
