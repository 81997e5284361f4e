import math

import pytest
import torch

from almost.evaluation.metrics import (WinTieLoss, ab_accuracy, ab_choice_probability, longer_wins_accuracy, mc1, mc2,
                                       perplexity, preference_accuracy, sliding_window_nll, win_tie_loss,
                                       win_tie_loss_from_verdicts)

ln = math.log

# ------------------------------------------------------------------------------------------ TruthfulQA


def test_mc1_mc2_two_questions():
    # question 1: the true answer scores best; mc2 probabilities 0.2 + 0.1 true vs 0.3 + 0.4 false -> 0.3
    q1_mc1 = mc1([-1.0], [-2.0, -3.0])
    q1_mc2 = mc2([ln(0.2), ln(0.1)], [ln(0.3), ln(0.4)])
    # question 2: a false answer scores best; mc2 0.05 true vs 0.15 + 0.05 false -> 0.2
    q2_mc1 = mc1([-2.5], [-0.5, -4.0])
    q2_mc2 = mc2([ln(0.05)], [ln(0.15), ln(0.05)])
    assert (q1_mc1, q2_mc1) == (1.0, 0.0)
    assert q1_mc2 == pytest.approx(0.3) and q2_mc2 == pytest.approx(0.2)
    assert (q1_mc1 + q2_mc1) / 2 == 0.5 and (q1_mc2 + q2_mc2) / 2 == pytest.approx(0.25)


def test_mc2_is_stable_and_mc1_tie_is_a_miss():
    # exp(-1000) underflows to 0: a naive ratio would be 0/0; the true mass is 1 / (1 + 1/3)
    assert mc2([-1000.0], [-1000.0 - ln(3)]) == pytest.approx(0.75)
    assert mc2([-1000.0], [-2.0]) == pytest.approx(0.0, abs=1e-300)
    assert mc1([-1.0], [-1.0, -5.0]) == 0.0
    with pytest.raises(ValueError, match="exactly one true"):
        mc1([-1.0, -2.0], [-3.0])
    with pytest.raises(ValueError, match="at least one true and one false"):
        mc2([-1.0], [])


# ------------------------------------------------------------------------------------------ A/B


def test_ab_choice_probability_by_hand():
    # better as A: P(A)=0.8, P(B)=0.2 -> 0.8; better as B: 0.3 vs 0.6 (unnormalised) -> 0.6 / 0.9 = 2/3
    assert ab_choice_probability((ln(0.8), ln(0.2)), (ln(0.3), ln(0.6))) == pytest.approx((0.8 + 2 / 3) / 2)
    # extreme margins do not overflow
    assert ab_choice_probability((0.0, -2000.0), (0.0, -2000.0)) == pytest.approx(0.5)
    assert ab_choice_probability((-2000.0, 0.0), (0.0, -2000.0)) == 0.0


def test_position_biased_model_scores_chance():
    always_a = [(ln(0.9), ln(0.1))] * 4
    # read in one order only, a model that always says "A" looks perfect...
    assert all(ab_choice_probability(a, (ln(0.1), ln(0.9))) > 0.5 for a in always_a)
    # ...averaged over both orders its choice probability is exactly 0.5 on every example: a tie, so chance
    # accuracy with the default half credit, and 0 when ties earn nothing
    assert ab_choice_probability(always_a[0], always_a[0]) == pytest.approx(0.5)
    assert ab_accuracy(always_a, always_a) == 0.5
    assert ab_accuracy(always_a, always_a, tie_credit=0.0) == 0.0


def test_ab_accuracy_mixed():
    better_as_a = [(ln(0.8), ln(0.2)), (ln(0.9), ln(0.1)), (ln(0.9), ln(0.1))]
    better_as_b = [(ln(0.3), ln(0.6)), (ln(0.85), ln(0.15)), (ln(0.95), ln(0.05))]
    # averaged probabilities: 0.733 (right), (0.9 + 0.15) / 2 = 0.525 (right), (0.9 + 0.05) / 2 = 0.475 (wrong)
    assert ab_accuracy(better_as_a, better_as_b) == pytest.approx(2 / 3)
    with pytest.raises(ValueError, match="same length"):
        ab_accuracy(better_as_a, better_as_b[:2])


# ------------------------------------------------------------------------------------------ win / tie / loss


def test_win_tie_loss_scores():
    x, y = [3.0, 2.0, 5.0, 1.0, 4.0], [1.0, 2.0, 4.5, 3.0, 4.0]
    result = win_tie_loss(x, y)
    assert result == WinTieLoss(win=2, tie=2, loss=1)
    assert (result.n, result.win_rate, result.tie_rate, result.loss_rate) == (5, 0.4, 0.4, 0.2)
    # a difference of exactly the margin is a tie
    assert win_tie_loss(x, y, tie_margin=0.5) == WinTieLoss(win=1, tie=3, loss=1)
    with pytest.raises(ValueError, match="tie_margin"):
        win_tie_loss(x, y, tie_margin=-1.0)


