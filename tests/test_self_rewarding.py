"""Self-rewarding: the pair-making and judge-example functions on hand-made scores, the sandbox's judge seed set,
and SelfJudgeJob through `train.py predict` on a tiny random policy with a scripted judge."""

import json
import math

import pytest

from almost.evaluation.judge import parse_score, render_judge_prompt
from almost.records import Comparison, Prompt, Responses, Turn, load_jsonl
from almost.sandbox.oracle import OracleScore, score
from almost.sandbox.self_rewarding_data import iteration_prompts, judge_seed, rationale
from almost.sandbox.world import World
from almost.scorers import JudgeScorer
from almost.self_rewarding import PairChoice, choose_pair, count_outcomes, judge_demonstration, judge_points
from tests.test_jobs import QUESTIONS, inputs, models, predict, queries_data  # noqa: F401 (fixtures)

ANSWERS = ["a", "b", "c", "d"]


# --- pairs ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("scores, expected", [
    ([3.0, None, 5.0, 1.0], PairChoice("pair", 2, 3)),  # None takes no part
    ([5.0, 5.0, 1.0, 3.0], PairChoice("pair", 0, 2)),  # the first of the highest
    ([4.0, 1.0, 1.0, 2.0], PairChoice("pair", 0, 1)),  # the first of the lowest
    ([4.0, 4.0, None, 4.0], PairChoice("tie")),
    ([None, None, None, None], PairChoice("unjudged")),
    ([None, 2.0, None, math.nan], PairChoice("one_judged")),  # NaN is unjudged too
    ([math.nan, 2.0, 4.5, None], PairChoice("pair", 2, 1)),
])
def test_choose_pair_takes_the_highest_and_lowest_judged_answers(scores, expected):
    assert choose_pair(scores, ANSWERS) == expected


def test_a_pair_of_the_same_text_states_no_preference():
    assert choose_pair([5.0, 1.0, 3.0], ["Yes.", " Yes. ", "No."]) == PairChoice("same_text")
    with pytest.raises(ValueError, match="3 scores but 2 answers"):
        choose_pair([1.0, 2.0, 3.0], ["a", "b"])


def test_count_outcomes_names_every_outcome():
    choices = [PairChoice("pair", 0, 1), PairChoice("tie"), PairChoice("pair", 1, 0), PairChoice("unjudged")]
    assert count_outcomes(choices) == {"pair": 2, "unjudged": 1, "one_judged": 0, "tie": 1, "same_text": 0}


# --- judge-format examples ----------------------------------------------------------------------------------
@pytest.mark.parametrize("total, points", [(0.0, 0), (0.09, 0), (0.1, 1), (0.3, 2), (0.35, 2), (0.45, 2), (0.5, 3),
                                           (0.5 + 0.2 * 0.5 + 0.15 + 0.05 + 0.1, 5), (0.7, 4), (1.0, 5)])
def test_judge_points_round_five_times_the_score_halves_up(total, points):
    assert judge_points(total) == points


def test_judge_points_refuse_a_score_off_the_unit_interval():
    with pytest.raises(ValueError, match="must be in \\[0, 1\\]"):
        judge_points(1.2)


def test_a_judge_example_is_the_rubric_prompt_answered_with_a_rationale_and_a_readable_score():
    demo = judge_demonstration("What is 2 plus 2?", "It is 4.", 5, "Correct. Complete and polite.", {"k": 1})
    assert demo.messages[0] == Turn("user", render_judge_prompt("What is 2 plus 2?", "It is 4."))
    assert demo.messages[1] == Turn("assistant", "Correct. Complete and polite.\nScore: 5") and demo.meta == {"k": 1}
    assert parse_score(demo.messages[1].content) == 5
    assert judge_demonstration("Q?", "A.", 0, "  ").messages[1].content == "Score: 0"
    short = judge_demonstration("Q?", "A.", 3, "Right.", prompt="short")
    assert short.messages[0].content == render_judge_prompt("Q?", "A.", "short")
    with pytest.raises(ValueError, match="points must be in 0..5"):
        judge_demonstration("Q?", "A.", 6, "Great.")


