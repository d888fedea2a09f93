VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e ".[test,demo]"
	touch $@

# The README's first command: simulate, process and plot a few seconds of detector.
demo: $(VENV)/.installed
	$(VENV)/bin/asyncstrax demo

# The README's second command: the whole test suite.
test: $(VENV)/.installed
	$(PY) -m pytest

bench: $(VENV)/.installed
	$(PY) -m pytest benchmarks --benchmark-enable -s

lint: $(VENV)/.installed
	$(PY) -m pip install -q -e ".[dev]"
	$(VENV)/bin/ruff check asyncstrax tests benchmarks
	$(VENV)/bin/mypy asyncstrax

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis .benchmarks
