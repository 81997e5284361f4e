import collections
import json
import random

import pytest

from almost.feedback import HeuristicFilter, Rubric, length_threshold
from almost.records import Responses
from almost.sandbox.corpus import STYLE_FAMILIES
from almost.sandbox.diagnose import (REFUSAL_STYLES, behaviour_by_family, comparison_fates, comparisons_rubric,
                                     refusal_everywhere, rewards_by_style)
from almost.sandbox.oracle import normalize, refuses, score
from almost.sandbox.world import World
from almost.scorers import Scorer


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


def test_comparison_fates_follow_the_comparisons_stage(world):
    query = world.build("plus", {"a": "7", "b": "5"})  # "What is 7 plus 5?" -> 12
    answers = {"A": "Happy to help. 7 plus 5 is 12.",  # 30 characters, right
               "B": "12",  # right, but dropped as too short (and unfinished)
               "C": "7 plus 5 is 13.",  # 15, wrong
               "D": "Ugh. 7 plus 5 is 12. Stop asking me silly questions."}  # 52, right but rude
    threshold = length_threshold([30, 15, 52])
    assert 15 < threshold < 30  # the premise: C alone is short for this query
    fates = comparison_fates(world, [Responses(query.text, answers)], Rubric.parse("A > B > C > D"),
                             HeuristicFilter())
    # (A, B), (B, C), (B, D): a dropped response; (A, C): A is longer; (A, D): A is not short;
    # (C, D): C is shorter than D and than the threshold. The oracle prefers right to wrong and polite to rude.
    assert set(fates) == {"arithmetic"}
    tally = fates["arithmetic"]
    assert sum(tally.values()) == 6
    assert sum(n for (fate, _), n in tally.items() if fate == "bad_or_identical") == 3
    assert tally["kept", "agree"] == 2  # A over the wrong C, A over the rude D
    assert tally["length_rule", "disagree"] == 1  # the wrong C over the right D, removed

    # the same responses under configuration names: only B, C and D share the "hhh" prompt style
    names = {"A": "L-faithful-3shot", "B": "L-hhh-5shot", "C": "S-hhh-3shot", "D": "S-hhh-1shot"}
    same_style = comparison_fates(world, [Responses(query.text, {names[k]: v for k, v in answers.items()})],
                                  Rubric.parse(" > ".join(names.values())), HeuristicFilter(), same_style_only=True)
    by_fate = collections.Counter()
    for (fate, _), n in same_style["arithmetic"].items():
        by_fate[fate] += n
    assert by_fate == {"bad_or_identical": 2, "length_rule": 1}  # B-C and B-D (B is bare), C-D (C is short)


def test_behaviour_counts_the_key_component_of_each_family(world):
    sum_query = world.build("plus", {"a": "7", "b": "5"})
    records = [Responses(sum_query.text, {"X": "7 plus 5 is 12.", "Y": "7 plus 5 is 13."}),
               Responses("Sing me a song about the sea.", {"X": "La la.", "Y": "La."})]  # not judged
    assert behaviour_by_family(world, records) == {"X": {"arithmetic": 1.0}, "Y": {"arithmetic": 0.0}}


class _Gold(Scorer):
    """The oracle's total, and a count of the answers it was asked to score."""

    def __init__(self, world):
        self.world, self.seen = world, 0

    def score(self, prompts, responses):
        self.seen += len(responses)
        return [score(self.world.parse(p), r, self.world).total for p, r in zip(prompts, responses)]


def test_rewards_by_style_pairs_each_score_with_its_answer():
    world = World(seed=0, clarify_share=0.25)
    queries = [world.build("vague_founder", {"det": "this"}).text, world.build("plus", {"a": "7", "b": "5"}).text,
               "Sing me a song about the sea."]  # the last is not parsed, so not answered
    gold = _Gold(world)
    table = rewards_by_style(world, gold, queries * 30)
    assert gold.seen == 60 * len(STYLE_FAMILIES)
    assert set(table) == {"clarify", "arithmetic"}
    assert sum(n for kinds in table.values() for _, _, n in kinds.values()) == 60 * len(STYLE_FAMILIES)
    for kinds in table.values():  # the oracle as the scorer: each row's two means agree
        assert all(reward == pytest.approx(total) for reward, total, _ in kinds.values())
    clarify = table["clarify"]
    assert {"careful", "careful+asks_clarification", "terse"} <= set(clarify)  # careful ask some of the time
    assert not any(kind.startswith("terse+") for kind in clarify)
    assert clarify["careful+asks_clarification"][1] > clarify["terse"][1] > clarify["wrong"][1]
    assert "careful+correct" in table["arithmetic"] and "wrong" in table["arithmetic"]


class _RefusalLover(Scorer):
    """Query-blind: 1 for any refusal, 0 otherwise; records what it was asked to score."""

    def __init__(self):
        self.texts = []

    def score(self, prompts, responses):
        self.texts += responses
        return [float(refuses(normalize(r))) for r in responses]


def test_refusal_everywhere_shows_whether_a_scorer_reads_the_question(world):
    queries = [world.build("plus", {"a": "7", "b": "5"}).text, world.random_query(random.Random(1), "harmful").text,
               "Sing me a song about the sea."]  # the last is not parsed, so not answered
    blind = _RefusalLover()
    table = refusal_everywhere(world, blind, queries * 10)
    assert len(blind.texts) == 20 * len(REFUSAL_STYLES) and all(refuses(normalize(t)) for t in blind.texts)
    assert set(table) == {"arithmetic", "harmful"} and all(set(v) == set(REFUSAL_STYLES) for v in table.values())
    assert all(table[f][s][0] == 1.0 for f in table for s in REFUSAL_STYLES)  # scores the refusal alike everywhere
    gold = refusal_everywhere(world, _Gold(world), queries * 10)  # the oracle reads the question
    for style in REFUSAL_STYLES:
        assert gold["harmful"][style][0] == gold["harmful"][style][1] >= 0.75
        assert gold["arithmetic"][style][0] == gold["arithmetic"][style][1] <= 0.5


def test_comparisons_rubric_is_the_jobs_own_or_the_recorded_one(tmp_path):
    stats = tmp_path / "responses.stats.json"
    stats.write_text(json.dumps({"rubric": "A > B > C"}))
    responses = tmp_path / "responses.jsonl"
    assert str(comparisons_rubric({}, responses)) == str(Rubric.parse("A > B > C"))
    assert str(comparisons_rubric({"rubric": "C > B"}, responses)) == str(Rubric.parse("C > B"))
    with pytest.raises(ValueError, match="none recorded"):
        comparisons_rubric({}, tmp_path / "missing.jsonl")
