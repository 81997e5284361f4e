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

# Until the sandbox world lands: reward model and SFT on the fixture data.
demo: $(INSTALLED) $(TOKENIZER)
	$(PY) train.py fit --config configs/sandbox/rm.yaml
	$(PY) train.py fit --config configs/sandbox/sft.yaml
	@echo "Done. Models in runs/sandbox/{rm,sft}/hf; curves: tensorboard --logdir runs/sandbox"

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not gpu"

test-all: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs
