"""The evaluation commands (lit_models.evaluation, data_modules.evaluation, configs/eval) on tiny models.

Scores are checked against rigged models (a reward that counts tokens, an LM that always prefers "A") and
against independent float64 computations with the model's logits; two commands run through train.py.
"""

import json
import math
import os
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from torch import nn
from torch.utils.data import DistributedSampler

import train
from almost.evaluation import ABExample, MCQuestion, write_hhh, write_truthfulqa_mc
from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from almost.records import CorpusDocument, Prompt, RecordError, write_jsonl
from almost.sandbox.world import World
from almost.scorers import RewardModelScorer
from data_modules.evaluation import (HHHDataModule, HHRLHFDataModule, InstructionDataModule, TextDataModule,
                                     TruthfulQADataModule)
from lit_models.evaluation import (HHHEvaluation, PerplexityEvaluation, RewardAccuracyEvaluation, TruthfulQAEvaluation,
                                   WinRateEvaluation)
from lit_models.evaluation.base import unique_by_index
from lit_models.evaluation.truthfulqa import P_TRUE_PROMPT
from tests.conftest import TINY_ARCH, write_lines

ROOT = Path(__file__).parent.parent
VICUNA = ROOT.parent / "shared" / "data" / "vicuna" / "question.jsonl"
EVAL_CONFIGS = sorted(p for p in (ROOT / "configs" / "eval").glob("*.yaml") if p.name != "base.yaml")
RESULTS_KEYS = {"task", "metrics", "n_examples", "models", "data", "config", "skipped"}


# ------------------------------------------------------------------------------------------ helpers


def run_test(module: L.LightningModule, data: L.LightningDataModule, tmp_path: Path) -> dict[str, float]:
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path))
    return trainer.test(module, data, verbose=False)[0]


def read_results(out_dir: Path) -> tuple[dict, list[dict]]:
    """results.json and the rows file of an evaluation."""
    results = json.loads((out_dir / "results.json").read_text())
    rows_file = "answers.jsonl" if results["task"] == "winrate" else "examples.jsonl"
    rows = [json.loads(line) for line in (out_dir / rows_file).read_text().splitlines()]
    assert (out_dir / "results.md").read_text().startswith(f"# {results['task']}")
    return results, rows


def fresh(tokenizer_dir: str) -> ModelSource:
    return ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)


def save_lm(tokenizer_dir: str, directory: Path, seed: int) -> str:
    torch.manual_seed(seed)
    tokenizer = load_tokenizer(fresh(tokenizer_dir))
    build_causal_lm(fresh(tokenizer_dir), tokenizer).save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    return str(directory)


@pytest.fixture(scope="module")
def lm_dirs(tokenizer_dir, tmp_path_factory) -> tuple[str, str]:
    """Two tiny causal LMs with different random weights, saved with the tokenizer."""
    root = tmp_path_factory.mktemp("lms")
    return save_lm(tokenizer_dir, root / "x", seed=1), save_lm(tokenizer_dir, root / "y", seed=2)


