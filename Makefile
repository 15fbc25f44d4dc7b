# fleetlanes: `make demo` and `make test` are the two quick-start commands; both run `make setup` first.
SHELL := /bin/bash
.DEFAULT_GOAL := help
ENV := source scripts/env.sh
# Every ROS process started from here stays on this host (network rule); run.sh also picks a private domain id.
export ROS_AUTOMATIC_DISCOVERY_RANGE := LOCALHOST
ROBOTS ?= 200
PYTEST_ARGS ?=

.PHONY: help setup demo test lint typecheck unit bench clean

help:
	@echo "make setup   create .venv, install pinned deps, build the workspace (idempotent)"
	@echo "make demo    run the main job (ROBOTS=$(ROBOTS))"
	@echo "make test    lint, type-check and run every test"
	@echo "make bench   run every benchmark (JSON lines)"

setup:
	@bash scripts/setup.sh

demo: setup
	@$(ENV) && scripts/run.sh python -m fleet_sim.demo --robots $(ROBOTS)

lint: setup
	@$(ENV) && ruff check src test bench && ruff format --check src test bench

typecheck: setup
	@$(ENV) && mypy

test: lint typecheck
	@$(ENV) && scripts/run.sh python -m pytest $(PYTEST_ARGS)

bench: setup
	@$(ENV) && for b in bench/[!_]*.py; do echo "== $$b" >&2; scripts/run.sh python "$$b" || exit 1; done

clean:
	rm -rf build install log .overlay .venv .pytest_cache .mypy_cache .ruff_cache