def test_win_tie_loss_from_verdicts_both_orders():
    x_first = ["first", "first", "second", "tie", "first"]
    y_first = ["second", "first", "first", "second", "second"]
    # agree on x, disagree (position bias), agree on y, one tie, agree on x
    assert win_tie_loss_from_verdicts(x_first, y_first) == WinTieLoss(win=2, tie=2, loss=1)
    assert win_tie_loss_from_verdicts(["first"] * 3, ["first"] * 3) == WinTieLoss(win=0, tie=3, loss=0)
    with pytest.raises(ValueError, match=r"y_shown_first\[1\] is 'A'"):
        win_tie_loss_from_verdicts(["first", "first"], ["second", "A"])


# ------------------------------------------------------------------------------------------ preferences


def test_preference_and_length_accuracy():
    # right, tie, wrong, right
    assert preference_accuracy([1.0, 0.5, 2.0, -1.0], [0.0, 0.5, 3.0, -2.0]) == 2.5 / 4
    assert preference_accuracy([1.0, 0.5, 2.0, -1.0], [0.0, 0.5, 3.0, -2.0], tie_credit=0.0) == 2 / 4
    # chosen longer, chosen shorter, equal length
    assert longer_wins_accuracy(["abcd", "ab", "abc"], ["a", "abcd", "xyz"]) == 1.5 / 3
    # measured in words: 3 vs 1 words right, 1 vs 2 wrong
    assert longer_wins_accuracy(["a b c", "abcdef"], ["abcdefgh", "a b"], length=lambda t: len(t.split())) == 0.5
    with pytest.raises(ValueError, match="empty"):
        preference_accuracy([], [])


# ------------------------------------------------------------------------------------------ perplexity


def uniform_model(vocab_size: int):
    def logprob_fn(input_ids: torch.Tensor) -> torch.Tensor:
        return torch.full((1, input_ids.shape[1] - 1), -math.log(vocab_size))
    return logprob_fn


def context_length_model(calls: list):
    """log p(target) = -0.1 * (number of context tokens the target sees in this call)."""
    def logprob_fn(input_ids: torch.Tensor) -> torch.Tensor:
        calls.append(input_ids[0].tolist())
        T = input_ids.shape[1]
        return -0.1 * torch.arange(1, T, dtype=torch.float64).unsqueeze(0)
    return logprob_fn


def token_id_model(input_ids: torch.Tensor) -> torch.Tensor:
    """log p(target) = -0.01 * target id, whatever the context."""
    return -0.01 * input_ids[:, 1:].double()


@pytest.mark.parametrize("window, stride", [(2, 1), (4, 1), (4, 3), (5, 2), (50, 10)])
def test_uniform_model_perplexity_is_vocab_size(window, stride):
    total, n = sliding_window_nll(list(range(17)), window, stride, uniform_model(7))
    assert n == 16
    assert perplexity(total, n) == pytest.approx(7.0)


@pytest.mark.parametrize("window, stride", [(2, 1), (3, 1), (3, 2), (4, 3), (5, 2), (16, 15), (40, 7)])
def test_every_token_after_the_first_is_scored_once(window, stride):
    ids = [5, 1, 9, 3, 7, 2, 8, 4, 6, 10, 11, 0, 12, 13, 3, 5]
    total, n = sliding_window_nll(ids, window, stride, token_id_model)
    assert n == 15
    assert total == pytest.approx(0.01 * sum(ids[1:]))  # 0.01 * 104


def test_windowing_by_hand():
    ids = [10, 11, 12, 13, 14, 15, 16]
    calls = []
    total, n = sliding_window_nll(ids, window=4, stride=2, logprob_fn=context_length_model(calls))
    # call 1 on tokens 0..3 scores tokens 1, 2, 3 with 1, 2, 3 context tokens; call 2 on tokens 2..5 scores
    # tokens 4, 5 with 2, 3; call 3 on tokens 3..6 scores token 6 with 3: 0.1 * (1+2+3+2+3+3)
    assert calls == [[10, 11, 12, 13], [12, 13, 14, 15], [13, 14, 15, 16]]
    assert (total, n) == (pytest.approx(1.4), 6)
    calls.clear()
    total, n = sliding_window_nll(list(range(8)), window=4, stride=3, logprob_fn=context_length_model(calls))
    # contexts 1, 2, 3 | 1, 2, 3 (tokens 4-6 from call on 3..6) | 3 (token 7 from call on 4..7)
    assert calls == [[0, 1, 2, 3], [3, 4, 5, 6], [4, 5, 6, 7]]
    assert (total, n) == (pytest.approx(1.5), 7)


def test_sliding_window_edge_cases():
    calls = []
    assert sliding_window_nll([1, 2, 3], window=8, stride=4, logprob_fn=context_length_model(calls)) == (
        pytest.approx(0.3), 2)
    assert calls == [[1, 2, 3]]  # a sequence shorter than the window: one call
    assert sliding_window_nll([4], window=4, stride=2, logprob_fn=token_id_model) == (0.0, 0)
    with pytest.raises(ValueError, match="at least one scored token"):
        perplexity(0.0, 0)
    for window, stride in ((4, 4), (4, 0), (1, 1)):
        with pytest.raises(ValueError, match="1 <= stride < window"):
            sliding_window_nll([1, 2, 3], window, stride, token_id_model)
    with pytest.raises(ValueError, match=r"returned shape \(1, 3\) for input \(1, 3\)"):
        sliding_window_nll([1, 2, 3], 4, 2, lambda ids: ids.double())
