"""PPO math against hand-computed literals and independent float64 loops written here."""

import dataclasses
import math
import statistics

import pytest
import torch

from almost.ppo import (
    AdaptiveKLController,
    FixedKLController,
    RunningMoments,
    entropy_from_logits,
    explained_variance,
    gae_advantages,
    kl_estimate,
    masked_mean,
    masked_var,
    masked_whiten,
    per_token_rewards,
    policy_loss,
    value_loss,
)
from almost.logprobs import token_logprobs
from almost.rollout import Rollout

F64 = torch.float64
# rows of different lengths: 3 tokens, 1 token (ends at its first token), full, then padding-only
MASK = torch.tensor([[1, 1, 1, 0, 0], [1, 0, 0, 0, 0], [1, 1, 1, 1, 1], [0, 0, 0, 0, 0]])


def perturb_padding(x: torch.Tensor, mask: torch.Tensor, value: float = 1e6) -> torch.Tensor:
    """``x`` with every padded position replaced by ``value``."""
    return torch.where(mask.bool(), x, torch.full_like(x, value))


# --- log-probs and entropy ---------------------------------------------------------------------------


def reference_logprob(row: list[float], token: int, temperature: float) -> float:
    log_z = math.log(sum(math.exp(v / temperature) for v in row))
    return row[token] / temperature - log_z


@pytest.mark.parametrize("temperature", [1.0, 0.7, 1.5])
def test_token_logprobs_matches_loop(temperature):
    torch.manual_seed(0)
    logits = torch.randn(2, 3, 6, dtype=F64) * 3
    tokens = torch.tensor([[0, 5, 2], [3, 3, 1]])
    before = logits.clone()
    out = token_logprobs(logits, tokens, temperature)
    assert out.shape == (2, 3)
    for b in range(2):
        for t in range(3):
            expected = reference_logprob(logits[b, t].tolist(), tokens[b, t].item(), temperature)
            assert abs(out[b, t].item() - expected) < 1e-12
    assert torch.equal(logits, before)  # the caller's logits are never written


def test_logprobs_from_bfloat16_logits_upcast_and_unchanged():
    torch.manual_seed(1)
    logits = (torch.randn(1, 4, 8) * 4).to(torch.bfloat16)
    tokens = torch.tensor([[1, 7, 0, 3]])
    before = logits.clone()
    out = token_logprobs(logits, tokens, temperature=0.5)
    assert out.dtype == torch.float32
    for t in range(4):
        expected = reference_logprob(logits[0, t].double().tolist(), tokens[0, t].item(), 0.5)
        assert abs(out[0, t].item() - expected) < 1e-5
    assert torch.equal(logits, before)


def test_logprobs_rejects_non_positive_temperature():
    with pytest.raises(ValueError):
        token_logprobs(torch.zeros(1, 1, 2), torch.zeros(1, 1, dtype=torch.long), temperature=0.0)


def test_entropy_from_logits_matches_loop_and_ignores_padding():
    torch.manual_seed(2)
    logits = torch.randn(4, 5, 3, dtype=F64)
    entropies = []
    for b in range(4):
        for t in range(5):
            if MASK[b, t]:
                z = sum(math.exp(v) for v in logits[b, t].tolist())
                entropies.append(-sum(math.exp(v) / z * (v - math.log(z)) for v in logits[b, t].tolist()))
    expected = sum(entropies) / len(entropies)
    assert abs(entropy_from_logits(logits, MASK).item() - expected) < 1e-12
    garbage = torch.where(MASK.bool().unsqueeze(-1), logits, torch.tensor([50.0, -50.0, 0.0], dtype=F64))
    assert abs(entropy_from_logits(garbage, MASK).item() - expected) < 1e-12
    uniform = torch.zeros(1, 2, 4)
    assert abs(entropy_from_logits(uniform, torch.ones(1, 2)).item() - math.log(4)) < 1e-6


# --- masked statistics -------------------------------------------------------------------------------

X = torch.tensor([[1.0, 2.0, 100.0], [4.0, float("nan"), float("inf")]], dtype=F64)
X_MASK = torch.tensor([[1, 1, 0], [1, 0, 0]])  # real values 1, 2, 4: mean 7/3


