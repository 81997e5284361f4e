# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   set up, then run the main job (the sandbox stages)
#   make test   set up, then run the default test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
FIXTURES := tests/fixtures
TOKENIZER := runs/fixture/tokenizer/tokenizer.json

.PHONY: demo test test-all install clean

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

$(TOKENIZER): $(INSTALLED) $(FIXTURES)/comparisons.jsonl $(FIXTURES)/demonstrations.jsonl
	$(PY) -m almost.tokenizer --input $(FIXTURES)/comparisons.jsonl $(FIXTURES)/demonstrations.jsonl \
		--output $(dir $@) --vocab-size 400

# The sandbox world, its vanilla LMs S/M/L and the prompted-baseline table. Every step is a file
# target: a rerun skips what is done (delete runs/ or `make clean` for a fresh run).
WORLD := runs/sandbox/world/world.json
VANILLA := $(foreach size,s m l,runs/sandbox/pretrain_$(size)/hf/config.json)
BASELINES := runs/sandbox/baselines/baselines.json

$(WORLD): $(INSTALLED) src/almost/sandbox/build.py src/almost/sandbox/corpus.py src/almost/sandbox/world.py
	$(PY) -m almost.sandbox.build --out $(dir $@)

runs/sandbox/pretrain_%/hf/config.json: $(WORLD) configs/sandbox/pretrain_%.yaml configs/sandbox/base.yaml
	$(PY) train.py fit --config configs/sandbox/pretrain_$*.yaml

$(BASELINES): $(VANILLA) src/almost/sandbox/baselines.py src/almost/sandbox/prompts.py
	$(PY) -m almost.sandbox.baselines --world $(dir $(WORLD)) --out $(dir $@) \
		--model S=runs/sandbox/pretrain_s/hf --model M=runs/sandbox/pretrain_m/hf --model L=runs/sandbox/pretrain_l/hf

demo: $(INSTALLED) $(TOKENIZER) $(BASELINES)
	# reward model and SFT on the fixture data, until the synthetic-feedback stages land
	$(PY) train.py fit --config configs/sandbox/rm.yaml
	$(PY) train.py fit --config configs/sandbox/sft.yaml
	@echo "Done. Baselines: runs/sandbox/baselines/baselines.md; curves: tensorboard --logdir runs/sandbox"

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not gpu"

test-all: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs
