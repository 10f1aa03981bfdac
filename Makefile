# Entry points, each installs what it needs into .venv first, from uv.lock only:
#   make serve   the service on the bundled generator, on http://127.0.0.1:3000
#   make test    the default test suite
#   make figures the README's pictures under docs/figures (bench/figures.py)
# `make lock` re-resolves uv.lock on purpose (after editing pyproject.toml's dependencies)
# and regenerates the Bento's requirements from it; README "Dependencies and the lock".
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000
# The lock tool itself; the dev extra pins the same version (tests/test_lock.py checks).
UV_VERSION := 0.13.9
# Generated from the lock by `make lock` for what is built from it: the CPU and GPU Bentos
# and the training image. Never edited by hand.
GENERATED := deploy/bento/requirements.txt deploy/bento/requirements-gpu.txt deploy/training/requirements.txt
LOCK_HINT := uv.lock is out of date with pyproject.toml: run 'make lock', then commit uv.lock and deploy/*/requirements*.txt

.PHONY: serve test figures install-serving install-dev check-python check-lock lock lint

# requires-python, read from pyproject.toml, before anything is created with this interpreter.
define CHECK_PYTHON
import re, sys
spec = re.search(r'requires-python\s*=\s*">=(\d+)\.(\d+)', open("pyproject.toml").read())
need = tuple(int(part) for part in spec.groups())
if sys.version_info[:2] < need:
    sys.exit(f"dcgan-service needs Python >= {need[0]}.{need[1]} (requires-python in pyproject.toml), "
             f"but {sys.executable} is {sys.version.split()[0]}: run make PY=python3.{need[1]} (or newer)")
endef
export CHECK_PYTHON

check-python:
	@$(PY) -c "$$CHECK_PYTHON"

$(BIN)/python: | check-python
	$(PY) -m venv $(VENV)

# pip, not uv, installs the packages: it honours the machine's pip configuration (a local
# mirror or wheel cache), and --no-deps with --require-hashes installs exactly the lock.
$(BIN)/uv: | $(BIN)/python
	$(BIN)/python -m pip install -q uv==$(UV_VERSION)

check-lock: | $(BIN)/uv
	@$(BIN)/uv lock --check --offline --quiet 2>/dev/null || { echo "$(LOCK_HINT)" >&2; exit 1; }

$(VENV)/.installed-%: uv.lock pyproject.toml | check-lock
	$(BIN)/uv export --frozen --quiet --no-emit-project $(EXTRAS) -o $(VENV)/requirements-$*.txt
	$(BIN)/python -m pip install -q --no-deps --no-compile --require-hashes -r $(VENV)/requirements-$*.txt
	$(BIN)/python -m pip install -q --no-deps --no-compile -e .
	@touch $@

install-serving: EXTRAS := --extra serving
install-serving: check-lock $(VENV)/.installed-serving

install-dev: EXTRAS := --all-extras
install-dev: check-lock $(VENV)/.installed-dev

serve: install-serving
	MALLOC_ARENA_MAX=2 $(BIN)/bentoml serve service.service:DCGAN --host 127.0.0.1 --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q

figures: install-dev
	$(BIN)/python bench/figures.py

lock: | $(BIN)/uv
	$(BIN)/uv lock $(if $(UPGRADE),--upgrade)
	$(BIN)/uv export --frozen --quiet --no-emit-project --no-hashes --extra serving \
	  -o deploy/bento/requirements.txt
	$(BIN)/uv export --frozen --quiet --no-emit-project --no-hashes --extra serving-gpu \
	  -o deploy/bento/requirements-gpu.txt
	$(BIN)/uv export --frozen --quiet --no-emit-project --extra training \
	  -o deploy/training/requirements.txt
	@echo "Locked. Next: make test, then commit uv.lock and $(GENERATED)."

lint: install-dev
	$(BIN)/ruff check .
