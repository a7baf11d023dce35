# `make demo` and `make test` are the README's quickstart; `dev`, `validate` and `lint` serve development.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_DAYS ?= 365
DEMO_SNAPSHOTS ?= 3

.PHONY: install instance demo test dev backfill validate lint clean

# The project is reinstalled into the venv when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# A DAGSTER_HOME outside the repository gets an empty instance configuration.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	touch $@

# The instance's storage and pool slots, made once before any run can start: runs that make them
# side by side on a new DAGSTER_HOME break the instance for good (segmentation_pipeline/instance.py).
instance: install $(DAGSTER_HOME)/dagster.yaml
	$(BIN)/python -m segmentation_pipeline.instance

demo: install $(DAGSTER_HOME)/dagster.yaml instance
	$(BIN)/python -m segmentation_pipeline.demo --days $(DEMO_DAYS) --snapshots $(DEMO_SNAPSHOTS)

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check segmentation_pipeline segmentation_pipeline_tests benchmarks

validate: install
	$(BIN)/dagster definitions validate -m segmentation_pipeline.definitions

dev: install $(DAGSTER_HOME)/dagster.yaml instance
	$(BIN)/dagster dev -m segmentation_pipeline.definitions -h 127.0.0.1 -p 3000

# A backfill of the whole graph over FROM..TO (YYYY-MM-DD), through the webserver and daemon of `make dev`.
backfill: install instance
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD"; exit 2; }
	$(BIN)/python -m segmentation_pipeline.backfill --from $(FROM) --to $(TO)

clean:
	rm -rf $(VENV) .pytest_cache
