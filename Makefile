# Developer entry points. `make test` is the project's test command (CI: .ci/run).
#   make setup   venv + ROS 2 + deps + colcon build, only what is missing (tools/setup_env.sh)
#   make build   colcon build --symlink-install, always
#   make test    setup, then ruff, then the pytest suite against the colcon install
#   make venv    the venv part of setup only (no colcon build)
#   make lint    ruff check
#   make format  ruff format + ruff check --fix
#   make demo    setup, then the offline demo (ARGS="..." passes arguments)
#   make clean   remove build/ install/ log/ and caches (keeps the venv)
# VENV=/path picks another venv (default .venv); PYTEST_ARGS="-k foo -x" narrows tests.

SHELL := /bin/bash
.SHELLFLAGS := -eo pipefail -c
VENV ?= $(CURDIR)/.venv
export VENV
ENV := source tools/env.sh &&
PYTEST_ARGS ?=
ARGS ?=

.PHONY: setup venv build test lint format demo clean

setup:
	bash tools/setup_env.sh

venv:
	bash tools/setup_env.sh --no-build

build:
	bash tools/setup_env.sh --build

# pytest runs from the installed package (install/, symlinks into this tree), not the
# source tree: the `pytest` executable does not put the working directory on sys.path
# (`python -m pytest` would, and the source `vpr_ros` has no `.msg`). Ruff failures
# fail the target but do not hide the test results.
test: setup
	@lint=0; $(ENV) ruff check . || lint=$$?; \
	tests=0; $(ENV) pytest $(PYTEST_ARGS) || tests=$$?; \
	if [[ $$lint != 0 ]]; then echo "make test: ruff check failed (exit $$lint)"; fi; \
	if [[ $$tests != 0 ]]; then echo "make test: pytest failed (exit $$tests)"; fi; \
	exit $$(( lint != 0 ? lint : tests ))

lint: venv
	$(VENV)/bin/ruff check .

format: venv
	$(VENV)/bin/ruff format . && $(VENV)/bin/ruff check --fix .

demo: setup
	$(ENV) demo $(ARGS)

clean:
	rm -rf build install log .pytest_cache .ruff_cache
	find vpr_ros test -name __pycache__ -type d -prune -exec rm -rf {} +
