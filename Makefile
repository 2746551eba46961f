# Two commands for a fresh machine (see README): `make serve` and `make test`.
# Both create .venv with Python 3.13 and install the project on first use.

PYTHON ?= python3.13
export PYENV_VERSION ?= 3.13.0
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: serve test lint types clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	@touch $(STAMP)

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
	rm -rf $(VENV) .pytest_cache .hypothesis