def components(**changed) -> dict:
    return {"correct": 1.0, "complete_polite": 1.0, "refuses_harm": 1.0, "admits_uncertainty": 1.0,
            "no_fabrication": 1.0, "follows_format": 1.0, **changed}


@pytest.mark.parametrize("family, changed, text", [
    ("kb_fact", {}, "Correct. Complete and polite. Nothing made up."),
    ("arithmetic", {"correct": 0.0, "no_fabrication": 0.0, "complete_polite": 0.5},
     "Not correct. Too bare. States a wrong answer or none."),
    ("word", {"admits_uncertainty": 0.0, "correct": 0.0}, "Not correct. Complete and polite. Nothing made up. "
                                                          "Claims not to know."),
    ("harmful", {"refuses_harm": 0.0, "complete_polite": 0.0}, "Helps with harm. Empty or rude."),
    ("unknowable", {}, "Admits it cannot know. Nothing made up. Complete and polite."),
    ("unknowable", {"refuses_harm": 0.0}, "Admits it cannot know. Nothing made up. Complete and polite. "
                                          "Refuses a harmless request."),
    ("format", {}, "Correct. Ends with the word asked for."),
    ("format", {"follows_format": 0.0, "complete_polite": 0.5}, "Correct. Does not end with the word asked for. "
                                                                "Too bare."),
])
def test_rationale_names_the_main_components_and_every_failing_one(family, changed, text):
    assert rationale(OracleScore(0.5, components(**changed), family)) == text


def test_judge_seed_labels_world_answers_with_the_oracle_and_skips_the_rest():
    world = World(seed=0, n_entities=20)
    town = world.entities["town"][0]
    founder = world.facts[town, "founder"]
    question = world.build("founder", {"town": town}).text
    answers = {"A": f"{town} was founded by {founder}.", "B": "", "C": f"Obviously {founder}, stupid."}
    records = [Responses("Sing me a song about the sea.", {"A": "La la."}),  # not a world question: skipped
               Responses(question, answers), Responses(question, {"A": "I do not know."})]
    seed = judge_seed(world, records, limit=3)
    assert [d.meta["config"] for d in seed] == ["A", "C", "A"]  # the empty answer is skipped
    assert [d.messages[0].content for d in seed] == [render_judge_prompt(question, a, "short") for a in
                                                     (answers["A"], answers["C"], "I do not know.")]
    rubric = judge_seed(world, records, limit=1, prompt="rubric")[0].messages[0].content
    assert rubric == render_judge_prompt(question, answers["A"], "rubric") != seed[0].messages[0].content
    totals = [score(question, a, world).total for a in (answers["A"], answers["C"], "I do not know.")]
    assert [d.meta["oracle"] for d in seed] == totals
    assert [parse_score(d.messages[1].content) for d in seed] == [judge_points(t) for t in totals] == [5, 4, 2]
    assert seed[0].messages[1].content.startswith("Correct. Complete and polite.")
    assert len(judge_seed(world, records, limit=2)) == 2


def test_each_iteration_gets_its_own_new_prompts():
    queries = [Prompt(f"q{i}?") for i in range(10)]
    first, second = iteration_prompts(queries, skip=4, per_iteration=3, iterations=2)
    assert [p.prompt for p in first] == ["q4?", "q5?", "q6?"] and [p.prompt for p in second] == ["q7?", "q8?", "q9?"]
    with pytest.raises(ValueError, match="10 queries are too few"):
        iteration_prompts(queries, skip=4, per_iteration=4, iterations=2)


# --- SelfJudgeJob -------------------------------------------------------------------------------------------
CANNED = {0: ["no score", "Score: 9"], 1: ["Score: 3", "Score: 3"], 2: ["Score: 1", "bad"],
          3: ["Fine.\nScore: 5", "Score: 4"]}  # by len(answer) % 4: unjudged, 3, 1 (one unreadable), 4.5
CANNED_SCORE = {0: None, 1: 3.0, 2: 1.0, 3: 4.5}


class CannedJudge(JudgeScorer):
    """A JudgeScorer whose judgements depend only on the answer's length (CANNED); two per answer."""

    def judgements(self, prompts, responses):
        return [CANNED[len(r) % 4] for r in responses]


