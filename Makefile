# Two commands for a fresh machine (see README): `make serve` and `make test`.
# Both create .venv with Python 3.13 and install the project on first use.

PYTHON ?= python3.13
export PYENV_VERSION ?= 3.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint types clean mutants bench

# Set-up is safe to run twice at once (`make serve` and `make test` started together): the
# first one takes a lock (.venv.lock, a directory: mkdir is atomic everywhere), the second waits
# for it and then finds the stamp up to date. A lock older than 15 minutes is stale (a killed
# set-up) and is taken over.
$(STAMP): pyproject.toml
	@said=; while ! mkdir .venv.lock 2>/dev/null; do \
	    if [ -n "$$(find .venv.lock -maxdepth 0 -mmin +15 2>/dev/null)" ]; then \
	        rm -rf .venv.lock; continue; fi; \
	    [ -n "$$said" ] || echo "waiting for another set-up of $(VENV) to finish..." >&2; \
	    said=1; sleep 2; \
	done; \
	trap 'rm -rf .venv.lock' EXIT INT TERM; \
	if [ -f $(STAMP) ] && [ $(STAMP) -nt pyproject.toml ]; then exit 0; fi; \
	set -e; \
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV); \
	$(BIN)/python -m pip install --quiet --upgrade pip; \
	$(BIN)/python -m pip install --quiet -e '.[test]'; \
	touch $(STAMP)

## serve: run the proxy offline on http://127.0.0.1:8000/v1 from the recorded cassettes
serve: $(STAMP)
	$(BIN)/qwen-proxy serve --offline

## test: run the whole test suite
test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/python -m pip install --quiet 'ruff>=0.6'
	$(BIN)/ruff check proxy recorder tests bench

types: $(STAMP)
	$(BIN)/python -m pip install --quiet 'mypy>=1.11'
	$(BIN)/mypy

clean:
	rm -rf $(VENV) .venv.lock .pytest_cache .hypothesis

## mutants: mutation testing (mutmut 3) of the pure modules, one module at a time;
## MODULES="proxy.qwen.sse" narrows it. Results: mutants/<module>.txt and `mutmut results`.
MODULES ?= proxy.qwen.sse proxy.qwen.translate proxy.qwen.envelope proxy.errors recorder.redact proxy.conformance.diagnosis proxy.spares proxy.batch proxy.sweep proxy.hangup
mutants: $(STAMP)
	$(BIN)/python -m pip install --quiet 'mutmut>=3.8,<4'
	@for m in $(MODULES); do \
	  QWEN_SHARED_DIR=$${QWEN_SHARED_DIR:-$(CURDIR)/../shared} $(BIN)/mutmut run --max-children $${JOBS:-2} "$$m.*" >/dev/null 2>&1; \
	  $(BIN)/python bench/mutant_score.py "$$m"; \
	done

## bench: the gateway's cost per stream against a plain aiohttp translating relay (ratios)
bench: $(STAMP)
	$(BIN)/python bench/relay_bench.py $(BENCH_ARGS)
