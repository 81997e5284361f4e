import math

import pytest

from almost.feedback import (RULES, HeuristicFilter, Rubric, Stats, build_comparisons, form_pairs, length_threshold,
                             passes_length_rule)
from almost.records import Comparison

QUERY = "How do I boil an egg?"


def text(n: int) -> str:
    """A valid response of exactly ``n`` characters."""
    return "x" * (n - 1) + "."


# ------------------------------------------------------------------------------------------------ rubric
def test_rubric_parse_equals_tiers_and_ranks_ties():
    rubric = Rubric.parse("A > B > C = D > E")
    assert rubric == Rubric([["A"], ["B"], ["C", "D"], ["E"]])
    assert rubric.tiers == (("A",), ("B",), ("C", "D"), ("E",))
    assert [rubric.rank(c) for c in "ABCDE"] == [0, 1, 2, 2, 3]
    assert rubric.configs == ("A", "B", "C", "D", "E")
    assert str(rubric) == "A > B > C = D > E"
    assert Rubric.parse(" 30B-5shot>13B-3shot = 13B-faithful ").tiers == (("30B-5shot",), ("13B-3shot", "13B-faithful"))


@pytest.mark.parametrize("spec, problem", [
    ("A > > B", "non-empty"), ("A > B =", "non-empty"), ("A > B = A", "more than once"), ("", "non-empty")])
def test_rubric_rejects_bad_specs(spec, problem):
    with pytest.raises(ValueError, match=problem):
        Rubric.parse(spec)


def test_rubric_rank_of_unknown_config_raises():
    with pytest.raises(ValueError, match="'Z' is not in the rubric"):
        Rubric.parse("A > B").rank("Z")
    with pytest.raises(TypeError):
        Rubric("A > B")
    with pytest.raises(ValueError, match="no empty tier"):
        Rubric([["A"], []])


def test_form_pairs_skips_ties_and_missing_configs():
    rubric = Rubric.parse("A > B > C = D > E")
    responses = {"D": "d", "B": "b", "A": "a", "C": "c"}  # E missing; order of the dict is irrelevant
    assert form_pairs(responses, rubric) == [("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D")]
    assert form_pairs({"C": "c", "D": "d"}, rubric) == []
    assert form_pairs({"E": "e", "A": "a"}, rubric) == [("A", "E")]


def test_form_pairs_rejects_a_config_outside_the_rubric():
    with pytest.raises(ValueError, match="'Z'"):
        form_pairs({"A": "a", "Z": "z"}, Rubric.parse("A > B"))


# ------------------------------------------------------------------------------------------------ heuristic filter
@pytest.mark.parametrize("response, rule", [
    ("Yes.", "too_short"),
    ("   ", "too_short"),
    ("Boil it for about nine minutes", "unfinished"),
    ("Boil it for nine minutes, then", "unfinished"),
    ("Well, boil it for nine minutes.", "starts_with_well"),
    ("well boil it for nine minutes!", "starts_with_well"),
    ("I don't know how to boil an egg.", "unknown"),
    ("I don\u2019t know how to boil an egg.", "unknown"),
    ("I'm NOT SURE, maybe ten minutes?", "unknown"),
    ("Boil it for nine minutes. Human: thanks!", "role_marker"),
    ("Boil it.\nUser: and then?", "role_marker"),
    ("Well", "too_short"),  # fails several rules: the first in RULES is named
])
def test_each_rule_is_caught_by_name(response, rule):
    assert HeuristicFilter().check(response) == rule


@pytest.mark.parametrize("response", [
    "Boil it for nine minutes.",
    "Boil it for nine minutes!",
    "Is nine minutes enough?",
    'He said "boil it for nine minutes."',
    "(Boil it for nine minutes.)",
    "  Boil it for nine minutes.\n",
    "Wellington eggs take nine minutes.",  # "well" only as a whole word
    "Well-boiled eggs take nine minutes.",
    "A piano idea: nine minutes.",  # "no idea" only as whole words
    "Ask the user: nine minutes.",  # role markers are case-sensitive
])
def test_good_responses_pass(response):
    assert HeuristicFilter().check(response) is None


def test_heuristic_filter_is_configurable():
    assert HeuristicFilter(min_chars=3).check("Yes.") is None
    assert HeuristicFilter(min_chars=5).check("Yes.") == "too_short"
    only_short = HeuristicFilter(rules=("too_short",))
    assert only_short.check("Well, I don't know") is None
    assert only_short.check(" ") == "too_short"
    assert HeuristicFilter(rules=()).check("") == "too_short"  # an empty text never passes
    assert HeuristicFilter(unknown_phrases=["beats me"]).check("Beats me, sorry.") == "unknown"
    assert HeuristicFilter(unknown_phrases=["beats me"]).check("I don't know, sorry.") is None
    assert HeuristicFilter(role_markers=("### ",)).check("Done. ### Instruction.") == "role_marker"
    assert HeuristicFilter(sentence_ends=".!?:").check("Boil it like so:") is None
    with pytest.raises(ValueError, match="unknown rule 'typo'"):
        HeuristicFilter(rules=("typo",))
    with pytest.raises(TypeError):
        HeuristicFilter(role_markers="Human:")
    with pytest.raises(TypeError):
        HeuristicFilter(rules="too_short")
    assert HeuristicFilter(rules=["too_short"]) == HeuristicFilter(rules=("too_short",))  # lists from YAML