def test_masked_mean_hand_computed():
    assert abs(masked_mean(X, X_MASK).item() - 7 / 3) < 1e-12
    assert masked_mean(X, X_MASK, dim=1).tolist() == [1.5, 4.0]
    assert masked_mean(X, X_MASK, dim=0).tolist() == [2.5, 2.0, 0.0]  # empty column: 0, not NaN
    assert masked_mean(X, torch.zeros_like(X_MASK)).item() == 0.0


def test_masked_var_hand_computed():
    # deviations -4/3, -1/3, 5/3 -> squares sum to 42/9 = 14/3
    assert abs(masked_var(X, X_MASK).item() - 7 / 3) < 1e-12  # / (n - 1)
    assert abs(masked_var(X, X_MASK, unbiased=False).item() - 14 / 9) < 1e-12  # / n
    assert masked_var(X, torch.tensor([[1, 0, 0], [0, 0, 0]])).item() == 0.0  # one element


@pytest.mark.parametrize("shift_mean", [True, False])
def test_masked_whiten_hand_computed_and_ignores_padding(shift_mean):
    out = masked_whiten(X, X_MASK, shift_mean=shift_mean)
    scale = 1 / math.sqrt(7 / 3 + 1e-8)
    shift = 0.0 if shift_mean else 7 / 3
    expected = [[(1 - 7 / 3) * scale + shift, (2 - 7 / 3) * scale + shift, 0.0],
                [(4 - 7 / 3) * scale + shift, 0.0, 0.0]]
    assert torch.allclose(out, torch.tensor(expected, dtype=F64), atol=1e-12)
    assert torch.equal(masked_whiten(perturb_padding(X, X_MASK, -3.0), X_MASK, shift_mean=shift_mean), out)
    if shift_mean:
        real = out[X_MASK.bool()]
        assert abs(real.mean().item()) < 1e-12 and abs(real.std().item() - 1) < 1e-6


# --- KL estimators and rewards -----------------------------------------------------------------------


def test_kl_estimators_hand_computed():
    logp = torch.tensor([-1.0, -2.0], dtype=F64)
    ref = torch.tensor([-1.5, -1.0], dtype=F64)  # log r = ref - logp = -0.5, 1.0
    assert kl_estimate(logp, ref).tolist() == [0.5, -1.0]
    assert kl_estimate(logp, ref, "k2").tolist() == [0.125, 0.5]
    k3 = kl_estimate(logp, ref, "k3")
    assert abs(k3[0].item() - (math.exp(-0.5) - 1 + 0.5)) < 1e-15
    assert abs(k3[1].item() - (math.e - 2)) < 1e-15
    with pytest.raises(ValueError):
        kl_estimate(logp, ref, "k4")


def test_k1_and_k3_are_unbiased_and_k3_non_negative():
    # exact expectation over x ~ p of a small categorical equals KL(p || q)
    p = [0.5, 0.3, 0.2]
    q = [0.2, 0.2, 0.6]
    kl = sum(pi * math.log(pi / qi) for pi, qi in zip(p, q))
    logp, logq = torch.tensor(p, dtype=F64).log(), torch.tensor(q, dtype=F64).log()
    for kind in ("k1", "k3"):
        per_token = kl_estimate(logp, logq, kind)
        assert abs(sum(pi * k for pi, k in zip(p, per_token.tolist())) - kl) < 1e-12
    assert (kl_estimate(logp, logq, "k3") >= 0).all()


def test_per_token_rewards_against_loop():
    scores = torch.tensor([2.0, -1.0, 0.5, 3.0], dtype=F64)
    kl = torch.arange(20, dtype=F64).reshape(4, 5) / 10 - 0.5
    rewards = per_token_rewards(scores, kl, MASK, kl_coef=0.1)
    expected = torch.zeros(4, 5, dtype=F64)
    for b in range(4):
        length = int(MASK[b].sum())
        for t in range(length):
            expected[b, t] = -0.1 * kl[b, t].item() + (scores[b].item() if t == length - 1 else 0.0)
    assert torch.allclose(rewards, expected, atol=1e-12)
    assert abs(rewards[1, 0].item() - (-0.1 * 0.0 - 1.0)) < 1e-12  # length 1: score on the first token
    assert rewards[3].tolist() == [0.0] * 5  # no real token: no score, not even at position 0
    assert torch.equal(per_token_rewards(scores, perturb_padding(kl, MASK, float("nan")), MASK, 0.1), rewards)


# --- GAE ---------------------------------------------------------------------------------------------


