# reid-book: the two jobs a newcomer runs.
#   make book   set up .venv, render SynthReID, run every notebook (papermill, synth profile), build the book
#   make test   set up .venv, run the unit tests and the notebook/book tests (smoke profile)
# Re-running skips what is done; `make book FORCE=1` re-runs the notebooks (FORCE=0 or unset does not).

SHELL := /bin/bash
.SHELLFLAGS := -eu -o pipefail -c
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.reid-book-installed
PROFILE ?= synth
FORCE ?=
ifneq ($(filter-out 0 1 yes no true false,$(FORCE)),)
  $(error FORCE must be 1 (re-run the notebooks) or 0, got '$(FORCE)')
endif
PYTEST_ARGS ?=

.PHONY: all book notebooks data test unit-test lint format venv browser clean-book clean

all: book

$(STAMP): requirements.txt pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements.txt
	$(PY) -m pip install --quiet --no-deps -e .
	@touch $(STAMP)

venv: $(STAMP)

data: $(STAMP)
	$(PY) tools/render_data.py --profile $(PROFILE)

notebooks: data browser  # chapter 06 takes a screenshot of its ranked-list page with chromium
	$(PY) tools/run_notebooks.py --profile $(PROFILE) $(if $(filter 1 yes true,$(FORCE)),--force,)

book: notebooks
	$(PY) tools/build_book.py

# Headless Chromium for the test that loads every page of the built book.
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  echo "installing Debian's chromium for the book test"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq chromium >/dev/null; }

# ruff (configured in pyproject.toml): lint and format check; CI fails on a violation.
lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff check --fix .
	$(VENV)/bin/ruff format .

test: $(STAMP) browser lint
	$(PY) -m pytest $(PYTEST_ARGS)

unit-test: $(STAMP)
	$(PY) -m pytest -m "not notebook and not book" $(PYTEST_ARGS)

clean-book:
	rm -rf book/_build book/executed book/generated

clean: clean-book
	rm -rf results data test-output
