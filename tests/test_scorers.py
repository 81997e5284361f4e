"""Each scorer on hand-made inputs: the reward model against its own forward pass, the LLM judge with a scripted
model, the sandbox oracle against hand-written answers."""

import json

import pytest
import torch

import almost.scorers as scorers
from almost.chat import ChatTemplate, encode_exchange
from almost.evaluation.judge import render_judge_prompt
from almost.generation import Generation
from almost.models import ModelSource, RewardModel
from almost.records import Turn
from almost.sandbox.scorer import OracleScorer
from almost.sandbox.world import World
from almost.scorers import JudgeScorer, RewardModelScorer, as_history, save_template
from tests.conftest import TINY_ARCH


@pytest.fixture(scope="module")
def rm_dir(tokenizer_dir, tokenizer, tmp_path_factory) -> str:
    root = tmp_path_factory.mktemp("rm")
    torch.manual_seed(0)
    net = RewardModel.build(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer)
    with torch.no_grad():
        net.head.bias.fill_(0.25)
    net.save_pretrained(root)
    tokenizer.save_pretrained(root)
    return str(root)


def test_reward_model_scorer_scores_each_exchange_as_one_unpadded_forward_pass(rm_dir, tokenizer):
    net = RewardModel.from_pretrained(rm_dir).eval()
    prompts = ["What is 2 plus 3?", [Turn("user", "Hi"), Turn("assistant", "Hello."), Turn("user", "Who are you?")],
               "A question long enough to be cut " * 20]
    answers = ["2 plus 3 is 5.", "An assistant.", "Yes."]
    scorer = RewardModelScorer(rm_dir, max_length=40, batch_size=2)  # two batches, padding, a cut prompt
    got = scorer.score(prompts, answers)
    for prompt, answer, value in zip(prompts, answers, got):
        ids = torch.tensor([encode_exchange(tokenizer, ChatTemplate(), as_history(prompt), answer, 40)])
        assert ids.shape[1] <= 40
        with torch.no_grad():
            expected = net.score(ids, torch.ones_like(ids)).item()
        assert value == pytest.approx(expected, abs=1e-5)
    assert len(set(got)) == 3
    with pytest.raises(ValueError, match="2 prompts but 1 responses"):
        scorer.score(["a", "b"], ["x"])
    with pytest.raises(ValueError, match="must end with a user turn"):
        scorer.score([[Turn("user", "a"), Turn("assistant", "b")]], ["x"])


def test_reward_model_scorer_uses_the_template_saved_with_the_model(rm_dir, tmp_path):
    other = ChatTemplate(user_tag="Q:", assistant_tag="A:")
    assert RewardModelScorer(rm_dir).template == ChatTemplate()  # nothing saved: the default
    import shutil

    copy = tmp_path / "rm"
    shutil.copytree(rm_dir, copy)
    save_template(copy, other)
    assert RewardModelScorer(str(copy)).template == other
    default, saved = RewardModelScorer(rm_dir).score(["Hi"], ["Hello."]), RewardModelScorer(str(copy)).score(["Hi"], ["Hello."])
    assert default != saved  # the template changes the ids the reward model reads
    with pytest.raises(ValueError, match="was trained with the chat template"):
        RewardModelScorer(str(copy), template=ChatTemplate())


SCRIPT = {
    "good": ["The answer is right.\nScore: 4", "Clear.\nScore: 5", "Score: 3"],  # mean 4
    "bad": ["Score: 4/5", "No score here.", "Score: 2\nScore: two"],  # no readable last score line
    "mixed": ["Nothing.", "Score: 1", "Score: 9"],  # one readable judgement: 1
}