def reference_gae(rewards, values, gamma, lam):
    """Plain-list GAE over one unpadded episode."""
    advantages, next_value, next_advantage = [0.0] * len(rewards), 0.0, 0.0
    for t in reversed(range(len(rewards))):
        delta = rewards[t] + gamma * next_value - values[t]
        next_advantage = delta + gamma * lam * next_advantage
        advantages[t], next_value = next_advantage, values[t]
    return advantages, [a + v for a, v in zip(advantages, values)]


@pytest.mark.parametrize(
    "gamma, lam, hand_advantages, hand_returns",
    [
        # deltas 0, 0.2, 0.2; A2 = 0.2, A1 = 0.2 + 0.95 * 0.2, A0 = 0 + 0.95 * 0.39
        (1.0, 0.95, [0.3705, 0.39, 0.2], [0.8705, 0.79, 1.0]),
        # deltas 0.1 + 0.36 - 0.5 = -0.04, -0.2 + 0.72 - 0.4 = 0.12, 0.2; gamma * lam = 0.45
        (0.9, 0.5, [0.0545, 0.21, 0.2], [0.5545, 0.61, 1.0]),
    ],
)
def test_gae_hand_worked_three_tokens_in_padded_batch(gamma, lam, hand_advantages, hand_returns):
    torch.manual_seed(3)
    rewards = torch.randn(4, 5, dtype=F64)
    values = torch.randn(4, 5, dtype=F64)
    rewards[0, :3] = torch.tensor([0.1, -0.2, 1.0])
    values[0, :3] = torch.tensor([0.5, 0.4, 0.8])
    advantages, returns = gae_advantages(rewards, values, MASK, gamma, lam)
    assert torch.allclose(advantages[0, :3], torch.tensor(hand_advantages, dtype=F64), atol=1e-12)
    assert torch.allclose(returns[0, :3], torch.tensor(hand_returns, dtype=F64), atol=1e-12)
    for b in range(4):
        length = int(MASK[b].sum())
        ref_adv, ref_ret = reference_gae(rewards[b, :length].tolist(), values[b, :length].tolist(), gamma, lam)
        assert torch.allclose(advantages[b, :length], torch.tensor(ref_adv, dtype=F64), atol=1e-12)
        assert torch.allclose(returns[b, :length], torch.tensor(ref_ret, dtype=F64), atol=1e-12)
    assert (advantages[MASK == 0] == 0).all() and (returns[MASK == 0] == 0).all()
    # length-1 response: A = r - V (the value after the last token is 0)
    assert abs(advantages[1, 0].item() - (rewards[1, 0] - values[1, 0]).item()) < 1e-12
    # padding leaks nothing
    garbage_rewards, garbage_values = perturb_padding(rewards, MASK), perturb_padding(values, MASK, float("nan"))
    perturbed = gae_advantages(garbage_rewards, garbage_values, MASK, gamma, lam)
    assert torch.equal(perturbed[0], advantages) and torch.equal(perturbed[1], returns)


# --- losses ------------------------------------------------------------------------------------------


def test_policy_loss_clipping_engages():
    clip = 0.2
    # (A, ratio): clipped branch taken for (1, 1.5) and (-1, 0.5); inside the band for (2, 1.1)
    advantages = torch.tensor([[1.0, 1.0, -1.0], [-1.0, 2.0, 7.0]], dtype=F64)
    ratios = torch.tensor([[1.5, 0.5, 1.5], [0.5, 1.1, 1.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 1, 0]])
    old = torch.tensor([[-1.0, -2.0, -0.5], [-3.0, -1.2, -0.1]], dtype=F64)
    logprobs = (old + ratios.log()).requires_grad_()
    padded_logprobs = perturb_padding(logprobs.detach(), mask, 1e4).requires_grad_()  # ratio would overflow
    loss, stats = policy_loss(padded_logprobs, old, advantages, mask, clip)
    # per token max(-A r, -A clip(r)): -1.2, -0.5, 1.5, 0.8, -2.2
    assert abs(loss.item() - (-1.2 - 0.5 + 1.5 + 0.8 - 2.2) / 5) < 1e-12
    assert stats.clipfrac.item() == 2 / 5
    logs = [math.log(1.5), math.log(0.5), math.log(1.5), math.log(0.5), math.log(1.1)]
    assert abs(stats.approx_kl.item() - sum(0.5 * v * v for v in logs) / 5) < 1e-12
    assert abs(stats.ratio.item() - (1.5 + 0.5 + 1.5 + 0.5 + 1.1) / 5) < 1e-12
    assert not stats.clipfrac.requires_grad and not stats.approx_kl.requires_grad
    loss.backward()
    # d/dlogp of -A r is -A r on unclipped tokens; 0 where the clipped branch is taken and on padding
    expected_grad = torch.tensor([[0.0, -0.5, 1.5], [0.0, -2.2, 0.0]], dtype=F64) / 5
    assert torch.allclose(padded_logprobs.grad, expected_grad, atol=1e-12)


