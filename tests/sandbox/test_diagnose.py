import collections
import json

import pytest

from almost.feedback import HeuristicFilter, Rubric, length_threshold
from almost.records import Responses
from almost.sandbox.diagnose import behaviour_by_family, comparison_fates, comparisons_rubric
from almost.sandbox.world import World


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


def test_comparisons_rubric_is_the_jobs_own_or_the_recorded_one(tmp_path):
    stats = tmp_path / "responses.stats.json"
    stats.write_text(json.dumps({"rubric": "A > B > C"}))
    responses = tmp_path / "responses.jsonl"
    assert str(comparisons_rubric({}, responses)) == str(Rubric.parse("A > B > C"))
    assert str(comparisons_rubric({"rubric": "C > B"}, responses)) == str(Rubric.parse("C > B"))
    with pytest.raises(ValueError, match="none recorded"):
        comparisons_rubric({}, tmp_path / "missing.jsonl")