@pytest.fixture(scope="module")
def rm_dir(tokenizer_dir, tmp_path_factory) -> str:
    torch.manual_seed(3)
    directory = tmp_path_factory.mktemp("rm")
    tokenizer = load_tokenizer(fresh(tokenizer_dir))
    RewardModel.build(fresh(tokenizer_dir), tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(str(directory))
    return str(directory)


class LengthReward(nn.Module):
    """A reward model rigged to prefer longer sequences (``sign=1``) or shorter ones (``sign=-1``):
    the reward is ``sign`` times the number of real tokens."""

    def __init__(self, sign: float = 1.0) -> None:
        super().__init__()
        self.sign = nn.Parameter(torch.tensor(sign), requires_grad=False)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        return self.sign * attention_mask.sum(-1).float()


class ConstantLM(nn.Module):
    """A causal LM whose next-token distribution ignores the input and strongly favours one token."""

    def __init__(self, vocab_size: int, favourite: int) -> None:
        super().__init__()
        self.logits = nn.Parameter(torch.zeros(vocab_size), requires_grad=False)
        self.logits.data[favourite] = 5.0

    def forward(self, input_ids: torch.Tensor, attention_mask=None, use_cache=False) -> SimpleNamespace:
        return SimpleNamespace(logits=self.logits.expand(*input_ids.shape, -1))


def rigged(module_class, net: nn.Module):
    """``module_class`` whose ``build_networks`` installs ``net`` instead of loading a model."""
    def build_networks(self) -> None:
        self.net = net

    return type(f"Rigged{module_class.__name__}", (module_class,), {"build_networks": build_networks})


def encode(tokenizer, text: str) -> list[int]:
    return tokenizer(text, add_special_tokens=False)["input_ids"]


def reference_logprob(model64: nn.Module, prompt: list[int], continuation: list[int]) -> float:
    """log p(continuation | prompt) in float64, from one unpadded forward pass."""
    ids = torch.tensor([prompt + continuation])
    logprobs = model64(input_ids=ids).logits[0].log_softmax(-1)  # (T, V)
    return sum(logprobs[len(prompt) + t - 1, token].item() for t, token in enumerate(continuation))


# ------------------------------------------------------------------------------------------ HHH A/B


def hhh_files(tmp_path: Path) -> list[str]:
    """Two subsets of 3 pairs: the better response is the longer one in the first, the shorter in the second."""
    short, long = "No.", "Happy to help: put the egg in boiling water for eight minutes, then cool it."
    queries = ["How do I boil an egg?", "What is 2 plus 3?", "Where is Veloria?"]
    longer = [ABExample(q, long, short) for q in queries]
    shorter = [ABExample(q, short, long) for q in queries]
    write_hhh(tmp_path / "longer_better.json", longer)
    write_hhh(tmp_path / "shorter_better.json", shorter)
    return [str(tmp_path / "longer_better.json"), str(tmp_path / "shorter_better.json")]


def test_hhh_reward_method_follows_a_length_rigged_reward_model(tokenizer_dir, tmp_path):
    module = rigged(HHHEvaluation, LengthReward())(fresh(tokenizer_dir), str(tmp_path / "out"), method="reward")
    metrics = run_test(module, HHHDataModule(hhh_files(tmp_path), batch_size=2), tmp_path)
    assert metrics["eval/longer_better/accuracy"] == 1.0
    assert metrics["eval/shorter_better/accuracy"] == 0.0
    assert metrics["eval/accuracy"] == 0.5 and metrics["eval/longer_better/n_examples"] == 3
    results, rows = read_results(tmp_path / "out")
    assert set(results) == RESULTS_KEYS and results["task"] == "hhh" and results["n_examples"] == 6
    assert set(results["metrics"]) == {"accuracy", "n_examples", "longer_better/accuracy", "longer_better/n_examples",
                                       "shorter_better/accuracy", "shorter_better/n_examples"}
    assert [d["path"] for d in results["data"]] == hhh_files(tmp_path) and len(results["data"][0]["sha256"]) == 64
    assert results["config"]["method"] == "reward"
    assert [r["index"] for r in rows] == list(range(6))
    assert [r["subset"] for r in rows] == ["longer_better"] * 3 + ["shorter_better"] * 3
    assert all(r["better"] > r["worse"] for r in rows[:3]) and all(r["better"] < r["worse"] for r in rows[3:])


def test_hhh_ab_prompt_averages_out_a_model_that_always_says_a(tokenizer_dir, tokenizer, tmp_path):
    net = ConstantLM(len(tokenizer), favourite=encode(tokenizer, "A")[-1])  # "A" may be "▁" + "A": favour the letter
    module = rigged(HHHEvaluation, net)(fresh(tokenizer_dir), str(tmp_path / "out"), method="ab_prompt")
    metrics = run_test(module, HHHDataModule(hhh_files(tmp_path), batch_size=4), tmp_path)
    _, rows = read_results(tmp_path / "out")
    for row in rows:  # the model prefers "A" in both orders ...
        assert row["better_as_a"][0] > row["better_as_a"][1] and row["better_as_b"][0] > row["better_as_b"][1]
    # ... so averaging the two orders leaves no preference: every example is a tie
    assert metrics["eval/accuracy"] == 0.5 and abs(metrics["eval/p_better"] - 0.5) < 1e-6


def test_hhh_likelihood_prefers_the_response_the_model_finds_likelier(tokenizer_dir, tokenizer, tmp_path):
    # the constant model gives every token the same log-prob, so the shorter text is the likelier one
    net = ConstantLM(len(tokenizer), favourite=0)
    module = rigged(HHHEvaluation, net)(fresh(tokenizer_dir), str(tmp_path / "out"), method="likelihood")
    metrics = run_test(module, HHHDataModule(hhh_files(tmp_path), batch_size=4), tmp_path)
    assert metrics["eval/longer_better/accuracy"] == 0.0 and metrics["eval/shorter_better/accuracy"] == 1.0


# ------------------------------------------------------------------------------------------ TruthfulQA


MC_QUESTIONS = [
    MCQuestion("What is the capital of Veloria?", {"Marnstad.": 1, "Esterly.": 0, "Trisk.": 0},
               {"Marnstad.": 1, "It is Marnstad.": 1, "Esterly.": 0, "Trisk.": 0}),
    MCQuestion("How many legs does a spider have?", {"Eight.": 1, "Six.": 0},
               {"Eight.": 1, "Six.": 0, "Ten legs.": 0}),
]


def reference_scores(model64: nn.Module, tokenizer, question: str, answers: list[str], method: str) -> dict[str, float]:
    """Each answer's score, computed from the chat layout ``<s> User: {q}\\nAssistant:`` written out by hand."""
    bos = tokenizer.bos_token_id
    scores = {}
    for answer in answers:
        if method == "likelihood":
            prompt = [bos] + encode(tokenizer, f"User: {question}\nAssistant:")
            scores[answer] = reference_logprob(model64, prompt, encode(tokenizer, answer))
        else:
            asked = P_TRUE_PROMPT.format(question=question, answer=answer)
            prompt = [bos] + encode(tokenizer, f"User: {asked}\nAssistant:")
            lp_true = reference_logprob(model64, prompt, encode(tokenizer, "True"))
            lp_false = reference_logprob(model64, prompt, encode(tokenizer, "False"))
            scores[answer] = lp_true - math.log(math.exp(lp_true) + math.exp(lp_false))
    return scores


@pytest.mark.parametrize("method", ["likelihood", "p_true"])
def test_truthfulqa_mc1_mc2_match_a_float64_computation(method, tokenizer_dir, tokenizer, tmp_path):
    write_truthfulqa_mc(tmp_path / "mc_task.json", MC_QUESTIONS)
    L.seed_everything(0)
    module = TruthfulQAEvaluation(fresh(tokenizer_dir), str(tmp_path / "out"), method=method)
    metrics = run_test(module, TruthfulQADataModule(str(tmp_path / "mc_task.json"), batch_size=2), tmp_path)
    _, rows = read_results(tmp_path / "out")

    model64 = module.net.double().eval()
    expected_mc1, expected_mc2 = [], []
    with torch.no_grad():
        for q in MC_QUESTIONS:
            scores = reference_scores(model64, tokenizer, q.question, list(dict.fromkeys([*q.mc1, *q.mc2])), method)
            best_false = max(scores[a] for a, y in q.mc1.items() if y == 0)
            expected_mc1.append(float(scores[next(a for a, y in q.mc1.items() if y == 1)] > best_false))
            mass = {a: math.exp(scores[a]) for a in q.mc2}
            expected_mc2.append(sum(m for a, m in mass.items() if q.mc2[a] == 1) / sum(mass.values()))
    for row, mc1, mc2 in zip(rows, expected_mc1, expected_mc2):
        assert row["mc1"] == mc1 and abs(row["mc2"] - mc2) < 1e-4, (row, mc1, mc2)
    assert abs(metrics["eval/mc1"] - sum(expected_mc1) / 2) < 1e-9
    assert abs(metrics["eval/mc2"] - sum(expected_mc2) / 2) < 1e-4
    assert metrics["eval/n_questions"] == 2


# ------------------------------------------------------------------------------------------ RM accuracy


def hh(*turns: str) -> str:
    """An HH-RLHF transcript from alternating Human / Assistant turns."""
    return "".join(f"\n\n{'Human' if i % 2 == 0 else 'Assistant'}: {t}" for i, t in enumerate(turns))


LONG = "Happy to help. The capital of Veloria is Marnstad, a town by the river."
HH_PAIRS = [  # the chosen response is longer in three pairs of four; the last pair's transcripts differ before
    # their last turn, so its responses hold two turns each (almost.evaluation.split_hh_pair)
    {"chosen": hh("Hi", "Hello!", "Capital of Veloria?", LONG),
     "rejected": hh("Hi", "Hello!", "Capital of Veloria?", "No.")},
    {"chosen": hh("What is 2 plus 3?", LONG), "rejected": hh("What is 2 plus 3?", "5")},
    {"chosen": hh("Tell me a secret.", "No."), "rejected": hh("Tell me a secret.", LONG)},
    {"chosen": hh("Hi", "Hello!", "Where is Trisk?", LONG), "rejected": hh("Hi", "Hey.", "Where is Trisk?", "Far.")},
]


@pytest.mark.parametrize("sign, accuracy", [(1.0, 0.75), (-1.0, 0.25)])
def test_rm_accuracy_and_longer_wins_baseline(sign, accuracy, tokenizer_dir, tmp_path):
    path = write_lines(tmp_path / "hh.jsonl", HH_PAIRS)
    module = rigged(RewardAccuracyEvaluation, LengthReward(sign))(fresh(tokenizer_dir), str(tmp_path / "out"))
    metrics = run_test(module, HHRLHFDataModule(str(path), batch_size=3), tmp_path)
    assert metrics["eval/accuracy"] == accuracy
    assert metrics["eval/longer_wins_accuracy"] == 0.75  # the baseline does not depend on the reward model
    assert metrics["eval/n_pairs"] == 4 and metrics["eval/n_multi_turn"] == 1 and metrics["eval/truncated"] == 0
    results, rows = read_results(tmp_path / "out")
    assert set(results["metrics"]) == {"accuracy", "longer_wins_accuracy", "mean_margin", "n_pairs",
                                       "n_multi_turn", "truncated", "sequence_limit"}
    assert [r["multi_turn"] for r in rows] == [False, False, False, True]


def test_rm_accuracy_skips_unusable_pairs_and_cuts_to_the_position_limit(tokenizer_dir, tokenizer, tmp_path):
    """Public HH-RLHF files hold pairs that cannot be scored: they are counted and left out of every metric, the
    longer-wins baseline included. A prompt longer than the reward model's 256 positions is cut from the left."""
    long_prompt = "What is the capital of Veloria? " * 60
    assert len(encode(tokenizer, long_prompt)) > 256  # TINY_ARCH's max_position_embeddings
    lines = [
        {"chosen": hh("What is 2 plus 3?", LONG), "rejected": hh("What is 2 plus 3?", "5")},
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "Hello!")},  # identical
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hi", "")},  # an empty response
        {"chosen": hh("Hi", "Hello!"), "rejected": hh("Hey", "Hello!")},  # no shared Assistant turn
        {"chosen": hh(long_prompt, "No."), "rejected": hh(long_prompt, LONG)},
    ]
    path = write_lines(tmp_path / "hh.jsonl", lines)
    module = RewardAccuracyEvaluation(fresh(tokenizer_dir), str(tmp_path / "out"), max_length=1024)
    with pytest.warns(UserWarning, match="max_length=1024 is more than the reward model's max_position_embeddings"):
        metrics = run_test(module, HHRLHFDataModule(str(path), batch_size=2), tmp_path)
    assert metrics["eval/n_pairs"] == 2 and metrics["eval/longer_wins_accuracy"] == 0.5
    assert metrics["eval/sequence_limit"] == 256 and metrics["eval/truncated"] == 2
    assert (metrics["eval/skipped_identical_responses"], metrics["eval/skipped_empty_response"],
            metrics["eval/skipped_no_common_assistant_turn"]) == (1, 1, 1)
    _, rows = read_results(tmp_path / "out")
    assert [r["index"] for r in rows] == [0, 4] and [r["truncated"] for r in rows] == [0, 2]


def test_truthfulqa_and_hhh_count_skipped_items(tokenizer_dir, tmp_path):
    questions = [q.to_dict() for q in MC_QUESTIONS] + [{**MC_QUESTIONS[0].to_dict(), "mc2_targets": {"Marnstad.": 1}}]
    (tmp_path / "mc_task.json").write_text(json.dumps(questions))
    module = TruthfulQAEvaluation(fresh(tokenizer_dir), str(tmp_path / "tqa"))
    metrics = run_test(module, TruthfulQADataModule(str(tmp_path / "mc_task.json"), batch_size=2), tmp_path)
    assert metrics["eval/n_questions"] == 2 and metrics["eval/skipped_no_false_answer"] == 1
    examples = [{"input": "q", "target_scores": {"Yes, gladly.": 1, "No.": 0}}, {"input": "q", "target_scores": {}}]
    (tmp_path / "hhh_one.json").write_text(json.dumps({"examples": examples}))
    module = HHHEvaluation(fresh(tokenizer_dir), str(tmp_path / "hhh"), method="likelihood")
    metrics = run_test(module, HHHDataModule([str(tmp_path / "hhh_one.json")]), tmp_path)
    assert metrics["eval/n_examples"] == 1 and metrics["eval/skipped_not_two_responses"] == 1