def test_judge_scorer_averages_readable_judgements_and_counts_the_rest(monkeypatch, tmp_path):
    calls = []

    def scripted_generate(model, tokenizer, prompts, sampling, batch_size, seed):
        calls.append((len(prompts), seed))
        outputs = [text for key in ("good", "bad", "mixed") for text in SCRIPT[key]]
        return [Generation(text, (), True) for text in outputs[:len(prompts)]]

    judge = JudgeScorer(str(tmp_path), samples=3, temperature=1.0)
    judge._net, judge._tokenizer = object(), object()  # loaded: the scripted generate never calls them
    monkeypatch.setattr(scorers, "generate", scripted_generate)
    monkeypatch.setattr(scorers, "encode_prompt", lambda tokenizer, template, history: [1, 2, 3])
    scores = judge.score(["q1", "q2", "q3"], ["a1", "a2", "a3"])
    assert scores == [4.0, None, 1.0]
    assert judge.tally.unparseable == 5 and judge.tally.parsed == 4
    assert calls == [(9, 0)]  # 3 samples of each of 3 answers in one call
    judge.score(["q1"], ["a1"])
    assert calls[-1][1] != 0  # the next call samples with another seed
    with pytest.raises(ValueError, match="greedy judgements"):
        JudgeScorer(str(tmp_path), samples=2, temperature=0.0)


def test_judge_reply_prefix_is_written_for_the_judge_and_read_back(monkeypatch, tmp_path, tokenizer):
    seen = []

    def scripted_generate(model, tokenizer_, prompts, sampling, batch_size, seed):
        seen.extend(prompts)
        return [Generation(text, (), True) for text in ("4", "n.")[:len(prompts)]]

    judge = JudgeScorer(str(tmp_path), reply_prefix="Score:", max_new_tokens=2)
    judge._net, judge._tokenizer = object(), tokenizer
    monkeypatch.setattr(scorers, "generate", scripted_generate)
    assert judge.score(["q1", "q2"], ["a1", "a2"]) == [4.0, None]  # "Score: 4" reads, "Score: n." does not
    prompt = scorers.encode_prompt(tokenizer, judge.template, [Turn("user", judge.judge_prompt("q1", "a1"))])
    assert seen[0] == prompt + scorers.text_ids(tokenizer, judge.template, "Score:")  # the reply starts with it
    assert judge.judgements(["q1"], ["a1"]) == [["Score: 4"]] and judge.describe()["reply_prefix"] == "Score:"


def test_judge_prompt_is_chosen_by_name(tmp_path):
    short = JudgeScorer(str(tmp_path), prompt="short")
    assert short.judge_prompt("How many legs?", "Four.") == render_judge_prompt("How many legs?", "Four.", "short")
    assert short.describe()["prompt"] == "short"
    with pytest.raises(ValueError, match="prompt 'terse' is not one of rubric, short"):
        JudgeScorer(str(tmp_path), prompt="terse")


def test_judge_prompt_shows_the_question_and_the_answer(tmp_path):
    judge = JudgeScorer(str(tmp_path))
    text = judge.judge_prompt("How do I boil an egg?", "In water, 8 minutes.")
    assert "How do I boil an egg?" in text and "In water, 8 minutes." in text and text.rstrip().endswith("0 to 5.")
    longer = judge.judge_prompt([Turn("user", "Hi"), Turn("assistant", "Hello."), Turn("user", "And eggs?")], "Boil.")
    assert "User: Hi\nAssistant: Hello.\nUser: And eggs?" in longer


def test_oracle_scorer_judges_answers_to_the_world_questions(tmp_path):
    (tmp_path / "world.json").write_text(json.dumps({"world_seed": 0, "n_entities": 20}))
    world = World(seed=0, n_entities=20)
    town = world.entities["town"][0]
    founder = world.facts[town, "founder"]
    other = next(p for p in world.entities["person"] if p != founder)
    question = world.build("founder", {"town": town}).text
    oracle = OracleScorer(str(tmp_path))
    right, wrong, garbled = oracle.score([question, [Turn("user", question)], "Blorp?"],
                                         [f"{town} was founded by {founder}.", f"{town} was founded by {other}.", "x"])
    assert right == pytest.approx(1.0) and wrong < right and garbled is None and oracle.unparseable == 1
    assert OracleScorer(str(tmp_path), unparseable_score=0.0).score(["Blorp?"], ["x"]) == [0.0]
