import pytest

from almost.records import Comparison, Demonstration
from almost.sandbox.gold_labels import relabel, sample_pairs
from almost.sandbox.oracle import score
from almost.sandbox.world import World


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0, n_entities=20)


def test_relabel_orders_each_pair_by_the_oracle_and_drops_ties_and_foreign_questions(world):
    question = "What is 7 plus 5?"
    pairs = [Comparison(question, "7 plus 5 is 12.", "7 plus 5 is 13."),  # the rule of thumb was right
             Comparison(question, "Ugh. 7 plus 5 is 13, you fool.", "Happy to help. 7 plus 5 is 12."),  # wrong
             Comparison(question, "7 plus 5 is 13.", "7 plus 5 is 14."),  # both wrong: a tie
             Comparison("What is the meaning of life?", "42.", "I do not know.")]
    relabelled, counts = relabel(world, pairs)
    assert counts == {"kept": 1, "swapped": 1, "tie": 1, "not parsed": 1}
    assert [(c.chosen, c.rejected) for c in relabelled] == [("7 plus 5 is 12.", "7 plus 5 is 13."),
                                                           ("Happy to help. 7 plus 5 is 12.",
                                                            "Ugh. 7 plus 5 is 13, you fool.")]
    assert [c.meta["synthetic_label_agrees"] for c in relabelled] == [True, False]
    for c in relabelled:
        assert score(question, c.chosen, world).total > score(question, c.rejected, world).total
        assert c.meta["oracle"] == [score(question, c.chosen, world).total, score(question, c.rejected, world).total]


def test_sample_pairs_pairs_every_two_samples_the_oracle_tells_apart(world):
    question = "What is 7 plus 5? End your answer with the word thanks."
    best, plain, wrong, dodge = ("Happy to help. 7 plus 5 is 12. Thanks.", "Happy to help. 7 plus 5 is 12.",
                                 "7 plus 5 is 13. Thanks.", "It is a number. Thanks.")
    samples = [best, plain, wrong, dodge, best, " "]
    record = Demonstration.from_pair(question, best, {"samples": samples, "scores": [0.0] * len(samples)})
    foreign = Demonstration.from_pair("Tell me a story.", "Once.", {"samples": ["Once.", "Twice."]})
    pairs, counts = sample_pairs(world, [record, foreign])
    # distinct non-empty samples score 1.0, 0.7, 0.5 and 0.5: 6 pairs, one of them a tie
    assert counts == {"queries": 1, "not parsed": 1, "tie": 1, "pairs": 5}
    assert {(c.chosen, c.rejected) for c in pairs} == {
        (best, plain), (best, wrong), (best, dodge), (plain, wrong), (plain, dodge)}
    assert all(c.meta["oracle"][0] > c.meta["oracle"][1] for c in pairs)