# ------------------------------------------------------------------------------------------ perplexity


def test_perplexity_matches_a_float64_computation_and_the_window_engages(tokenizer_dir, tokenizer, tmp_path):
    texts = ["The capital of Veloria is Marnstad.", "User: What is 2 plus 3?\nAssistant: 2 plus 3 is 5."]
    path = tmp_path / "heldout.jsonl"
    write_jsonl(path, [CorpusDocument(t) for t in texts])
    results = {}
    for window, stride in ((64, 32), (4, 2)):
        L.seed_everything(0)
        module = PerplexityEvaluation(fresh(tokenizer_dir), str(tmp_path / f"w{window}"), window=window, stride=stride)
        results[window] = run_test(module, TextDataModule(str(path), batch_size=2), tmp_path)

    model64 = module.net.double().eval()  # same seed, same weights as both runs
    total, n_tokens = 0.0, 0
    with torch.no_grad():
        for text in texts:
            ids = [tokenizer.bos_token_id, *encode(tokenizer, text), tokenizer.eos_token_id]
            assert len(ids) <= 64  # the whole document fits in the first window
            total -= reference_logprob(model64, ids[:1], ids[1:])
            n_tokens += len(ids) - 1
    assert results[64]["eval/n_tokens"] == results[4]["eval/n_tokens"] == n_tokens
    assert abs(results[64]["eval/perplexity"] - math.exp(total / n_tokens)) < 1e-3 * math.exp(total / n_tokens)
    # with 2 to 3 tokens of context the same model scores the text differently
    assert abs(results[4]["eval/perplexity"] - results[64]["eval/perplexity"]) > 1e-3