def test_policy_loss_without_clipping_is_plain_surrogate():
    advantages = torch.tensor([[0.5, -2.0, 1.0]], dtype=F64)
    ratios = torch.tensor([[1.1, 0.9, 1.0]], dtype=F64)
    old = torch.zeros(1, 3, dtype=F64)
    loss, stats = policy_loss(ratios.log(), old, advantages, torch.ones(1, 3), clip=0.2)
    assert abs(loss.item() - (-0.55 + 1.8 - 1.0) / 3) < 1e-12
    assert stats.clipfrac.item() == 0.0


def test_value_loss_clipping_both_ways():
    clip = 0.2
    old = torch.ones(2, 3, dtype=F64)
    values = torch.tensor([[1.5, 0.5, 1.5], [1.1, 9.0, 9.0]], dtype=F64)
    returns = torch.tensor([[2.0, 0.0, 1.0], [3.0, 9.0, 9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 1], [1, 0, 0]])
    # up: v 1.5 -> 1.2, R 2: max(0.25, 0.64); down: v 0.5 -> 0.8, R 0: max(0.25, 0.64)
    # clipped but not taken: v 1.5 -> 1.2, R 1: max(0.25, 0.04); inside the band: (1.1 - 3)^2 = 3.61
    loss, stats = value_loss(values, old, returns, mask, clip)
    assert abs(loss.item() - 0.5 * (0.64 + 0.64 + 0.25 + 3.61) / 4) < 1e-12
    assert stats.value_clipfrac.item() == 0.5
    perturbed, _ = value_loss(perturb_padding(values, mask, float("inf")), old, returns, mask, clip)
    assert perturbed.item() == loss.item()
    unclipped, stats = value_loss(values, old, returns, mask, clip=100.0)
    assert abs(unclipped.item() - 0.5 * (0.25 + 0.25 + 0.25 + 3.61) / 4) < 1e-12 and stats.value_clipfrac.item() == 0


def test_explained_variance_against_statistics_module():
    torch.manual_seed(4)
    returns = torch.randn(4, 5, dtype=F64)
    values = returns + 0.3 * torch.randn(4, 5, dtype=F64)
    real = MASK.bool()
    r, v = returns[real].tolist(), values[real].tolist()
    expected = 1 - statistics.variance([a - b for a, b in zip(r, v)]) / statistics.variance(r)
    out = explained_variance(values, returns, MASK)
    assert abs(out.item() - expected) < 1e-12
    garbage = explained_variance(perturb_padding(values, MASK), perturb_padding(returns, MASK, -7.0), MASK)
    assert garbage.item() == out.item()
    assert abs(explained_variance(returns, returns, MASK).item() - 1.0) < 1e-12


# --- controllers and running moments -----------------------------------------------------------------


def test_adaptive_kl_controller_exact_updates():
    up = AdaptiveKLController(init_kl_coef=0.2, target=6.0, horizon=10000)
    up.update(current_kl=9.0, n_steps=256)  # error 0.5 clipped to 0.2
    assert abs(up.value - 0.2 * (1 + 0.2 * 256 / 10000)) < 1e-15
    down = AdaptiveKLController(0.2, 6.0, 10000)
    down.update(current_kl=5.4, n_steps=256)  # error -0.1
    assert abs(down.value - 0.2 * (1 - 0.1 * 256 / 10000)) < 1e-15
    floor = AdaptiveKLController(0.2, 6.0, 10000)
    floor.update(current_kl=0.0, n_steps=256)  # error -1 clipped to -0.2
    assert abs(floor.value - 0.2 * (1 - 0.2 * 256 / 10000)) < 1e-15
    restored = AdaptiveKLController(1.0, 6.0, 10000)
    restored.load_state_dict(up.state_dict())
    assert restored.value == up.value


