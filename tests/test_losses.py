"""Losses, last-token reads and the LR schedule against hand-computed float64 values."""

import math

import torch

from almost.chat import IGNORE_INDEX
from almost.losses import gather_last, last_token_index, preference_loss, response_logprobs, response_token_loss
from almost.schedule import warmup_cosine


def test_preference_loss_hand_computed():
    chosen = torch.tensor([1.0, 0.0, -2.0], dtype=torch.float64)
    rejected = torch.tensor([0.0, 0.0, 1.0], dtype=torch.float64)
    # -log sigmoid(d) = log(1 + exp(-d)) for d = 1, 0, -3
    expected = (math.log(1 + math.exp(-1)) + math.log(2) + math.log(1 + math.exp(3))) / 3
    assert abs(preference_loss(chosen, rejected).item() - expected) < 1e-12


def test_preference_loss_gradient_pushes_margin_up():
    chosen = torch.zeros(2, requires_grad=True)
    preference_loss(chosen, torch.zeros(2)).backward()
    assert torch.allclose(chosen.grad, torch.tensor([-0.25, -0.25]))  # -(1 - sigmoid(0)) / B


def test_last_token_index_left_and_right_padding():
    mask = torch.tensor([[1, 1, 1, 0, 0], [0, 0, 1, 1, 1], [1, 1, 1, 1, 1], [0, 0, 0, 0, 1]])
    assert last_token_index(mask).tolist() == [2, 4, 4, 4]
    values = torch.arange(20.0).reshape(4, 5)
    assert gather_last(values, mask).tolist() == [2.0, 9.0, 14.0, 19.0]


def test_response_token_loss_matches_manual_float64():
    torch.manual_seed(0)
    logits = torch.randn(2, 4, 5, dtype=torch.float64)
    labels = torch.tensor([[IGNORE_INDEX, IGNORE_INDEX, 3, 1], [IGNORE_INDEX, 2, IGNORE_INDEX, IGNORE_INDEX]])
    loss, n_tokens = response_token_loss(logits, labels)
    logp = logits.log_softmax(-1)
    # position t predicts labels[t + 1]: (row 0: t=1 -> 3, t=2 -> 1), (row 1: t=0 -> 2)
    expected = -(logp[0, 1, 3] + logp[0, 2, 1] + logp[1, 0, 2]) / 3
    assert n_tokens.item() == 3
    assert abs(loss.item() - expected.item()) < 1e-6  # the loss runs in float32


def test_response_logprobs_per_row():
    torch.manual_seed(1)
    logits = torch.randn(2, 3, 4, dtype=torch.float64)
    labels = torch.tensor([[IGNORE_INDEX, 1, 2], [IGNORE_INDEX, IGNORE_INDEX, IGNORE_INDEX]])
    logprob_sum, n_tokens = response_logprobs(logits, labels)
    logp = logits.log_softmax(-1)
    assert n_tokens.tolist() == [2, 0]
    assert abs(logprob_sum[0].item() - (logp[0, 0, 1] + logp[0, 1, 2]).item()) < 1e-6
    assert logprob_sum[1].item() == 0.0


def test_response_token_loss_without_labels_is_zero_not_nan():
    loss, n_tokens = response_token_loss(torch.randn(1, 3, 5), torch.full((1, 3), IGNORE_INDEX))
    assert n_tokens.item() == 0 and loss.item() == 0.0


def test_warmup_cosine_values():
    # 100 steps, 10 warmup: linear 0.1 .. 1.0, then cosine from 1 at step 10 to 0 at step 100
    assert warmup_cosine(0, 100, 10) == 0.1
    assert warmup_cosine(9, 100, 10) == 1.0
    assert warmup_cosine(10, 100, 10) == 1.0
    assert abs(warmup_cosine(55, 100, 10) - 0.5) < 1e-12  # halfway through the decay
    assert abs(warmup_cosine(100, 100, 10)) < 1e-12
    assert abs(warmup_cosine(100, 100, 10, min_ratio=0.1) - 0.1) < 1e-12
    assert warmup_cosine(0, 100, 0) == 1.0