# ------------------------------------------------------------------------------------------ win rates


def test_winrate_end_to_end_through_train_py(lm_dirs, rm_dir, tmp_path):
    (tmp_path / "world").mkdir()
    (tmp_path / "world" / "world.json").write_text(json.dumps({"world_seed": 0, "n_entities": 20}))
    queries = World(seed=0, n_entities=20).sample_queries(2, seed=1, split="heldout")
    write_jsonl(tmp_path / "queries.jsonl", [Prompt(q.text) for q in queries])
    x, y = lm_dirs
    out = tmp_path / "out"
    train.main(["test", "--config", "configs/eval/winrate.yaml", f"--model.init_args.source.path={x}",
                f"--model.init_args.model_y={y}",
                "--model.init_args.scorers=" + json.dumps({
                    "reward_model": {"class_path": "almost.scorers.RewardModelScorer", "init_args": {"path": rm_dir}},
                    "judge": {"class_path": "almost.scorers.JudgeScorer",
                              "init_args": {"path": x, "max_new_tokens": 6}},
                    "oracle": {"class_path": "almost.sandbox.scorer.OracleScorer",
                               "init_args": {"world": str(tmp_path / "world")}}}),
                "--model.init_args.max_new_tokens=6",
                f"--model.init_args.out_dir={out}", f"--data.init_args.path={tmp_path / 'queries.jsonl'}",
                "--data.init_args.batch_size=2", f"--trainer.logger.init_args.save_dir={tmp_path / 'tb'}",
                "--trainer.enable_progress_bar=false"])
    results, rows = read_results(out)
    assert set(results) == RESULTS_KEYS and results["models"] == {"x": x, "y": y, "reward_model": rm_dir, "judge": x,
                                                                  "oracle": str(tmp_path / "world")}
    assert [r["question"] for r in rows] == [q.text for q in queries] and [r["index"] for r in rows] == [0, 1]
    metrics = results["metrics"]
    for judge in ("reward_model", "judge", "oracle"):
        assert metrics[f"{judge}/win"] + metrics[f"{judge}/tie"] + metrics[f"{judge}/loss"] == metrics[f"{judge}/n"]
    assert metrics["reward_model/n"] == metrics["oracle/n"] == 2
    assert all(0.0 <= r[f"oracle_{side}"] <= 1.0 for r in rows for side in "xy")
    # a random judge writes no "Score: n" line: every output is unparseable, no question is judged
    assert metrics["judge/unparseable"] == 4 and metrics["judge/unparseable_rate"] == 1.0 and metrics["judge/n"] == 0
    assert all(r["judge_x"] is None and isinstance(r["judge_output_x"], str) for r in rows)
    assert list((tmp_path / "tb" / "winrate").rglob("events.out.tfevents.*")), "TensorBoard events"


