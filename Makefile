# Two commands do all set-up on a fresh machine: `make demo` and `make test`.
# Both create .venv when missing. torch is installed first, from TORCH_SPEC, so that the
# project's own `torch>=...` range is already satisfied and no other build is pulled:
# on a CPU machine that keeps the multi-GB CUDA build away. GPU users pick their build, e.g.
#   make test TORCH_SPEC='torch==2.13.0 --index-url https://download.pytorch.org/whl/cu128'
PYTHON ?= python3
TORCH_SPEC ?= torch==2.13.0
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint pytest integrity site bench clean-site

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	touch $(STAMP)

## demo: the main job on the embedded default corpus
demo: $(STAMP)
	$(BIN)/stack gates
	$(BIN)/python tools/check_integrity.py
	$(MAKE) site
	@echo "demo: gates listed, integrity checked, site built: open site/index.html or run '$(BIN)/mkdocs serve'"

## test: lint, tests, integrity check, strict site build
test: lint pytest integrity site

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

pytest: $(STAMP)
	$(BIN)/python -m pytest

integrity: $(STAMP)
	$(BIN)/python tools/check_integrity.py

site: $(STAMP)
	$(BIN)/python tools/render_site.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

## bench: measure, and write the results as evidence under evidence/runs/
bench: $(STAMP)
	$(BIN)/python benchmarks/integrity.py