def test_fixed_kl_controller_never_moves():
    fixed = FixedKLController(0.05)
    fixed.update(current_kl=100.0, n_steps=1000)
    assert fixed.value == 0.05
    fixed.load_state_dict({"value": 0.1})
    assert fixed.value == 0.1 and fixed.state_dict() == {"value": 0.1}


def test_running_moments_equal_statistics_of_all_data_seen():
    torch.manual_seed(5)
    batches = [torch.randn(7) * 3 + 1, torch.randn(2, 3) - 4, torch.randn(1), torch.randn(20) * 0.1]
    moments, seen = RunningMoments(), []
    assert moments.std == 1.0  # nothing seen yet: safe divisor
    for batch in batches:
        moments.update(batch)
        seen += batch.double().flatten().tolist()
        assert abs(moments.mean - statistics.fmean(seen)) < 1e-12
        assert abs(moments.std - statistics.stdev(seen)) < 1e-12
        assert moments.count == len(seen)
    restored = RunningMoments()
    restored.load_state_dict(moments.state_dict())
    extra = torch.tensor([10.0, -10.0])
    restored.update(extra)
    seen += extra.tolist()
    assert abs(restored.mean - statistics.fmean(seen)) < 1e-12
    assert abs(restored.std - statistics.stdev(seen)) < 1e-12


# --- rollout container -------------------------------------------------------------------------------


def test_rollout_rows_selects_rows_and_is_frozen():
    B, P, T = 4, 3, 5
    per_token = {name: torch.randn(B, T, dtype=F64) for name in ("logprobs", "ref_logprobs", "values")}
    rollout = Rollout(
        query_ids=torch.arange(B * P).reshape(B, P), query_mask=torch.ones(B, P), response_ids=torch.zeros(B, T),
        response_mask=MASK, scores=torch.tensor([0.0, 1.0, 2.0, 3.0]), **per_token,
    )
    rollout = dataclasses.replace(rollout, advantages=torch.ones(B, T))
    mb = rollout.rows(torch.tensor([2, 0]))
    assert mb.batch_size == 2 and rollout.batch_size == 4
    assert mb.scores.tolist() == [2.0, 0.0]
    assert torch.equal(mb.response_mask, MASK[[2, 0]]) and torch.equal(mb.query_ids, rollout.query_ids[[2, 0]])
    assert mb.advantages.shape == (2, T) and mb.rewards is None and mb.returns is None
    with pytest.raises(dataclasses.FrozenInstanceError):
        rollout.scores = torch.zeros(B)


# --- rollout positions, sequence KL, score shaping ------------------------------------------------------


def test_response_outputs_are_the_positions_before_each_response_token():
    from almost.rollout import response_outputs

    per_position = torch.arange(2 * 7).reshape(2, 7)  # P = 3 prompt positions + T = 4 response positions
    assert response_outputs(per_position, 3, 4).tolist() == [[2, 3, 4, 5], [9, 10, 11, 12]]
    with pytest.raises(ValueError, match="expected 6 positions, got 7"):
        response_outputs(per_position, 3, 3)


def test_sequence_kl_sums_log_ratios_over_real_tokens_only():
    from almost.rollout import sequence_kl

    logprobs = torch.tensor([[-1.0, -2.0, 5.0], [-0.5, 7.0, 7.0]], dtype=F64)
    ref = torch.tensor([[-1.5, -1.0, -9.0], [-0.25, -9.0, -9.0]], dtype=F64)
    mask = torch.tensor([[1, 1, 0], [1, 0, 0]])
    assert sequence_kl(logprobs, ref, mask).tolist() == [0.5 - 1.0, -0.25]


def test_shape_scores_penalises_then_standardises_then_clips_each_step_optional():
    from almost.rollout import shape_scores

    scores = torch.tensor([2.0, 6.0, -4.0], dtype=F64)
    finished = torch.tensor([True, False, True])
    assert shape_scores(scores, finished).tolist() == [2.0, 6.0, -4.0]
    assert shape_scores(scores, finished, missing_eos_penalty=-1.0).tolist() == [2.0, -1.0, -4.0]
    assert shape_scores(scores, finished, mean_std=(2.0, 4.0)).tolist() == [0.0, 1.0, -1.5]
    assert shape_scores(scores, finished, -1.0, (2.0, 4.0), clip=1.0).tolist() == [0.0, -0.75, -1.0]
