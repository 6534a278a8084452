SHELL := /bin/bash
# One command for the main job (`make demo`) and one for the tests (`make test`); both set up
# the environment on a fresh machine first. CPU torch is pinned through constraints.txt.
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
CW := $(VENV)/bin/cellweave
PYTHON ?= python3
export NUMBA_CACHE_DIR ?= $(CURDIR)/.cache/numba
export MPLBACKEND ?= Agg
# Datasets and referenced gene tables are read from a local mirror when there is one (the shared
# data folder beside this checkout); elsewhere from the user cache or their pinned sources.
SHARED_DATA := $(abspath $(CURDIR)/../shared/data)
ifneq ($(wildcard $(SHARED_DATA)/README.md),)
export CELLWEAVE_DATA_DIR ?= $(SHARED_DATA)
endif

# The pretraining corpus: every registered dataset tagged for pretraining whose values a count
# model can read (`cellweave datasets list --pretrain`), less the development panel's datasets, so
# the panel measures the shipped model on data it never saw; names are resolved through the registry.
PRETRAIN_DATA = $(shell $(CW) datasets list --pretrain --exclude-task panel --names)

.PHONY: install demo test test-all pretrained bench clean

$(VENV)/.installed: pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q -c constraints.txt torch==2.13.0
	$(PIP) install -q -c constraints.txt -e ".[dev]"
	touch $@

install: $(VENV)/.installed

demo: install
	$(CW) demo --out demo_out

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q --runslow

# Regenerates the shipped default model (src/cellweave/models/pretrained/cellweave-tiny).
pretrained: install
	$(CW) pretrain $(PRETRAIN_DATA) --preset tiny --out build/pretrained/cellweave-tiny \
		--max-epochs 3 --max-cells-per-dataset 4000 --seed 0 --name cellweave-tiny \
		--value-encoding log1p --profile-skip --token-selection deviation --fixed-feature-tables \
		--count-likelihood --embed-hvg-tokens 2000
	mkdir -p src/cellweave/models/pretrained/cellweave-tiny
	cp build/pretrained/cellweave-tiny/{config.json,model.safetensors,vocab.json,model_card.json,MODEL_CARD.md,history.json} \
		src/cellweave/models/pretrained/cellweave-tiny/

bench: install
	$(PY) benchmarks/embed_throughput.py --out benchmarks/results/embed_throughput.json

clean:
	rm -rf $(VENV) build demo_out .pytest_cache .cache
