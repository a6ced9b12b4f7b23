# crossmodal — the commands a newcomer types. Every target sets itself up first.
#   make train STRATEGY=poe     train + evaluate on the synthetic hands (CPU profile without a GPU)
#   make test                   the whole test suite
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
TORCH_VERSION ?= 2.13.0
# The stamp names the torch version so that `make setup TORCH_VERSION=...` re-runs set-up.
STAMP := $(VENV)/.setup-done-torch-$(TORCH_VERSION)

SYNTH_DIR ?= data/synthetic
SYNTH_TRAIN ?= 2000
SYNTH_TEST ?= 400
SEED ?= 0
PYTEST_ARGS ?=

.PHONY: help setup data test bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  make %-12s %s\n", $$1, $$2}'

setup: $(STAMP)  ## create .venv and install crossmodal[dev] (torch pinned to TORCH_VERSION)

$(STAMP): setup.cfg pyproject.toml scripts/ensure_system_deps.sh
	@bash scripts/ensure_system_deps.sh
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet "torch==$(TORCH_VERSION)"
	$(PY) -m pip install --quiet -e ".[dev]"
	@$(PY) -c "import torch, lightning, open3d, h5py; print(f'setup: torch {torch.__version__}, lightning {lightning.__version__}, open3d {open3d.__version__}, h5py {h5py.__version__}')"
	@rm -f $(VENV)/.setup-done-torch-* && touch $@

data: $(STAMP)  ## generate the synthetic hands (SYNTH_TRAIN/SYNTH_TEST frames) if missing
	@if [ -f $(SYNTH_DIR)/evaluation/anno_evaluation.pickle ] && [ -f $(SYNTH_DIR)/training/anno_training.pickle ]; then \
		echo "data: $(SYNTH_DIR) already exists"; \
	else \
		$(PY) -m crossmodal synth --out $(SYNTH_DIR) --train $(SYNTH_TRAIN) --test $(SYNTH_TEST) --seed $(SEED); \
	fi

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest $(PYTEST_ARGS)

bench: $(STAMP)  ## data benchmarks; results go to benchmarks/results/
	$(PY) benchmarks/synth_speed.py
	$(PY) benchmarks/data_pipeline.py

clean:  ## remove generated data, caches and runs (keeps .venv)
	rm -rf data runs .pytest_cache
