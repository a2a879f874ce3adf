# Two commands on a fresh clone: `make demo` and `make test`. Each creates and fills .venv on first use
# (with the dev and ray extras: the test suite starts a real local Ray cluster).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
# Extra pip options for the install, e.g. a CPU-only torch:  make PIP_EXTRA="--index-url URL" ...
PIP_EXTRA ?=

.PHONY: demo test lint install clean-venv

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --disable-pip-version-check -q $(PIP_EXTRA) -e ".[dev,ray]"
	touch $@

install: $(VENV)/.installed

demo: $(VENV)/.installed
	$(BIN)/advimage demo

test: $(VENV)/.installed
	$(BIN)/python -m pytest

# ruff (style, imports, likely bugs) and mypy (types), configured in pyproject.toml; .ci/run runs it before the tests
lint: $(VENV)/.installed
	$(BIN)/ruff check src tests benchmarks studies
	$(BIN)/mypy

clean-venv:
	rm -rf $(VENV)
