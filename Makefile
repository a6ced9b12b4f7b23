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

STRATEGY ?= poe
DATA ?= synthetic
DATA_ROOT ?=
CONFIG ?=
ARGS ?=
PYTEST_ARGS ?=
# `make test` runs one pytest worker a core, whole files to a worker (module fixtures are built once).
TEST_WORKERS ?= $(shell nproc 2>/dev/null || echo 1)
# The paper's experiments run by `make experiments` (Table 2 needs the real datasets: add it
# with EXPERIMENTS=experiments/table2 ARGS="data.root=..."). keypoint_stage, weak_share,
# s3_alignment_weight and budget are the diagnostics the results README cites; their rows that
# repeat a Table 1 or Fig. 8 row are the same runs, trained once.
EXPERIMENTS ?= experiments/table1 experiments/fig5_viewcorrection experiments/fig8_weak experiments/keypoint_stage \
	experiments/weak_share experiments/s3_alignment_weight experiments/budget experiments/fewer_labels_pilot \
	experiments/fewer_labels
# Runs trained at once, each with cores / JOBS threads. On 2 cores an S4 step took ~0.6 s at one thread beside
# another run (the cpu-long campaign's logs) and 0.37 s alone with two (trainer_step.md): ~3.3 against 2.7 steps/s.
# Not measured side by side.
JOBS ?= 2
# DATA/DATA_ROOT pick the dataset (synthetic, rhd, stb); ARGS takes any key=value overrides.
DATA_ARGS := data.dataset=$(DATA) $(if $(DATA_ROOT),data.root=$(DATA_ROOT),) $(if $(filter-out synthetic,$(DATA)),data.cache_dir=data/cache-$(DATA),)

ifneq ($(DATA),synthetic)
ifeq ($(DATA_ROOT),)
$(error DATA=$(DATA) needs DATA_ROOT=<folder holding the dataset>, e.g. DATA_ROOT=/data/RHD_published_v2)
endif
endif

.PHONY: help setup data train eval finder test bench gpu-check experiments plan clean

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

data: $(STAMP)  ## generate the synthetic hands if missing and build the caches (DATA=rhd|stb DATA_ROOT=... for real data)
	$(PY) -m crossmodal prepare $(CONFIG) $(DATA_ARGS) $(ARGS)

train: $(STAMP)  ## train STRATEGY=crossmodal|extended|kl_align|poe, then evaluate (CPU profile without a GPU)
	$(PY) -m crossmodal train $(CONFIG) model.strategy=$(STRATEGY) $(DATA_ARGS) $(ARGS)

eval: $(STAMP)  ## re-evaluate the latest run (runs/latest)
	$(PY) -m crossmodal eval --ckpt runs/latest/checkpoints/best.ckpt $(ARGS)

finder: $(STAMP)  ## train the hand finder (whole image -> hand box and side) that predict uses without --mask/--bbox
	$(PY) -m crossmodal finder $(CONFIG) $(if $(filter-out synthetic,$(DATA)),data.dataset=$(DATA),) $(if $(DATA_ROOT),data.root=$(DATA_ROOT),) $(ARGS)

experiments: $(STAMP)  ## run every row of EXPERIMENTS (finished rows are reused), tables in experiments/results/
	$(PY) -m crossmodal experiment $(EXPERIMENTS) --jobs $(JOBS) $(ARGS)

plan: $(STAMP)  ## what `make experiments` has left to train, as scripts/campaign.sh items with estimated times
	$(PY) -m crossmodal experiment $(EXPERIMENTS) --plan $(ARGS)

test: $(STAMP)  ## run the whole test suite
	$(PY) -m pytest -n $(TEST_WORKERS) --dist loadfile $(PYTEST_ARGS)

bench: $(STAMP)  ## speed benchmarks (data, kernels, training step); results go to benchmarks/results/
	$(PY) benchmarks/synth_speed.py
	$(PY) benchmarks/data_pipeline.py
	$(PY) benchmarks/kernels.py
	$(PY) benchmarks/train_profile.py
	$(PY) benchmarks/trainer_step.py

# No set-up step: on the GPU machine nothing is installed (benchmarks/GPU.md), so it runs with
# .venv's python where there is one, else python3. ARGS=--smoke runs every stage on CPU.
GPU_CHECK_OUT ?= benchmarks/results
gpu-check:  ## GPU check: kernels, training throughput, a short run; report in GPU_CHECK_OUT (benchmarks/GPU.md)
	$(if $(wildcard $(PY)),$(PY),$(PYTHON)) benchmarks/gpu_check.py --out $(GPU_CHECK_OUT) $(ARGS)

clean:  ## remove generated data, caches and runs (keeps .venv)
	rm -rf data runs .pytest_cache