# ------------------------------------------------------------------------------------------------ length rule
def test_length_threshold_uses_population_std():
    # mean 25, population std sqrt(((-15)^2 + (-5)^2 + 5^2 + 15^2) / 4) = sqrt(125) = 11.1803
    assert length_threshold([10, 20, 30, 40]) == pytest.approx(25 - 11.180339887 / 2)
    assert length_threshold([10, 20, 30, 40]) == pytest.approx(19.409830056)
    assert length_threshold([10, 20]) == pytest.approx(12.5)  # population std 5 (sample std would be 7.07)
    assert length_threshold([7]) == 7.0  # a single valid response: std 0
    with pytest.raises(ValueError):
        length_threshold([])


def test_length_rule_with_worked_numbers():
    threshold = length_threshold([10, 20, 30, 40])  # 19.41
    assert passes_length_rule(20, 30, threshold)  # shorter, but above the threshold
    assert not passes_length_rule(19, 30, threshold)  # shorter and below the threshold
    assert passes_length_rule(19, 10, threshold)  # below the threshold, but longer than the rejected one
    assert not passes_length_rule(19, 19, threshold)  # "longer" is strict


# ------------------------------------------------------------------------------------------------ build_comparisons
RUBRIC = Rubric.parse("X > A > B > C > D > E")
RESPONSES = {
    "X": "Well, " + text(30),  # dropped: starts_with_well
    "A": text(12),
    "B": text(30),
    "C": text(17),
    "D": text(21),
    "E": "User: " + text(94),  # dropped: role_marker; 100 characters, which would raise the mean if counted
}
# Valid lengths [12, 30, 17, 21]: mean 20, population variance (64 + 100 + 9 + 1) / 4 = 43.5,
# threshold 20 - sqrt(43.5) / 2 = 16.70.
# Pairs (15): 5 with X and 4 more with E are removed for a dropped response; (A,B), (A,C), (A,D) by the
# length rule (12 is shorter and < 16.70); kept (B,C), (B,D) as longer, and (C,D): 17 < 21 but 17 >= 16.70.


def test_build_comparisons_worked_example():
    assert len(RESPONSES["E"]) == 100 and length_threshold([12, 30, 17, 21]) == pytest.approx(16.7023, abs=1e-4)
    comparisons, stats = build_comparisons(QUERY, RESPONSES, RUBRIC, HeuristicFilter())
    assert comparisons == [
        Comparison(QUERY, text(30), text(17), {"chosen_config": "B", "rejected_config": "C"}),
        Comparison(QUERY, text(30), text(21), {"chosen_config": "B", "rejected_config": "D"}),
        Comparison(QUERY, text(17), text(21), {"chosen_config": "C", "rejected_config": "D"}),
    ]
    assert stats == Stats(queries=1, responses=6, dropped_responses={"starts_with_well": 1, "role_marker": 1},
                          formed=15, removed_heuristic=12, removed_bad_response=9, removed_length_rule=3,
                          removed_rm=0, kept=3, kept_chosen_chars=30 + 30 + 17, kept_rejected_chars=17 + 21 + 21)
    assert stats.mean_chosen_chars == pytest.approx(77 / 3)
    assert stats.mean_rejected_chars == pytest.approx(59 / 3)


def test_without_the_length_rule_the_pairs_it_removed_are_kept():
    comparisons, stats = build_comparisons(QUERY, RESPONSES, RUBRIC, HeuristicFilter(), length_rule=False)
    assert [(c.meta["chosen_config"], c.meta["rejected_config"]) for c in comparisons] == [
        ("A", "B"), ("A", "C"), ("A", "D"), ("B", "C"), ("B", "D"), ("C", "D")]
    assert (stats.removed_length_rule, stats.removed_heuristic, stats.kept) == (0, 9, 6)


def test_dropped_responses_do_not_count_in_the_length_threshold():
    # With the role_marker rule off, E (100 characters) is valid: lengths [12, 30, 17, 21, 100], mean 36,
    # population variance (576 + 36 + 361 + 225 + 4096) / 5 = 1058.8, threshold 36 - 32.54 / 2 = 19.73 > 17.
    assert length_threshold([12, 30, 17, 21, 100]) == pytest.approx(19.73, abs=0.01)
    no_marker_rule = HeuristicFilter(rules=tuple(r for r in RULES if r != "role_marker"))
    comparisons, _ = build_comparisons(QUERY, RESPONSES, RUBRIC, no_marker_rule)
    assert ("C", "D") not in [(c.meta["chosen_config"], c.meta["rejected_config"]) for c in comparisons]
    comparisons, _ = build_comparisons(QUERY, RESPONSES, RUBRIC, HeuristicFilter())
    assert ("C", "D") in [(c.meta["chosen_config"], c.meta["rejected_config"]) for c in comparisons]


