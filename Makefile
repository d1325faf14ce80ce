# Two entry points for a newcomer: `make demo` and `make test`.
# Both create the virtual environment and install the project first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test

$(BIN)/resofleet: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e '.[test]'
	@touch $@

setup: $(BIN)/resofleet

demo: setup
	$(BIN)/resofleet up --demo

test: setup
	@eval "$$(tests/services.sh)" && $(BIN)/python -m pytest $(PYTEST_ARGS)
