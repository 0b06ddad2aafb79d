# Every target sets itself up: a fresh machine needs only python3 (3.11+) and make.
PYTHON ?= python3
VENV   ?= .venv
PY      = $(VENV)/bin/python
BIN     = $(VENV)/bin
OUT    ?= out/demo

.PHONY: setup test test-all lint demo bench clean

$(VENV)/.stamp: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev,runtime]'
	touch $@

setup: $(VENV)/.stamp

lint: setup
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src
	$(BIN)/mypy src

test: setup lint
	$(BIN)/pytest -q -m "not slow"

test-all: setup lint
	$(BIN)/pytest -q

demo: setup
	$(PY) -m parplan.demo $(OUT)

bench: setup
	$(PY) -m bench.run

clean:
	rm -rf $(VENV) out .pytest_cache .ruff_cache .mypy_cache