def test_rm_filter_removes_exactly_the_pair_it_disagrees_with():
    calls = []

    def rm_agrees(prompt: str, chosen: str, rejected: str) -> bool:
        calls.append((prompt, chosen, rejected))
        return (chosen, rejected) != (RESPONSES["B"], RESPONSES["D"])

    comparisons, stats = build_comparisons(QUERY, RESPONSES, RUBRIC, HeuristicFilter(), rm_agrees)
    assert [(c.meta["chosen_config"], c.meta["rejected_config"]) for c in comparisons] == [("B", "C"), ("C", "D")]
    assert (stats.removed_rm, stats.kept, stats.removed_heuristic) == (1, 2, 12)
    assert (stats.kept_chosen_chars, stats.kept_rejected_chars) == (30 + 17, 17 + 21)
    # the RM is asked only about pairs that survived the heuristic filter, with the query as prompt
    assert calls == [(QUERY, text(30), text(17)), (QUERY, text(30), text(21)), (QUERY, text(17), text(21))]


def test_query_with_one_valid_response():
    comparisons, stats = build_comparisons(QUERY, {"A": text(20), "B": "I do not know."}, Rubric.parse("A > B"),
                                           HeuristicFilter())
    assert comparisons == []
    assert (stats.formed, stats.removed_bad_response, stats.removed_length_rule, stats.kept) == (1, 1, 0, 0)
    assert stats.dropped_responses == {"unknown": 1}
    assert stats.mean_chosen_chars is None
    _, stats = build_comparisons(QUERY, {"A": "no", "B": "no"}, Rubric.parse("A > B"), HeuristicFilter())
    assert (stats.formed, stats.removed_heuristic, stats.kept) == (1, 1, 0)


def test_a_pair_of_identical_responses_is_removed():
    # C and D say the same (up to surrounding whitespace): their pair states no preference; the others stay.
    same = text(25)
    comparisons, stats = build_comparisons(QUERY, {"B": text(30), "C": same, "D": f" {same}\n"},
                                           Rubric.parse("B > C > D"), HeuristicFilter())
    assert [(c.meta["chosen_config"], c.meta["rejected_config"]) for c in comparisons] == [("B", "C"), ("B", "D")]
    assert (stats.formed, stats.removed_identical, stats.removed_heuristic, stats.kept) == (3, 1, 1, 2)
    # alone, the two equal lengths meet the length rule (threshold 25 - 0 / 2): only the new rule removes the pair
    comparisons, stats = build_comparisons(QUERY, {"C": same, "D": same}, Rubric.parse("C > D"), HeuristicFilter())
    assert comparisons == [] and (stats.removed_identical, stats.removed_length_rule) == (1, 0)


def test_empty_query_raises():
    with pytest.raises(ValueError, match="query"):
        build_comparisons(" ", {"A": text(20)}, Rubric.parse("A > B"), HeuristicFilter())


# ------------------------------------------------------------------------------------------------ stats
def test_stats_add_and_to_dict():
    a = Stats(queries=1, responses=4, dropped_responses={"unfinished": 1}, formed=6, removed_heuristic=4,
              removed_bad_response=3, removed_length_rule=1, removed_rm=0, kept=2,
              kept_chosen_chars=50, kept_rejected_chars=30)
    b = Stats(queries=2, responses=6, dropped_responses={"unfinished": 2, "unknown": 1}, formed=8,
              removed_heuristic=5, removed_bad_response=5, removed_length_rule=0, removed_rm=1, kept=2,
              kept_chosen_chars=70, kept_rejected_chars=10)
    total = a + b
    assert total == Stats(queries=3, responses=10, dropped_responses={"unfinished": 3, "unknown": 1}, formed=14,
                          removed_heuristic=9, removed_bad_response=8, removed_length_rule=1, removed_rm=1,
                          kept=4, kept_chosen_chars=120, kept_rejected_chars=40)
    assert sum([a, b]) == total and sum([a, b], Stats()) == total
    assert a.dropped_responses == {"unfinished": 1}  # operands are not modified
    assert total.to_dict() == {
        "queries": 3, "responses": 10, "formed": 14, "removed_heuristic": 9, "removed_bad_response": 8,
        "removed_identical": 0, "removed_length_rule": 1, "removed_rm": 1, "kept": 4, "kept_chosen_chars": 120,
        "kept_rejected_chars": 40,
        "dropped/too_short": 0, "dropped/unfinished": 3, "dropped/starts_with_well": 0, "dropped/unknown": 1,
        "dropped/role_marker": 0, "mean_chosen_chars": 30.0, "mean_rejected_chars": 10.0,
    }
    assert Stats().to_dict()["mean_chosen_chars"] is None
    assert set(RULES) == {k.split("/")[1] for k in Stats().to_dict() if k.startswith("dropped/")}
    assert math.isclose(sum([a]).to_dict()["mean_chosen_chars"], 25.0)
