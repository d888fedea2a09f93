VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.PHONY: demo test bench lint clean

$(VENV)/.installed: pyproject.toml
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || { \
		echo "asyncstrax needs Python >= 3.11 (asyncio.Runner); $(PYTHON) is $$($(PYTHON) -V 2>&1)." \
		"Run make with PYTHON=python3.11 (or newer)." >&2; exit 1; }
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