def self_judge_job(models, output, judge_class: str = "tests.test_self_rewarding.CannedJudge") -> dict:
    return {"class_path": "lit_models.jobs.SelfJudgeJob",
            "init_args": {"policy": models["lm"], "output": str(output),
                          "judge": {"class_path": judge_class,
                                    "init_args": {"path": models["lm"], "samples": 2, "temperature": 0.7}},
                          "sampling": {"max_new_tokens": 6, "temperature": 1.0, "top_p": 1.0}}}


def test_self_judge_job_pairs_the_highest_and_lowest_judged_answers(models, inputs, tmp_path):
    predict(tmp_path, self_judge_job(models, tmp_path / "pairs.jsonl"), queries_data(inputs, batch_size=4))
    rows = sorted((json.loads(line) for p in (tmp_path / "pairs.jsonl.shards").glob("*.jsonl")
                   for line in p.read_text().splitlines()), key=lambda row: row["index"])
    assert [row["index"] for row in rows] == list(range(len(QUESTIONS) * 2))
    expected, ties, unreadable = [], 0, 0
    for row in rows:
        assert len(row["answers"]) == 4
        scores = [CANNED_SCORE[len(a) % 4] if a.strip() else None for a in row["answers"]]
        assert row["scores"] == scores
        assert row["judge_outputs"] == [CANNED[len(a) % 4] if a.strip() else [] for a in row["answers"]]
        unreadable += sum(2 - sum(s is not None for s in j) for j in row["judgements"])
        judged = [(s, i) for i, s in enumerate(scores) if s is not None]
        if len(judged) < 2:
            continue
        high, low = max(judged, key=lambda p: (p[0], -p[1])), min(judged)
        if high[0] == low[0]:
            ties += 1
        elif row["answers"][high[1]].strip() != row["answers"][low[1]].strip():
            expected.append((row["prompt"], row["answers"][high[1]], row["answers"][low[1]], high[0], low[0]))
    written = load_jsonl(tmp_path / "pairs.jsonl", Comparison) if expected else []
    assert [(c.prompt, c.chosen, c.rejected, c.meta["chosen_score"], c.meta["rejected_score"]) for c in written] == expected
    stats = json.loads((tmp_path / "pairs.stats.json").read_text())
    assert stats["pairs"] == len(expected) and stats["ties"] == ties and stats["unparseable_judgements"] == unreadable
    assert stats["judgements"] == 2 * sum(bool(a.strip()) for row in rows for a in row["answers"])
    assert sum(stats["outcomes"].values()) == len(rows) and len(expected) > 0


def test_self_judge_job_resumes_to_the_same_pairs_and_judges_with_the_policys_network(models, inputs, tmp_path):
    from lit_models.jobs import SelfJudgeJob

    job = self_judge_job(models, tmp_path / "a/pairs.jsonl", "almost.scorers.JudgeScorer")
    job["init_args"]["judge"]["init_args"]["max_new_tokens"] = 4
    predict(tmp_path, job, queries_data(inputs))
    job["init_args"]["output"] = str(tmp_path / "b/pairs.jsonl")
    predict(tmp_path, job, queries_data(inputs), "--trainer.limit_predict_batches=2")
    predict(tmp_path, job, queries_data(inputs))
    assert (tmp_path / "a/pairs.jsonl.shards").is_dir()
    first = sorted(p.read_text() for p in (tmp_path / "a/pairs.jsonl.shards").glob("*.jsonl"))
    assert first == sorted(p.read_text() for p in (tmp_path / "b/pairs.jsonl.shards").glob("*.jsonl"))
    assert (tmp_path / "a/pairs.stats.json").read_text().split('"generated')[0] == \
        (tmp_path / "b/pairs.stats.json").read_text().split('"generated')[0]
    judge = JudgeScorer(models["lm"], samples=3, temperature=0.7)
    direct = SelfJudgeJob(models["lm"], judge, str(tmp_path / "c/pairs.jsonl"))
    assert judge._net is direct.networks["policy"]  # no second copy of the policy
    with pytest.raises(ValueError, match="at least two answers"):
        SelfJudgeJob(models["lm"], judge, str(tmp_path / "c/pairs.jsonl"), n_samples=1)
