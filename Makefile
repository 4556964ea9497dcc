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

.PHONY: demo test lint pytest browser-deps integrity site bench gpu-check gpu-wheels proofs fixtures

EXTRAS := .[dev,export,tensorboard,signing]
# uv installs what pip would, from the sources pip is configured with (tools/uv_flags.py), in
# about 30 s where pip takes 90 s; where no index serves uv, pip does it. Both compile the
# bytecode as they install: a process run under PYTHONDONTWRITEBYTECODE would otherwise compile
# torch's sources again each time it starts.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	if $(BIN)/python -m pip install --quiet --disable-pip-version-check uv \
		&& flags="$$($(BIN)/python tools/uv_flags.py)" \
		&& $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python $$flags $(TORCH_SPEC) \
		&& $(BIN)/python -m uv pip install --quiet --compile-bytecode --python $(BIN)/python $$flags -e '$(EXTRAS)'; \
	then :; else \
		$(BIN)/python -m pip install --quiet --disable-pip-version-check $(TORCH_SPEC) \
		&& $(BIN)/python -m pip install --quiet --disable-pip-version-check -e '$(EXTRAS)'; \
	fi
	touch $(STAMP)

# Where `make demo` puts the prepared corpus and its runs (ignored by git).
DEMO_DIR ?= runs
DEMO_RUN := $(DEMO_DIR)/demo-$(shell date -u +%Y%m%dT%H%M%S)

# The demo's signing key: outside the repository, as every signing key must be (a key inside it is
# refused), made once with openssl as docs/concepts/integrity.md shows; KEY.pub is its public half.
DEMO_KEY ?= $(HOME)/.config/gatestack/demo-signing-key.pem
# The demo files its training record here, signed, beside the run directory.
DEMO_LEDGER := $(DEMO_DIR)/ledger

## demo: the main job on the embedded default corpus (the running Python's standard library)
demo: $(STAMP)
	@test -f $(DEMO_DIR)/data/manifest.json || $(BIN)/stack prepare --default --out $(DEMO_DIR)/data
	@test -f $(DEMO_KEY) || (mkdir -p $(dir $(DEMO_KEY)) && chmod 700 $(dir $(DEMO_KEY)) \
		&& openssl ecparam -name prime256v1 -genkey -noout -out $(DEMO_KEY) \
		&& openssl ec -in $(DEMO_KEY) -pubout -out $(DEMO_KEY).pub)
	GATESTACK_SIGNING_KEY=$(DEMO_KEY) $(BIN)/stack train --data $(DEMO_DIR)/data --out $(DEMO_RUN) --preset demo \
		--evidence-dir $(DEMO_LEDGER)
	$(BIN)/stack sample $(DEMO_RUN) --prompt "def " --tokens 200 --seed 0
	$(BIN)/stack eval $(DEMO_RUN) --split val --max-bytes 200000
	$(BIN)/stack trace $(DEMO_RUN) --prompt "def main():"
	$(BIN)/python tools/check_integrity.py --run $(DEMO_RUN)
	$(BIN)/python tools/check_integrity.py --runs-only --run $(DEMO_LEDGER)/$(notdir $(DEMO_RUN)) \
		--trust-key $(DEMO_KEY).pub
	$(BIN)/python tools/render_site.py --run $(DEMO_RUN)
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site
	@echo
	@echo "demo done. Look at:"
	@echo "  run directory   $(DEMO_RUN)  (metadata.json, metrics.jsonl, checkpoints/)"
	@echo "  signed record   $(DEMO_LEDGER)/$(notdir $(DEMO_RUN))/metadata.intoto.json  (verified with $(DEMO_KEY).pub)"
	@echo "  the site        site/index.html, or '$(BIN)/mkdocs serve' then http://127.0.0.1:8000"

