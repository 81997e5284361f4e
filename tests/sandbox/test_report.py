import random

import pytest

from almost.records import Comparison
from almost.sandbox.corpus import helpful_sentence, wrong_value
from almost.sandbox.oracle import score
from almost.sandbox.report import comparisons_oracle
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
