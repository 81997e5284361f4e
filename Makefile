# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   set up, then run the main job (the ALMoST pipeline on the sandbox world)
#   make test   set up, then run the default test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
FIXTURES := tests/fixtures
TOKENIZER := runs/fixture/tokenizer/tokenizer.json

.PHONY: demo demo-self-rewarding test test-all install clean fixture-tokenizer

$(INSTALLED): setup.cfg pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e ".[dev]"
	touch $@

install: $(INSTALLED)

# The tokenizer of configs/fixture/*.yaml (a quick look at one stage on hand-written data).
fixture-tokenizer: $(TOKENIZER)
$(TOKENIZER): $(INSTALLED) $(FIXTURES)/comparisons.jsonl $(FIXTURES)/demonstrations.jsonl
	$(PY) -m almost.tokenizer --input $(FIXTURES)/comparisons.jsonl $(FIXTURES)/demonstrations.jsonl \
		--output $(dir $@) --vocab-size 400

# The whole ALMoST pipeline on the sandbox world (src/almost/sandbox/pipeline.py): every stage skips
# itself when its outputs are newer than its inputs; `make clean` (or --force) for a fresh run.
demo: $(INSTALLED)
	$(PY) -m almost.sandbox.pipeline
	@echo "Done. Report: runs/sandbox/report.md; curves: tensorboard --logdir runs/sandbox"

# After `make demo`: the self-rewarding loop (M1 -> M2 -> M3), DPO and RAFT on its outputs, resumable the same way
# (src/almost/sandbox/self_rewarding.py), ending with runs/sandbox/self_rewarding/report.md.
demo-self-rewarding: $(INSTALLED)
	$(PY) -m almost.sandbox.self_rewarding
	@echo "Done. Report: runs/sandbox/self_rewarding/report.md"

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not gpu"

test-all: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs
