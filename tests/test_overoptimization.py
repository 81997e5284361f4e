import itertools
import math
import random
import statistics

import pytest

from almost.evaluation.overoptimization import (best_of_n_curve, best_of_n_expected, best_of_n_kl,
                                                best_of_n_weights)


def brute_force(selector, values, n):
    """Enumerate every n-subset: the mean value of the subset's first highest-selector sample."""
    outcomes = []
    for subset in itertools.combinations(range(len(selector)), n):
        best = max(subset, key=lambda i: (selector[i], -i))
        outcomes.append(values[best])
    return statistics.fmean(outcomes)


def test_kl_of_best_of_n_is_log_n_minus_n_minus_one_over_n():
    assert best_of_n_kl(1) == 0.0
    assert best_of_n_kl(2) == pytest.approx(math.log(2) - 0.5)  # 0.1931
    assert best_of_n_kl(16) == pytest.approx(2.7725887 - 0.9375)
    with pytest.raises(ValueError, match="n >= 1"):
        best_of_n_kl(0)


def test_weights_are_the_chance_each_rank_is_the_best_of_a_subset():
    assert best_of_n_weights(4, 1) == [0.25] * 4
    assert best_of_n_weights(4, 2) == pytest.approx([0, 1 / 6, 2 / 6, 3 / 6])
    assert best_of_n_weights(4, 4) == [0, 0, 0, 1]
    for k, n in [(16, 3), (16, 8), (7, 5)]:
        assert math.fsum(best_of_n_weights(k, n)) == pytest.approx(1.0, abs=1e-12)
    with pytest.raises(ValueError, match="1 <= n <= k"):
        best_of_n_weights(4, 5)


@pytest.mark.parametrize("seed", range(5))
def test_expected_best_of_n_matches_every_subset_enumerated(seed):
    rng = random.Random(seed)
    k = 7
    selector = [rng.choice([0.0, 0.5, 1.0, rng.random()]) for _ in range(k)]  # with ties
    values = [rng.random() for _ in range(k)]
    for n in range(1, k + 1):
        assert best_of_n_expected(selector, values, n) == pytest.approx(brute_force(selector, values, n), abs=1e-12)


def test_n_one_is_the_sample_mean_and_n_k_the_selectors_first_choice():
    selector, values = [0.2, 0.9, 0.9, 0.1], [1.0, 2.0, 3.0, 4.0]
    assert best_of_n_expected(selector, values, 1) == pytest.approx(2.5)
    assert best_of_n_expected(selector, values, 4) == 2.0  # the first of the two 0.9s
    # selecting by the value itself can only help as n grows
    gold = [best_of_n_expected(values, values, n) for n in range(1, 5)]
    assert gold == sorted(gold) and gold[-1] == 4.0


def test_curve_has_a_mean_and_standard_error_over_prompts_per_n():
    selector = [[0.0, 1.0], [1.0, 0.0], [0.0, 1.0]]
    values = [[0.0, 1.0], [0.0, 1.0], [1.0, 1.0]]
    rows = best_of_n_curve(selector, values, [1, 2])
    assert [r["n"] for r in rows] == [1, 2]
    assert rows[0]["mean"] == pytest.approx((0.5 + 0.5 + 1.0) / 3)
    per_prompt = [1.0, 0.0, 1.0]  # n = 2: the selector's choice
    assert rows[1]["mean"] == pytest.approx(2 / 3)
    assert rows[1]["se"] == pytest.approx(statistics.stdev(per_prompt) / math.sqrt(3))
    assert rows[1]["kl"] == pytest.approx(best_of_n_kl(2))
    with pytest.raises(ValueError, match="prompts"):
        best_of_n_curve([], [], [1])
