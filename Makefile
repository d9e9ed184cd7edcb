# Two entry points, each self-contained on a fresh machine: `make demo` and `make test`.
# Both create .venv when it is absent and (re)install the project into it when pyproject.toml changes.

PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.ncprobe-installed

.PHONY: demo test lint bench install clean

$(STAMP): pyproject.toml
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[dev]'
	@touch $(STAMP)

install: $(STAMP)

demo: $(STAMP)
	$(BIN)/ncprobe demo

test: $(STAMP)
	$(BIN)/python -m pytest

lint: $(STAMP)
	$(BIN)/ruff check ncprobe tests benchmarks

bench: $(STAMP)
	$(BIN)/python benchmarks/extract_speed.py
	$(BIN)/python benchmarks/scorers_speed.py

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
