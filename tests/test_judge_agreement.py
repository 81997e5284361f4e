"""The five judge-agreement metrics of self-rewarding language models, against values computed by hand."""

import math

import pytest

from almost.evaluation.judge_agreement import (average_ranks, exact_match, five_best_share, judge_agreement,
                                               kendall_tau_b, pairwise_accuracy, spearman)
from almost.sandbox.self_rewarding_report import mean_and_standard_error

# five prompts; the judge's 0-5 scores (None: unreadable) and the gold scores of the same answers
JUDGE = [[5, 3, None, 1], [2, 2, 4], [5, 4], [3, 1], [2, 2]]
GOLD = [[1.0, 0.5, 0.9, 0.2], [0.3, 0.8, 0.8], [0.4, 0.6], [0.7, 0.1], [0.5, 0.5]]
# gold-ordered pairs of judged answers: prompt 1: (0,1) (0,3) (1,3) right; prompt 2: (0,1) judge tie, (0,2) right,
# (1,2) gold tie (left out); prompt 3: (0,1) wrong; prompt 4: right; prompt 5: gold tie (left out) -> 5 right,
# 1 tie, 1 wrong of 7


def test_pairwise_accuracy_counts_gold_ordered_pairs_and_credits_judge_ties():
    assert pairwise_accuracy(JUDGE, GOLD) == pytest.approx(5.5 / 7)
    assert pairwise_accuracy(JUDGE, GOLD, tie_credit=0.0) == pytest.approx(5 / 7)
    assert pairwise_accuracy([[3, None]], [[0.1, 0.9]]) is None  # no pair of judged answers


def test_five_best_share_is_the_share_of_perfect_scores_on_a_gold_best_answer():
    assert five_best_share(JUDGE, GOLD) == 0.5  # prompt 1's 5 is gold-best, prompt 3's is not
    assert five_best_share([[5, 5]], [[0.5, 0.5]]) == 1.0  # a tie for the best counts as best
    assert five_best_share([[4, 3]], [[0.5, 0.1]]) is None


def test_exact_match_needs_every_pair_ordered_alike_ties_included():
    # prompt 1 has an unjudged answer (left out); 2 and 3 differ from gold; 4 and 5 match (5: both tie)
    assert exact_match(JUDGE, GOLD) == 0.5
    assert exact_match([[1]], [[0.3]]) is None


def test_ranks_and_correlations_match_hand_computed_values():
    assert average_ranks([3, 1, 3]) == [2.5, 1.0, 2.5]
    assert spearman([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(0.8)  # 1 - 6 * 2 / (4 * 15)
    assert spearman([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(math.sqrt(0.9))  # 4.5 / sqrt(4.5 * 5)
    assert spearman([4, 3, 2, 1], [1, 2, 3, 4]) == pytest.approx(-1.0)
    assert kendall_tau_b([1, 2, 3, 4], [1, 3, 2, 4]) == pytest.approx(4 / 6)  # 5 concordant, 1 discordant
    assert kendall_tau_b([1, 2, 2, 3], [1, 2, 3, 4]) == pytest.approx(5 / math.sqrt(5 * 6))  # one pair tied in x
    assert spearman([2, 2, 2], [1, 2, 3]) is None and kendall_tau_b([2, 2, 2], [1, 2, 3]) is None
    assert spearman([1], [1]) is None


def test_judge_agreement_pools_the_judged_answers_for_the_correlations():
    result = judge_agreement(JUDGE, GOLD)
    xs = [5, 3, 1, 2, 2, 4, 5, 4, 3, 1, 2, 2]
    ys = [1.0, 0.5, 0.2, 0.3, 0.8, 0.8, 0.4, 0.6, 0.7, 0.1, 0.5, 0.5]
    assert result.spearman == pytest.approx(spearman(xs, ys)) and result.kendall_tau == pytest.approx(kendall_tau_b(xs, ys))
    assert (result.pairwise_accuracy, result.five_best_share, result.exact_match) == (pytest.approx(5.5 / 7), 0.5, 0.5)
    assert (result.prompts, result.answers, result.unjudged, result.perfect_scores) == (5, 13, 1, 2)
    with pytest.raises(ValueError, match="same groups"):
        judge_agreement([[1, 2]], [[0.1]])


def test_mean_and_standard_error():
    mean, se = mean_and_standard_error([1.0, 2.0, 3.0, 4.0])
    assert mean == 2.5 and se == pytest.approx(math.sqrt(5 / 3) / 2)
    assert mean_and_standard_error([5.0]) == (5.0, None)
