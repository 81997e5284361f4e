"""Best-of-N SFT data (RAFT): BestOfNJob through `train.py predict` on a tiny random policy, and its configs."""

import json
from dataclasses import replace

import pytest
import yaml

from almost.chat import ChatTemplate, encode_prompt
from almost.generation import SamplingConfig, generate
from almost.models import ModelSource, build_causal_lm, load_tokenizer
from almost.records import Demonstration, Turn, load_jsonl
from almost.scorers import Scorer
from tests.test_jobs import QUESTIONS, inputs, models, predict, queries_data  # noqa: F401 (fixtures)


class LengthScorer(Scorer):
    """Scores an answer by its number of characters mod 7; answers of a length divisible by 3 are not judged."""

    def score(self, prompts, responses):
        return [None if len(r) % 3 == 0 else float(len(r) % 7) for r in responses]


class NoScorer(Scorer):
    def score(self, prompts, responses):
        return [None] * len(responses)


def length_score(text: str) -> float | None:
    return None if len(text) % 3 == 0 else float(len(text) % 7)


SAMPLING = {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0}


def raft_job(models, output, scorer: str = "tests.test_raft.LengthScorer", n_samples: int = 3) -> dict:
    return {"class_path": "lit_models.jobs.BestOfNJob",
            "init_args": {"policy": models["lm"], "scorer": {"class_path": scorer}, "n_samples": n_samples,
                          "output": str(output), "sampling": SAMPLING}}


def shard_rows(directory) -> list[dict]:
    return sorted((json.loads(line) for p in directory.glob("*.jsonl") for line in p.read_text().splitlines()),
                  key=lambda row: row["index"])


def test_best_of_n_keeps_the_best_judged_answer_and_never_an_unjudged_one(models, inputs, tmp_path):
    predict(tmp_path, raft_job(models, tmp_path / "raft.jsonl"), queries_data(inputs, batch_size=4))
    rows = shard_rows(tmp_path / "raft.jsonl.shards")
    assert [row["index"] for row in rows] == list(range(len(QUESTIONS) * 2))
    demos = iter(load_jsonl(tmp_path / "raft.jsonl", Demonstration))
    kept, all_scores, without = [], [], 0
    for row in rows:
        assert len(row["samples"]) == 3
        assert row["scores"] == [length_score(a) if a.strip() else None for a in row["samples"]]  # rescored here
        judged = [(s, i) for i, s in enumerate(row["scores"]) if s is not None]
        if not judged:
            without += 1
            continue
        best = max(judged, key=lambda pair: (pair[0], -pair[1]))[1]  # the first of the highest
        demo = next(demos)
        assert demo.messages == (Turn("user", row["prompt"]), Turn("assistant", row["samples"][best]))
        assert demo.meta["score"] == row["scores"][best] and demo.meta["n"] == row["index"]
        kept.append(row["scores"][best])
        all_scores += [s for s, _ in judged]
    assert next(demos, None) is None
    stats = json.loads((tmp_path / "raft.stats.json").read_text())
    assert stats["demonstrations"] == len(kept) and stats["queries_without_judged_answer"] == without
    assert stats["score_kept"]["mean"] == pytest.approx(sum(kept) / len(kept))
    assert stats["score_all_samples"]["mean"] == pytest.approx(sum(all_scores) / len(all_scores))
    assert stats["score_kept"]["mean"] >= stats["score_all_samples"]["mean"]


def test_answers_are_zero_shot_in_the_policys_chat_template(models, inputs, tmp_path):
    predict(tmp_path, raft_job(models, tmp_path / "raft.jsonl"), queries_data(inputs, batch_size=4))
    rows = shard_rows(tmp_path / "raft.jsonl.shards")
    tokenizer = load_tokenizer(ModelSource(path=models["lm"]))
    model = build_causal_lm(ModelSource(path=models["lm"]), tokenizer)
    prompts = [encode_prompt(tokenizer, ChatTemplate(), [Turn("user", q)]) for q in QUESTIONS[:4] for _ in range(3)]
    sampling = replace(SamplingConfig(**SAMPLING), stop_strings=("\nUser:",))
    expected = [g.text for g in generate(model, tokenizer, prompts, sampling, batch_size=12, seed=0)]  # batch 0
    assert [a for row in rows[:4] for a in row["samples"]] == expected


def test_no_judged_answer_gives_no_demonstration(models, inputs, tmp_path):
    predict(tmp_path, raft_job(models, tmp_path / "raft.jsonl", scorer="tests.test_raft.NoScorer"),
            queries_data(inputs))
    assert (tmp_path / "raft.jsonl").read_text() == ""
    stats = json.loads((tmp_path / "raft.stats.json").read_text())
    assert stats["demonstrations"] == 0 and stats["unjudged_answers"] == 3 * len(QUESTIONS) * 2
    assert stats["score_kept"] == {"mean": None, "std": None, "n": 0}


def test_an_interrupted_best_of_n_job_resumes_to_the_same_output(models, inputs, tmp_path):
    predict(tmp_path, raft_job(models, tmp_path / "a/raft.jsonl"), queries_data(inputs))
    predict(tmp_path, raft_job(models, tmp_path / "b/raft.jsonl"), queries_data(inputs),
            "--trainer.limit_predict_batches=2")
    predict(tmp_path, raft_job(models, tmp_path / "b/raft.jsonl"), queries_data(inputs))
    assert (tmp_path / "a/raft.jsonl").read_text() == (tmp_path / "b/raft.jsonl").read_text()


def test_a_directory_is_read_as_a_reward_model(models, inputs, tmp_path):
    from almost.scorers import RewardModelScorer
    from lit_models.jobs import BestOfNJob

    job = BestOfNJob(models["lm"], models["rm"], str(tmp_path / "raft.jsonl"), n_samples=2)
    assert isinstance(job.scorer, RewardModelScorer) and job.scorer.path == models["rm"]
    with pytest.raises(ValueError, match="n_samples must be at least 1"):
        BestOfNJob(models["lm"], models["rm"], str(tmp_path / "raft.jsonl"), n_samples=0)


def test_sft_raft_config_is_sft_rmsp_on_the_raft_demonstrations(capsys):
    from tests.test_configs import resolved_config

    raft, rmsp = (resolved_config(capsys, "--config", f"configs/sandbox/{name}.yaml") for name in ("sft_raft", "sft_rmsp"))
    assert raft["data"]["init_args"]["path"] == "runs/sandbox/data/raft.jsonl"
    assert raft["model"]["init_args"]["source"]["path"] == "runs/sandbox/sft_rmsp/hf"  # RAFT refines the SFT policy
    for key in ("lr", "weight_decay", "warmup_ratio"):
        assert raft["model"]["init_args"][key] == rmsp["model"]["init_args"][key]
    assert raft["trainer"]["max_epochs"] == rmsp["trainer"]["max_epochs"]
    job = yaml.safe_load(open("configs/sandbox/raft.yaml"))["model"]["init_args"]
    assert job["policy"] == "runs/sandbox/sft_rmsp/hf" and job["output"] == raft["data"]["init_args"]["path"]
