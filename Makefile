# `make test` and `make demo` work on a fresh clone: they create .venv if it is
# missing and install what they need from this project's own files.
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python

.PHONY: test test-generic test-small-loops test-slow demo demo-quick examples docs bench lint clean

$(VENV)/bin/python:
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip

$(VENV)/.test-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test,examples]"
	touch $@

$(VENV)/.demo-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[examples]"
	touch $@

$(VENV)/.docs-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test,docs]"
	touch $@

$(VENV)/.bench-deps: pyproject.toml | $(VENV)/bin/python
	$(PY) -m pip install -q -e ".[test,bench,examples]"
	touch $@

test: $(VENV)/.test-deps
	$(PY) -m ruff check jopt tests examples benchmarks
	$(PY) -m pytest -q -n 2
	$(PY) -m pytest -q -n 2 -p no:cacheprovider --doctest-modules jopt

# The solver battery in a process started under the generic platform policy (the plain
# path GPUs and TPUs get: no XLA:CPU options, no outlining). `make test` runs the battery
# under both policies in one session (tests/conftest.py's each_platform_policy).
test-generic: $(VENV)/.test-deps
	JOPT_PLATFORM=generic $(PY) -m pytest -q -n 2 tests/test_battery.py tests/test_protocol.py

# The solver tests in processes started with jopt.enable_small_loop_kernels()'s setting
# (XLA:CPU outlines each small loop into one kernel; results may differ in the last bits).
test-small-loops: $(VENV)/.test-deps
	XLA_FLAGS="$$($(PY) -c 'import jopt; print(jopt.small_loop_flags())')" \
		$(PY) -m pytest -q -n 2 tests/test_minimize.py tests/test_solver_state.py \
		tests/platform/test_xla_cpu.py

test-slow: $(VENV)/.test-deps
	JOPT_FULL_SIZE=1 $(PY) -m pytest -q -n 2 -m slow

demo: $(VENV)/.demo-deps
	MPLBACKEND=Agg $(PY) examples/tour.py

demo-quick: $(VENV)/.demo-deps
	MPLBACKEND=Agg $(PY) examples/tour.py --quick

# Every example in quick mode, each in a fresh process (examples/test_examples.py); CI
# runs it, and the tour as make demo-quick.
examples: $(VENV)/.test-deps
	$(PY) -m pytest -q -n 2 -p no:cacheprovider examples/test_examples.py

# The documentation site (Sphinx + MyST + furo), warnings as errors, into docs/_build/html.
docs: $(VENV)/.docs-deps
	$(PY) -m sphinx -E -W --keep-going -b html docs docs/_build/html

bench: $(VENV)/.bench-deps
	$(PY) benchmarks/run_all.py

lint: $(VENV)/.test-deps
	$(PY) -m ruff check jopt tests examples benchmarks

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache .hypothesis examples/out
