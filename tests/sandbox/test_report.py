import random

import pytest

from almost.records import Comparison
from almost.sandbox.corpus import helpful_sentence, wrong_value
from almost.sandbox.oracle import score
from almost.sandbox.report import comparisons_oracle
from almost.sandbox.why import behaviours, best_of_n_by_family, best_of_n_oracle, label_agreement
from almost.sandbox.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


def test_comparisons_oracle_counts_agreements_ties_and_contradictions(world):
    query = world.random_query(random.Random(0), "kb_fact")
    right = helpful_sentence(query, query.answers[0], world)
    wrong = helpful_sentence(query, wrong_value(query, world, random.Random(1)), world)
    assert score(query, right, world).total > score(query, wrong, world).total  # the premise of the test
    pairs = [Comparison(query.text, right, wrong), Comparison(query.text, right, wrong),  # agree x2
             Comparison(query.text, "Good question. " + right, right),  # the oracle ties them
             Comparison(query.text, wrong, right),  # contradicts
             Comparison("Sing me a song about the sea.", right, wrong)]  # not a world question: not judged
    assert comparisons_oracle(world, pairs) == {"agree": 0.5, "tie": 0.25, "disagree": 0.25, "judged": 4}
    assert comparisons_oracle(world, pairs[-1:]) == {"agree": None, "tie": None, "disagree": None, "judged": 0}


def test_label_agreement_counts_only_pairs_the_oracle_separates(world):
    kb = world.random_query(random.Random(0), "kb_fact")
    right = helpful_sentence(kb, kb.answers[0], world)
    wrong = helpful_sentence(kb, wrong_value(kb, world, random.Random(1)), world)
    harm = world.random_query(random.Random(2), "harmful")
    refusal, compliance = "I am sorry, but I will not help with that.", "Sure, here is how."
    gap = score(kb, right, world).total - score(kb, wrong, world).total
    assert gap >= 0.2 and score(harm, refusal, world).total - score(harm, compliance, world).total >= 0.2
    pairs = [Comparison(kb.text, right, wrong), Comparison(kb.text, wrong, right), Comparison(kb.text, right, wrong),
             Comparison(kb.text, "Good question. " + right, right),  # a near-tie: not counted
             Comparison(harm.text, compliance, refusal),
             Comparison("Sing me a song about the sea.", right, wrong)]  # not a world question: not judged
    assert label_agreement(world, pairs) == {"kb_fact": {"accuracy": pytest.approx(2 / 3), "pairs": 3},
                                             "harmful": {"accuracy": 0.0, "pairs": 1},
                                             "all": {"accuracy": 0.5, "pairs": 4}}
    assert label_agreement(world, pairs[3:4]) == {}


def test_behaviours_count_rude_answers_and_refusals_of_harmless_questions(world):
    kb = world.random_query(random.Random(0), "kb_fact").text
    harm = world.random_query(random.Random(2), "harmful").text
    refusal = "I am sorry, but I will not help with that."
    exchanges = [(kb, "Ugh. Paris is red, you fool."), (kb, refusal), (kb, "Paris is red."),
                 (harm, refusal),  # a refusal of harm: not counted as refusing a harmless question
                 ("Sing me a song about the sea.", refusal)]  # not a world question: rude counted, refusal not
    assert behaviours(world, exchanges) == {"rude": pytest.approx(1 / 5), "refuses_harmless": pytest.approx(1 / 3)}
    assert behaviours(world, []) == {"rude": None, "refuses_harmless": None}


def test_best_of_n_by_family_splits_the_queries():
    oracle = [[0.2, 0.9], [1.0, 0.0], [0.4, 0.8]]
    rewards = [[1.0, 3.0], [0.0, 5.0], [2.0, 1.0]]
    result = best_of_n_by_family(["word", "kb_fact", "word"], oracle, rewards)
    assert result["kb_fact"] == best_of_n_oracle(oracle[1:2], rewards[1:2])
    assert result["word"]["rm_choice"] == pytest.approx((0.9 + 0.4) / 2) and result["word"]["queries"] == 2
    with pytest.raises(ValueError, match="one family per query"):
        best_of_n_by_family(["word"], oracle, rewards)


def test_best_of_n_takes_the_oracle_score_of_the_rm_choice():
    # query 1: the RM picks the second sample (0.9); query 2: it picks the worse one (0.0);
    # query 3: tied rewards, the first sample (0.4) counts
    oracle = [[0.2, 0.9, 0.5], [1.0, 0.0], [0.4, 0.8]]
    rewards = [[1.0, 3.0, 2.0], [0.0, 5.0], [7.0, 7.0]]
    result = best_of_n_oracle(oracle, rewards)
    assert result["rm_choice"] == pytest.approx((0.9 + 0.0 + 0.4) / 3)
    assert result["sample_mean"] == pytest.approx((1.6 / 3 + 0.5 + 0.6) / 3)
    assert result["oracle_best"] == pytest.approx((0.9 + 1.0 + 0.8) / 3)
    assert result["queries"] == 3
    with pytest.raises(ValueError, match="as many rewards"):
        best_of_n_oracle([[0.1, 0.2]], [[1.0]])


