# Two entry points, each installs what it needs into .venv first:
#   make serve   the service on the bundled generator, on http://127.0.0.1:3000
#   make test    the default test suite
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
PORT ?= 3000

.PHONY: serve test install-serving install-dev lint bench-train

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip

install-serving: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[serving]'

install-dev: $(BIN)/python
	$(BIN)/python -m pip install -q -e '.[serving,training,dev]'

serve: install-serving
	$(BIN)/bentoml serve service.service:DCGAN --host 127.0.0.1 --port $(PORT)

test: install-dev
	$(BIN)/python -m pytest -q

lint: install-dev
	$(BIN)/ruff check .
