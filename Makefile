# vllm-lws-lab — the two commands of the README are `make run` and `make test`.
# Both set up what they need (idempotently) on a fresh Debian/Ubuntu machine.
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
# checkov pins dependencies that clash with the lab's, so it gets a virtualenv of its own.
TOOLS ?= .venv-tools
TOOLS_STAMP := $(TOOLS)/.installed-stamp
PYTEST_ARGS ?=

.PHONY: setup system-deps run lab test lint typecheck test-slow test-contract real-engine bench clean help

help:
	@echo "make run     set up, then run the whole lab headless on the local twin (reports/)"
	@echo "make test    set up, then lint, type-check and run the whole test suite"
	@echo "make lab     set up, start the local twin and open JupyterLab"
	@echo "make bench   run the benchmarks (ratios measured side by side)"

system-deps:
	@bash scripts/setup-system.sh

$(STAMP): pyproject.toml | system-deps
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	@$(BIN)/python -m pip install -q --upgrade pip
	@$(BIN)/python -m pip install -q -e '.[dev]'
	@$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	@touch $(STAMP)

$(TOOLS_STAMP): | system-deps
	@test -x $(TOOLS)/bin/python || $(PYTHON) -m venv $(TOOLS)
	@$(TOOLS)/bin/python -m pip install -q "checkov>=3.2,<4"
	@touch $(TOOLS_STAMP)

setup: system-deps $(STAMP) $(TOOLS_STAMP)

run: setup
	$(BIN)/labctl lab run --out reports

lab: setup
	$(BIN)/labctl twin up
	$(BIN)/jupyter lab --ServerApp.root_dir=notebooks $$([ "$$(id -u)" = 0 ] && echo --allow-root)

lint: setup
	$(BIN)/ruff check labutils tests benchmarks
	$(BIN)/ruff format --check labutils tests benchmarks

typecheck: setup
	$(BIN)/mypy labutils

test: lint typecheck
	$(BIN)/python -m pytest $(PYTEST_ARGS)

test-slow: setup
	$(BIN)/python -m pytest -m slow $(PYTEST_ARGS)

bench: setup
	@bash scripts/setup-system.sh bench
	@for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

real-engine: setup
	@bash scripts/install-real-engine.sh

test-contract: real-engine
	$(BIN)/python -m pytest -m contract $(PYTEST_ARGS)

clean:
	-$(BIN)/labctl twin down 2>/dev/null
	rm -rf reports/*.html reports/*.ipynb .pytest_cache .mypy_cache .ruff_cache
