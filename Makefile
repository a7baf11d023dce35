# `make demo` and `make test` are the README's quickstart; `dev`, `validate` and `lint` serve development.
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV   ?= .venv
BIN    := $(VENV)/bin
export DAGSTER_HOME ?= $(CURDIR)/.dagster_home
DEMO_DAYS ?= 365
# Two snapshots: the second is what the report's and the exports' changes compare with the first.
DEMO_SNAPSHOTS ?= 2
# The port of `make dev`'s webserver, which `make backfill` asks.
PORT ?= 3000
# END=YYYY-MM-DD: the last daily partition (SEGMENTATION_END_DATE) for `demo`, `dev` and `backfill`, so that
# the UI shows the days of a history that ends (the synthetic history ends a year after its start by itself).
SETTINGS = $(if $(START),SEGMENTATION_START_DATE=$(START)) $(if $(END),SEGMENTATION_END_DATE=$(END))

.PHONY: install instance-config instance demo test dev backfill retract erase validate lint clean

# The project is reinstalled into the venv when pyproject.toml changes.
$(BIN)/.installed: pyproject.toml
	@command -v $(PYTHON) >/dev/null 2>&1 || { echo "$(PYTHON) not found; set PYTHON=/path/to/python3.11"; exit 1; }
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $@

install: $(BIN)/.installed

# A DAGSTER_HOME outside the repository gets the repository's instance configuration (run queue,
# pools, run monitoring), never an empty one; an existing file there is the operator's and is kept.
$(DAGSTER_HOME)/dagster.yaml:
	mkdir -p $(DAGSTER_HOME)
	cp $(CURDIR)/.dagster_home/dagster.yaml $@

# An empty configuration (as earlier versions of this file made) would silently drop them: refuse it.
instance-config: $(DAGSTER_HOME)/dagster.yaml
	@test -s $< || { echo "$< is empty: the run queue, pools and run monitoring would be off;" \
		"copy $(CURDIR)/.dagster_home/dagster.yaml there (or delete it and run make again)"; exit 2; }

# The instance's storage and pool slots, made once before any run can start: runs that make them
# side by side on a new DAGSTER_HOME break the instance for good (segmentation_pipeline/instance.py).
instance: install instance-config
	$(BIN)/python -m segmentation_pipeline.instance

# The demo prepares the instance itself (segmentation_pipeline.instance), in its own process: a
# `make instance` before it would load Dagster and the definitions once more for nothing.
demo: install instance-config
	$(if $(SOURCE_CONFIG),SEGMENTATION_SOURCE_CONFIG=$(SOURCE_CONFIG)) $(SETTINGS) \
	$(BIN)/python -m segmentation_pipeline.demo --days $(DEMO_DAYS) --snapshots $(DEMO_SNAPSHOTS) $(if $(AS_OF),--as-of $(AS_OF))

test: install
	$(BIN)/python -m pytest -n 2 --dist loadfile

lint: install
	$(BIN)/ruff check segmentation_pipeline segmentation_pipeline_tests benchmarks

validate: install
	$(BIN)/dagster definitions validate -m segmentation_pipeline.definitions

# The code location workspace.yaml names (the demo files its runs there). `dagster dev` warns that it is
# superseded by `dg dev`, which needs a project layout this repository does not use: that one warning is
# ignored; any other still shows (the definitions' own known warnings: defs/known_warnings.py).
dev: install instance
	$(SETTINGS) $(BIN)/python -W 'ignore:Function `dev_command` is superseded:FutureWarning' \
		-m dagster dev -w workspace.yaml -h 127.0.0.1 -p $(PORT)

# A backfill of the whole graph over FROM..TO (YYYY-MM-DD), through the webserver and daemon of `make dev`.
backfill: install instance
	@test -n "$(FROM)" -a -n "$(TO)" || { echo "usage: make backfill FROM=YYYY-MM-DD TO=YYYY-MM-DD"; exit 2; }
	$(BIN)/python -m segmentation_pipeline.backfill --from $(FROM) --to $(TO) --port $(PORT)

# Take one ingested file out of its day and ingest the days it reached again (the file source keeps
# every file ingested from a day folder, so archiving a file does not erase its rows).
retract: install instance-config
	@test -n "$(DAY)" -a -n "$(FILE)" || { echo "usage: make retract DAY=YYYY-MM-DD FILE=name [TABLE=events|id_history]"; exit 2; }
	$(BIN)/python -m segmentation_pipeline.retract --table $(or $(TABLE),events) --day $(DAY) $(FILE)

# Erase customers (the right to be forgotten): FILE holds one customer ID per line, or a customer_id column.
erase: install
	@test -n "$(FILE)" || { echo "usage: make erase FILE=ids.txt (one customer ID per line, or a CSV with a customer_id column)"; exit 2; }
	$(BIN)/python -m segmentation_pipeline.erase $(FILE)

clean:
	rm -rf $(VENV) .pytest_cache
