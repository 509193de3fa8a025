# Two entry points for a fresh machine: `make demo` and `make test`. Each creates/updates .venv.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: demo test lint bench-resco clean

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(BIN)/python
	$(BIN)/pip install --quiet torch==2.13.0
	$(BIN)/pip install --quiet -e ".[test,train]"
	touch $(STAMP)

demo: $(STAMP)
	$(BIN)/citysignal bench grid4x4 --controller fixed --controller maxpressure --controller actuated --out out/demo

test: $(STAMP)
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/mypy
	$(BIN)/pytest -q

bench-resco: $(STAMP)
	$(BIN)/python benchmarks/resco_baselines.py

clean:
	rm -rf $(VENV) out .pytest_cache .mypy_cache
