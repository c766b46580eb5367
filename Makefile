# `make test` and `make demo` work on a fresh clone: they create .venv if it is
# missing and install what they need from this project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test test-slow demo bench lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.test-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $@

$(VENV)/.demo-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[examples]"
	touch $@

$(VENV)/.bench-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test,bench,examples]"
	touch $@

test: $(VENV)/.test-deps
	$(PY) -m ruff check jopt tests examples benchmarks
	$(PY) -m pytest -q -n 2

test-slow: $(VENV)/.test-deps
	JOPT_FULL_SIZE=1 $(PY) -m pytest -q -n 2 -m slow

demo: $(VENV)/.demo-deps
	MPLBACKEND=Agg $(PY) examples/tour.py

bench: $(VENV)/.bench-deps
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.test-deps
	$(PY) -m ruff check jopt tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis examples/out