@pytest.mark.skipif(not VICUNA.is_file(), reason=f"Vicuna questions not found at {VICUNA} (../shared/data absent)")
def test_winrate_on_vicuna_questions_with_a_reward_model(lm_dirs, rm_dir, tmp_path):
    data = InstructionDataModule(str(VICUNA), batch_size=2)
    data.setup("test")
    assert len(data.items) == 80 and data.items[0].record.id == "1"
    x, y = lm_dirs
    module = WinRateEvaluation(ModelSource(path=x), str(tmp_path / "out"), model_y=y,
                               scorers={"reward_model": RewardModelScorer(rm_dir)}, max_new_tokens=4)
    trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                        enable_model_summary=False, default_root_dir=str(tmp_path), limit_test_batches=1)
    metrics = trainer.test(module, data, verbose=False)[0]
    assert metrics["eval/n_questions"] == 2 and metrics["eval/reward_model/n"] == 2
    assert "eval/judge/n" not in metrics and "eval/oracle/n" not in metrics


def test_winrate_prompts_y_few_shot_as_a_vanilla_lm(lm_dirs, rm_dir, tmp_path, monkeypatch):
    from almost.generation import Generation
    from almost.prompting import FewShotPrompter, text_prompt_ids
    from lit_models.evaluation import winrate

    x, y = lm_dirs
    prompter = FewShotPrompter({"hhh": "prompts/en/hhh.jsonl"})
    with pytest.raises(ValueError, match="y_prompt and prompter go together"):
        WinRateEvaluation(ModelSource(path=x), str(tmp_path), model_y=y, scorers={"rm": RewardModelScorer(rm_dir)},
                          y_prompt="hhh-2shot")
    module = WinRateEvaluation(ModelSource(path=x), str(tmp_path / "out"), model_y=y, y_prompt="hhh-2shot",
                               prompter=prompter, scorers={"rm": RewardModelScorer(rm_dir)}, max_new_tokens=3,
                               share_prefix=True)
    module.configure_model()
    seen = []  # (model, prompt ids, stop strings) of each generate call

    def fake_generate(model, tokenizer, prompts, sampling, batch_size, seed):
        assert sampling.share_prefix  # both sides share their prompts' common beginning when asked
        seen.append((model, [list(p) for p in prompts], sampling.stop_strings))
        return [Generation("an answer", (5,), True) for _ in prompts]

    monkeypatch.setattr(winrate, "generate", fake_generate)
    questions = ["What is the capital of France?", "How do I boil an egg?"]
    module.evaluate_batch([SimpleNamespace(index=i, record=SimpleNamespace(id=str(i), text=q))
                           for i, q in enumerate(questions)])
    (model_x, ids_x, stop_x), (model_y, ids_y, stop_y) = seen
    assert model_x is module.policy_x and model_y is module.policy_y
    tokenizer = module.tokenizers["y"]
    demos = prompter.demonstrations("hhh", 2, avoid=[])
    expected = ["\n".join([f"User: {d[0][0]}\nAssistant: {d[0][1]}" for d in demos] + [f"User: {q}\nAssistant:"])
                for q in questions]
    assert ids_y == [text_prompt_ids(tokenizer, text) for text in expected]  # Y: two demonstrations, then the question
    assert ids_x != ids_y and stop_y == prompter.stop_strings("assistant")
    assert module.models()["y"] == f"{y} prompted hhh-2shot"


