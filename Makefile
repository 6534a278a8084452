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

# Datasets of the shipped model's pretraining corpus (every bundled dataset with counts or
# log-normalized values; the scaled pbmc68k and the Drosophila atlas are not usable).
PRETRAIN_DATA = $(shell $(PY) -c "import cellweave.datasets as d; t = d.list(); print(' '.join(str(d.path(n).relative_to(d.path(n).parents[2])) for n in t[t.pretrain].name))")

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
	$(CW) pretrain --data $(PRETRAIN_DATA) --preset tiny --out build/pretrained/cellweave-tiny \
		--max-epochs 6 --max-cells-per-dataset 4000 --seed 0 --name cellweave-tiny
	mkdir -p src/cellweave/models/pretrained/cellweave-tiny
	cp build/pretrained/cellweave-tiny/{config.json,model.safetensors,vocab.json,model_card.json,MODEL_CARD.md,history.json} \
		src/cellweave/models/pretrained/cellweave-tiny/

bench: install
	$(PY) benchmarks/embed_throughput.py --out benchmarks/results/embed_throughput.json

clean:
	rm -rf $(VENV) build demo_out .pytest_cache .cache
