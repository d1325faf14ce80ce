# Two entry points for a newcomer: `make demo` and `make test`.
# Both create the virtual environment and install the project first.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin

.PHONY: setup demo test fleet fleet-token fleet-down

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

# The compose fleet (deploy/compose.yaml; deploy/fleet.py says what each step does):
# `make fleet` writes deploy/.env (mode 0600) when missing, builds the images, starts the
# stack, waits until the load balancer answers /readyz and every server is online, and
# prints the URL; `make fleet-token` prints an admin token for it; `make fleet-down`
# removes its containers, networks and volumes (deploy/.env stays).
fleet: setup
	$(BIN)/python deploy/fleet.py up

fleet-token: setup
	@$(BIN)/python deploy/fleet.py token

fleet-down: setup
	$(BIN)/python deploy/fleet.py down
