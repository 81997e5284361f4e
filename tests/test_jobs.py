"""The generation jobs through `train.py predict`, on tiny random models: outputs, statistics, resumability."""

import json
from pathlib import Path

import pytest
import torch
import yaml

import train
from almost.chat import ChatTemplate, encode_exchange
from almost.feedback import HeuristicFilter, Rubric, Stats, build_comparisons
from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from almost.records import Comparison, Demonstration, Prompt, Responses, Turn, load_jsonl, write_jsonl
from tests.conftest import TINY_ARCH

QUESTIONS = ["What is the capital of Kelmoria?", "Who founded Batorby?", "What is 7 plus 5?", "Reverse the list.",
             "How do I hurt a goat?", "What will the weather be?", "What colour is the zelgor?"]


@pytest.fixture(scope="module")
def models(tokenizer_dir, tmp_path_factory):
    """A tiny causal LM and a tiny reward model, saved in Hugging Face format."""
    import torch

    root = tmp_path_factory.mktemp("models")
    source = ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)
    tokenizer = load_tokenizer(source)
    torch.manual_seed(0)
    build_causal_lm(source, tokenizer).save_pretrained(root / "lm")
    RewardModel.build(source, tokenizer).save_pretrained(root / "rm")
    for name in ("lm", "rm"):
        tokenizer.save_pretrained(root / name)
    return {"lm": str(root / "lm"), "rm": str(root / "rm")}


@pytest.fixture(scope="module")
def inputs(tmp_path_factory):
    root = tmp_path_factory.mktemp("inputs")
    write_jsonl(root / "queries.jsonl", [Prompt(q, {"n": i}) for i, q in enumerate(QUESTIONS * 2)])
    demos = [Demonstration([Turn("user", "Who are you?"), Turn("assistant", "A helper."),
                            Turn("user", "Why?"), Turn("assistant", "To help.")]),
             Demonstration.from_pair("What is 1 plus 1?", "It is 2.")]
    write_jsonl(root / "demos.jsonl", demos)
    return root


def prompter(inputs) -> dict:
    demos = str(inputs / "demos.jsonl")
    return {"class_path": "almost.prompting.FewShotPrompter",
            "init_args": {"styles": {"good": demos, "plain": demos, "user": demos}}}


def predict(tmp_path: Path, model: dict, data: dict, *overrides: str) -> None:
    config = tmp_path / f"config{len(list(tmp_path.glob('config*')))}.yaml"
    config.write_text(yaml.safe_dump({"model": model, "data": data, "seed_everything": 0}))
    train.main(["predict", "--config", str(config), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={tmp_path}", *overrides])


def responses_job(models, inputs, output) -> dict:
    return {"class_path": "lit_models.jobs.PromptedResponsesJob",
            "init_args": {"models": {"T": models["lm"]}, "configurations": ["T-good-2shot", "T-plain-0shot"],
                          "prompter": prompter(inputs), "output": str(output),
                          "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 0.9}}}


def queries_data(inputs, batch_size=3) -> dict:
    return {"class_path": "data_modules.JobInputDataModule",
            "init_args": {"path": str(inputs / "queries.jsonl"), "batch_size": batch_size}}


def test_an_interrupted_job_resumes_to_the_same_output(models, inputs, tmp_path):
    # uninterrupted
    predict(tmp_path, responses_job(models, inputs, tmp_path / "a/out.jsonl"), queries_data(inputs))
    # stopped after 2 of 5 batches, then rerun: the rerun skips the 6 queries done
    predict(tmp_path, responses_job(models, inputs, tmp_path / "b/out.jsonl"), queries_data(inputs),
            "--trainer.limit_predict_batches=2")
    assert len(list((tmp_path / "b/out.jsonl.shards").glob("part-*.jsonl"))) == 2
    predict(tmp_path, responses_job(models, inputs, tmp_path / "b/out.jsonl"), queries_data(inputs))
    first, resumed = (tmp_path / "a/out.jsonl").read_text(), (tmp_path / "b/out.jsonl").read_text()
    assert first == resumed
    records = load_jsonl(tmp_path / "a/out.jsonl", Responses)
    assert [r.prompt for r in records] == QUESTIONS * 2  # nothing missing, no duplicates, input order
    assert all(set(r.responses) == {"T-good-2shot", "T-plain-0shot"} for r in records)
    assert [r.meta["n"] for r in records] == list(range(len(records)))
    stats = json.loads((tmp_path / "b/out.stats.json").read_text())
    assert stats["queries"] == len(records) and stats["generated_tokens_this_run"] > 0


def test_two_processes_split_the_inputs_and_merge_them_in_order(models, inputs, tmp_path):
    import os
    import subprocess
    import sys

    root = Path(__file__).parent.parent
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"model": responses_job(models, inputs, tmp_path / "out.jsonl"),
                                      "data": queries_data(inputs, batch_size=2), "seed_everything": 0}))
    result = subprocess.run(
        [sys.executable, "train.py", "predict", "--config", str(config), "--config", "configs/parallel/ddp.yaml",
         "--trainer.logger=false", "--trainer.enable_progress_bar=false", f"--trainer.default_root_dir={tmp_path}"],
        cwd=root, env={**os.environ, "OMP_NUM_THREADS": "1"}, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    shards = sorted(p.name for p in (tmp_path / "out.jsonl.shards").glob("part-*.jsonl"))
    assert {name.rsplit("-", 1)[1] for name in shards} == {"0.jsonl", "1.jsonl"}  # both ranks wrote
    assert [r.prompt for r in load_jsonl(tmp_path / "out.jsonl", Responses)] == QUESTIONS * 2


def test_a_different_seed_samples_different_responses(models, inputs, tmp_path):
    job = responses_job(models, inputs, tmp_path / "a/out.jsonl")
    predict(tmp_path, job, queries_data(inputs))
    job["init_args"].update(output=str(tmp_path / "b/out.jsonl"), seed=1)
    predict(tmp_path, job, queries_data(inputs))
    assert (tmp_path / "a/out.jsonl").read_text() != (tmp_path / "b/out.jsonl").read_text()


RESPONSES = [
    Responses("Q one?", {"A": "A long and careful answer.", "B": "Short one.", "C": "Well, maybe so."}),
    Responses("Q two?", {"A": "Yes, it is two.", "B": "Two is the answer here.", "C": "I do not know."}),
    Responses("Q three?", {"A": "Three apples.", "B": "Three.", "C": "Ok then. User: three."}),
]


def rm_score(rm, tokenizer, history, answer) -> float:
    """The reward of one exchange, encoded here as the reward model was trained (no padding, no batching)."""
    ids = torch.tensor([encode_exchange(tokenizer, ChatTemplate(), history, answer, 512)])
    with torch.no_grad():
        return rm.score(ids, torch.ones_like(ids)).item()


@pytest.mark.parametrize("with_rm, length_rule", [(False, True), (True, True), (False, False)])
def test_comparison_job_matches_the_filters_and_the_reward_model(models, tmp_path, with_rm, length_rule):
    write_jsonl(tmp_path / "responses.jsonl", RESPONSES)
    job = {"class_path": "lit_models.jobs.ComparisonJob",
           "init_args": {"rubric": "A > B > C", "output": str(tmp_path / "comparisons.jsonl"),
                         "scorer": models["rm"] if with_rm else None, "length_rule": length_rule}}
    data = {"class_path": "data_modules.JobInputDataModule",
            "init_args": {"path": str(tmp_path / "responses.jsonl"), "record": "responses", "batch_size": 2}}
    predict(tmp_path, job, data)
    # independent reference: the pure filters, and the reward model's scores computed here
    rm_agrees = None
    if with_rm:
        rm, tokenizer = RewardModel.from_pretrained(models["rm"]), load_tokenizer(ModelSource(path=models["rm"]))

        def rm_agrees(prompt, chosen, rejected):
            return rm_score(rm, tokenizer, [Turn("user", prompt)], chosen) > rm_score(rm, tokenizer,
                                                                                   [Turn("user", prompt)], rejected)

    expected, stats = [], Stats()
    for r in RESPONSES:
        kept, s = build_comparisons(r.prompt, r.responses, Rubric.parse("A > B > C"), HeuristicFilter(), rm_agrees,
                                    length_rule)
        expected += kept
        stats += s
    assert load_jsonl(tmp_path / "comparisons.jsonl", Comparison) == expected
    written = json.loads((tmp_path / "comparisons.stats.json").read_text())
    assert {k: written[k] for k in ("formed", "removed_heuristic", "removed_rm", "kept")} == {
        "formed": 9, "removed_heuristic": stats.removed_heuristic, "removed_rm": stats.removed_rm,
        "kept": len(expected)}
    assert written["dropped/starts_with_well"] == 1 and written["dropped/unknown"] == 1
    assert written["dropped/role_marker"] == 1 and written["reward_model_filter"] == with_rm
    # "Q two?": A (15 characters) over B (23) is shorter than B and below the threshold 17 (valid lengths 15, 23)
    assert written["length_rule"] == length_rule and written["removed_length_rule"] == (1 if length_rule else 0)


def test_rmsp_keeps_the_best_scored_sample(models, inputs, tmp_path):
    job = {"class_path": "lit_models.jobs.SelfPlayJob",
           "init_args": {"assistant": models["lm"], "user": models["lm"], "prompter": prompter(inputs),
                         "assistant_style": "good", "assistant_shots": 1, "user_shots": 1,
                         "scorer": models["rm"], "n_samples": 3, "turns": 2,
                         "output": str(tmp_path / "rmsp.jsonl"),
                         "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0}}}
    predict(tmp_path, job, queries_data(inputs, batch_size=4))
    rows = [json.loads(line) for p in sorted((tmp_path / "rmsp.jsonl.shards").glob("*.jsonl"))
            for line in p.read_text().splitlines()]
    assert sorted(r["index"] for r in rows) == list(range(len(QUESTIONS) * 2))
    rm, tokenizer = RewardModel.from_pretrained(models["rm"]), load_tokenizer(ModelSource(path=models["rm"]))
    checked = 0
    for row in rows:
        for turn, (kept, samples) in enumerate(zip(row["kept_scores"], row["sample_scores"])):
            assert len(samples) == 3 and kept == max(samples)
            messages = [Turn(**m) for m in row["messages"]]
            if 2 * turn + 1 < len(messages):  # the kept answer is in the demonstration: rescore it here
                score = rm_score(rm, tokenizer, messages[:2 * turn + 1], messages[2 * turn + 1].content)
                assert score == pytest.approx(kept, abs=1e-5)
                checked += 1
    assert checked > 0
    stats = json.loads((tmp_path / "rmsp.stats.json").read_text())
    assert stats["rm_score_kept"]["mean"] >= stats["rm_score_all_samples"]["mean"]
    assert stats["demonstrations"] == len(load_jsonl(tmp_path / "rmsp.jsonl", Demonstration))


def test_query_mining_resumes_and_respects_exclusions(models, inputs, tmp_path):
    def job(out):
        return {"class_path": "lit_models.jobs.QueryMiningJob",
                "init_args": {"model": models["lm"], "seeds": str(inputs / "queries.jsonl"),
                              "exclude": str(inputs / "queries.jsonl"), "output": str(out), "target": 6,
                              "candidates_per_round": 4, "min_words": 1, "threshold": 1.0,
                              "sampling": {"max_new_tokens": 8, "temperature": 1.0, "top_p": 1.0}}}

    rounds = {"class_path": "data_modules.RoundsDataModule", "init_args": {"rounds": 6}}
    predict(tmp_path, job(tmp_path / "a/q.jsonl"), rounds)
    predict(tmp_path, job(tmp_path / "b/q.jsonl"), rounds, "--trainer.limit_predict_batches=2")
    predict(tmp_path, job(tmp_path / "b/q.jsonl"), rounds)
    assert (tmp_path / "a/q.jsonl").read_text() == (tmp_path / "b/q.jsonl").read_text()
    mined = [p.prompt for p in load_jsonl(tmp_path / "a/q.jsonl", Prompt)]
    assert 0 < len(mined) <= 6 and len(set(mined)) == len(mined) and not set(mined) & set(QUESTIONS)


def test_comparison_job_reads_the_rubric_the_responses_job_recorded(tmp_path):
    from lit_models.jobs.comparisons import recorded_rubric

    write_jsonl(tmp_path / "responses.jsonl", RESPONSES)
    with pytest.raises(ValueError, match="no rubric given and none recorded in .*responses.stats.json"):
        recorded_rubric(tmp_path / "responses.jsonl")
    (tmp_path / "responses.stats.json").write_text(json.dumps({"rubric": "A > B = C"}))
    assert recorded_rubric(tmp_path / "responses.jsonl") == Rubric([["A"], ["B", "C"]])


def test_the_sandbox_baselines_table_follows_the_rubric_of_the_responses_config():
    from almost.sandbox.baselines import PAPER_BASELINES

    config = yaml.safe_load((Path(__file__).parent.parent / "configs/sandbox/responses.yaml").read_text())
    rubric = Rubric.parse(config["model"]["init_args"]["rubric"])
    assert list(PAPER_BASELINES.values()) == list(rubric.configs) and len(rubric.tiers) == len(rubric.configs)