## test: lint, tests, integrity check, strict site build
# The tests build the repository's site strict, with a fresh run beside the ledger
# (tests/support/site_build.py, read by the link and browser tests), so the site is not built a
# second time here; `make site` builds it alone. The integrity check runs beside the tests (they
# write nothing it reads: only the ignored docs/reference/) and its report follows theirs.
test: lint
	@$(MAKE) --no-print-directory integrity > $(VENV)/integrity.log 2>&1 & checker=$$!; \
	$(MAKE) --no-print-directory pytest; tests=$$?; \
	wait $$checker; integrity=$$?; cat $(VENV)/integrity.log; \
	test $$tests = 0 && test $$integrity = 0

lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

# The tests run in one pytest-xdist worker per core (TEST_WORKERS=0: in this process alone); a
# file's tests stay in one worker, so its module fixtures are built once. Files are handed out in
# the order tests/conftest.py collects them, longest first: xdist's own reordering, by how many
# tests a file holds, sent the files of a few long tests (the distributed runs) last, to one core.
TEST_WORKERS ?= auto
XDIST := -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder
# Bytecode is written (into the ignored __pycache__/ folders) even where the environment sets
# PYTHONDONTWRITEBYTECODE: the suite starts some thousand Python processes (workers, `stack`
# commands, checks), and without it each compiled the project's sources and rewrote the tests'
# asserts again; collection alone took 23 s a worker instead of 11.
PYTEST := env -u PYTHONDONTWRITEBYTECODE $(BIN)/python -m pytest

# --reprove: the falsifiers of every gate whose code changed since evidence/proofs.lock run again
# with the gate forced off (tests/gate_plugin.py); a gate that no longer turns red fails, and the
# integrity check then refuses the lock until `make proofs` writes it for the code as it is.
pytest: $(STAMP) browser-deps
	$(PYTEST) $(XDIST) --reprove

# The site's browser test drives Debian's Chromium; install it when missing and we may.
browser-deps:
	@command -v chromium >/dev/null 2>&1 || { \
	  if [ "$$(id -u)" = 0 ]; then \
	    echo "installing Debian's chromium for the browser test"; \
	    apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "chromium missing and not root: the browser test will be skipped (CI installs it)"; fi; }

integrity: $(STAMP)
	$(BIN)/python tools/check_integrity.py

site: $(STAMP)
	$(BIN)/python tools/render_site.py
	NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs build --strict --quiet --site-dir site

## bench: measure, and write the results as evidence under evidence/runs/
bench: $(STAMP)
	$(BIN)/python benchmarks/integrity.py
	$(BIN)/python benchmarks/reader.py
	$(BIN)/python benchmarks/attention.py
	$(BIN)/python benchmarks/train_throughput.py
	$(BIN)/python benchmarks/smoke.py

## gpu-check: once, on a CUDA GPU: kernel parity and speed, bf16 training, a bit-exact fp16 resume,
## compile and --nproc; files a gpu-check record under evidence/runs/ (exit 2 without CUDA)
gpu-check: $(STAMP)
	$(BIN)/python tools/gpu_check.py

## gpu-wheels: the wheels a lent GPU machine lacks, at this environment's versions, into
## .cache/gpu-wheels (carried with a device run; tools/gpu_wheels.py prints the install line)
gpu-wheels: $(STAMP)
	$(BIN)/python tools/gpu_wheels.py

## proofs: prove again, with each gate forced off, every gate whose code changed since
## evidence/proofs.lock, and write their entries into the lock in place (PROVE_ALL=1: every gate)
proofs: $(STAMP)
	$(PYTEST) tests $(XDIST) --reprove --update-lock $(if $(PROVE_ALL),--prove-all)

## fixtures: when an edit changes what a record would say (a spec version that revises gates), make
## the tests' current records again in place under tests/fixtures/records/current/ (from a clean
## tree; the checker's tests tamper with copies of these), in RECORDS_WORK's fresh directory
RECORDS_WORK ?= /tmp/gatestack-records-$(shell date -u +%Y%m%dT%H%M%S)
fixtures: $(STAMP)
	$(BIN)/python tools/current_records.py --work $(RECORDS_WORK)