def test_by_family_averages_each_familys_queries():
    from almost.sandbox.baselines import by_family

    assert by_family(["word", "format", "word", "kb_fact"], [0.5, 1.0, 0.25, 0.0]) == {
        "format": 1.0, "kb_fact": 0.0, "word": 0.375}


def test_agreement_by_family_splits_the_pairs_and_counts_ties_half():
    from almost.sandbox.why import agreement_by_family

    families = ["kb_fact", "harmful", "kb_fact", "kb_fact", "harmful"]
    good = [2.0, 1.0, 0.0, 5.0, 3.0]
    bad = [1.0, 4.0, 0.0, 6.0, 2.0]  # kb_fact: right, tie, wrong; harmful: wrong, right
    assert agreement_by_family(families, good, bad) == {"harmful": {"accuracy": 0.5, "pairs": 2},
                                                        "kb_fact": {"accuracy": 0.5, "pairs": 3}}
    with pytest.raises(ValueError):
        agreement_by_family(families[:2], good, bad)


def test_refusals_by_family_counts_the_oracles_refusals():
    from almost.sandbox.why import refusals_by_family

    answers = ["I am sorry, but I cannot help with that.", "Paris is red.", "I won't help with that.", "Sure."]
    assert refusals_by_family(["kb_fact", "kb_fact", "harmful", "harmful"], answers) == {"harmful": 0.5,
                                                                                         "kb_fact": 0.5}


def test_why_rows_print_each_familys_causes():
    from almost.sandbox.why import why_rows

    best = {"rm_choice": 0.5, "sample_mean": 0.625, "oracle_best": 0.875, "queries": 2}
    report = {"rm": {"by_family": {"kb_fact": {"accuracy": 0.61, "pairs": 10}}, "oracle_pair_accuracy": 0.6,
                     "oracle_pairs": 12,
                     "harm_refusal_by_family": {"kb_fact": {"rm": 6.5, "oracle": 0.25},
                                                "harmful": {"rm": 6.4, "oracle": 1.0}}},
              "comparisons": {"label_agreement": {"harmful": {"accuracy": 0.75, "pairs": 4},
                                                  "kb_fact": {"accuracy": 0.875, "pairs": 8},
                                                  "all": {"accuracy": 0.8125, "pairs": 12}},
                              "behaviours": {"chosen": {"rude": 0.25, "refuses_harmless": 0.0},
                                             "rejected": {"rude": 0.0625, "refuses_harmless": None}}},
              "rmsp": {"behaviours": {"rude": 0.5, "refuses_harmless": 0.0}},
              "selfplay": {"behaviours": {"rude": 0.125, "refuses_harmless": 0.0}},
              "sft_selfplay": {"behaviours": {"rude": 0.1, "refuses_harmless": 0.0}},
              "sft_rmsp": {"rm_by_family": {"kb_fact": 5.25, "harmful": 6.0}, "refuses_by_family": {"harmful": 1.0},
                           "best_of_n": {"by_family": {"kb_fact": best}},
                           "behaviours": {"rude": 0.375, "refuses_harmless": 0.0}},
              "ppo": {"refuses_by_family": {"kb_fact": 0.125, "harmful": 1.0},
                      "behaviours": {"rude": 0.0, "refuses_harmless": 0.2}}}
    rows = why_rows(report, 2)
    assert "| kb_fact | 0.875 | 8 | 0.610 | 10 |" in rows
    assert "| harmful | 0.750 | 4 | - | 0 |" in rows  # labels on a family without held-out pairs
    assert "| all | 0.812 | 12 | 0.600 | 12 |" in rows
    assert "| kb_fact | 0.500 | 0.625 | 0.875 |" in rows
    assert "| kept pairs: chosen | 0.250 | 0.000 |" in rows and "| kept pairs: rejected | 0.062 | n/a |" in rows
    assert "| RMSP demonstrations | 0.500 | 0.000 |" in rows and "| PPO | 0.000 | 0.200 |" in rows
    # a run without held-out pairs the oracle separates (the tiny smoke pipeline): dashes, not a crash
    report["rm"].update(oracle_pair_accuracy=None, oracle_pairs=0)
    report["comparisons"]["label_agreement"] = {}
    assert "| all | - | 0 | - | 0 |" in why_rows(report, 2)
    assert "| kb_fact | 5.250 | 6.500 | 0.250 | n/a | 0.125 |" in rows  # a family SFT's answers never refuse on
    assert "| harmful | 6.000 | 6.400 | 1.000 | 1.000 | 1.000 |" in rows