# ------------------------------------------------------------------------------------------ data, configs, processes


def test_data_modules_name_the_file_of_a_bad_record(tmp_path):
    good = {"input": "q", "target_scores": {"a": 1, "b": 0}}
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({"examples": [good, {"input": "q", "target_scores": {"a": 1}}]}))
    data = HHHDataModule([str(bad)])
    data.setup("test")  # an unusable benchmark example is skipped, named by file and index
    assert [item.index for item in data.items] == [0]
    assert [(s.index, s.reason, s.where) for s in data.skipped] == [(1, "not_two_responses", f"{bad}: examples[1]")]
    with pytest.raises(ValueError, match=rf"^{tmp_path / 'b' / 'bad.json'}: same name 'bad' as {bad};"):
        HHHDataModule([str(bad), str(tmp_path / "b" / "bad.json")])
    unknown = write_lines(tmp_path / "questions.jsonl", [{"question": "hi"}])
    with pytest.raises(RecordError, match=rf"^{unknown}:1: neither a Vicuna question"):
        InstructionDataModule(str(unknown)).setup("test")
    broken_prompt = write_lines(tmp_path / "prompts.jsonl", [{"prompt": "hi"}, {"prompt": ""}])
    with pytest.raises(RecordError, match=rf"^{broken_prompt}:2: Prompt: field 'prompt' is empty"):
        InstructionDataModule(str(broken_prompt)).setup("test")


def test_rows_of_padded_distributed_batches_are_deduplicated_in_data_order():
    # the test sampler pads 5 examples over 2 processes to 3 + 3: example 0 is scored twice
    per_rank = [list(DistributedSampler(range(5), num_replicas=2, rank=r, shuffle=False)) for r in range(2)]
    assert sorted(i for indices in per_rank for i in indices) == [0, 0, 1, 2, 3, 4]
    gathered = [{"index": i, "rank": r} for r, indices in enumerate(per_rank) for i in indices]
    assert [row["index"] for row in unique_by_index(gathered)] == [0, 1, 2, 3, 4]


@pytest.mark.parametrize("config", EVAL_CONFIGS, ids=lambda p: p.name)
def test_eval_config_parses(config, capsys):
    with pytest.raises(SystemExit) as exit_:
        train.main(["test", "--config", str(config), "--print_config"])
    assert exit_.value.code in (0, None)
    resolved = yaml.safe_load(capsys.readouterr().out)
    assert resolved["model"]["class_path"].startswith("lit_models.evaluation.")
    assert resolved["data"]["class_path"].startswith("data_modules.evaluation.")
    assert resolved["model"]["init_args"]["out_dir"].startswith("runs/sandbox/eval/")
    assert resolved["trainer"]["logger"]["init_args"]["name"] == config.stem


@pytest.mark.slow
def test_two_processes_give_the_single_process_results(tokenizer_dir, lm_dirs, tmp_path):
    """DDP on 2 CPU processes, 5 documents (the sampler repeats one): same rows and perplexity as one process."""
    path = tmp_path / "heldout.jsonl"
    write_jsonl(path, [CorpusDocument(f"Document {i}: the capital of Veloria is Marnstad.") for i in range(5)])
    results = {}
    for devices in ("1", "2"):
        out = tmp_path / f"devices{devices}"
        args = [sys.executable, "train.py", "test", "--config", "configs/eval/perplexity.yaml",
                f"--model.init_args.source.path={lm_dirs[0]}", f"--model.init_args.out_dir={out}",
                f"--data.init_args.path={path}", "--data.init_args.batch_size=2", "--trainer.logger=false",
                "--trainer.strategy=ddp" if devices == "2" else "--trainer.strategy=auto",
                f"--trainer.devices={devices}",
                "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"]
        result = subprocess.run(args, cwd=ROOT, env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                                text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        results[devices] = read_results(out)
    (one, rows_one), (two, rows_two) = results["1"], results["2"]
    assert [r["index"] for r in rows_two] == [0, 1, 2, 3, 4] and two["n_examples"] == 5
    assert two["metrics"]["n_tokens"] == one["metrics"]["n_tokens"]
    assert abs(two["metrics"]["perplexity"] - one["metrics"]["perplexity"]) < 1e-6 * one["metrics"]["perplexity"]
