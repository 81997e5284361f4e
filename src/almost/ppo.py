"""PPO with a KL penalty for RLHF, as pure tensor functions (Ziegler et al. 2019, arXiv:1909.08593;
Ouyang et al. 2022, arXiv:2203.02155; PPO: Schulman et al. 2017, arXiv:1707.06347).

Shapes: ``B`` batch, ``T`` response length (tokens generated after the prompt), ``V`` vocabulary.
Mask convention: ``response_mask`` ``(B, T)`` is 1 on real response tokens (the EOS token included)
and 0 on the padding that follows the end of a response. Values at padded positions may be anything
(even inf/NaN): every function here selects with ``torch.where`` so they never reach a result.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Literal, NamedTuple

import torch

from almost.logprobs import upcast
from almost.losses import last_token_index


def masked_mean(x: torch.Tensor, mask: torch.Tensor, dim: int | None = None) -> torch.Tensor:
    """``sum(x * mask) / sum(mask)`` over all elements (``dim=None``) or along ``dim``.

    ``x``, ``mask`` same shape. An empty mask gives 0 rather than NaN.
    """
    keep = mask.bool()
    total = torch.where(keep, x, 0).sum() if dim is None else torch.where(keep, x, 0).sum(dim)
    count = keep.sum() if dim is None else keep.sum(dim)
    return total / count.clamp(min=1)


def masked_var(x: torch.Tensor, mask: torch.Tensor, unbiased: bool = True) -> torch.Tensor:
    """Variance of the real elements of ``x`` -> scalar.

    ``var = sum(mask * (x - mean)^2) / (n - 1)`` (``n`` with ``unbiased=False``), ``n = sum(mask)``.
    A single real element gives 0 (the Bessel denominator is clamped to 1).
    """
    keep = mask.bool()
    centered = torch.where(keep, x - masked_mean(x, mask), 0)
    n = keep.sum()
    denominator = (n - 1).clamp(min=1) if unbiased else n.clamp(min=1)
    return centered.square().sum() / denominator


def masked_whiten(x: torch.Tensor, mask: torch.Tensor, shift_mean: bool = True, eps: float = 1e-8) -> torch.Tensor:
    """``(x - mean) / sqrt(var + eps)`` with masked (unbiased) mean and variance; 0 on masked positions.

    With ``shift_mean=False`` the mean is added back (only the scale changes). Shapes as ``x``.
    """
    mean, var = masked_mean(x, mask), masked_var(x, mask)
    whitened = (x - mean) * torch.rsqrt(var + eps)
    if not shift_mean:
        whitened = whitened + mean
    return torch.where(mask.bool(), whitened, 0)


def kl_estimate(
    logprobs: torch.Tensor, ref_logprobs: torch.Tensor, kind: Literal["k1", "k2", "k3"] = "k1"
) -> torch.Tensor:
    """Per-token estimate of ``KL(pi || pi_ref)`` from tokens sampled from ``pi``, shapes ``(B, T)``.

    With ``log r = logp_ref - logp`` (http://joschu.net/blog/kl-approx.html):
    ``k1 = -log r`` (unbiased, may be negative), ``k2 = 0.5 (log r)^2``, ``k3 = (r - 1) - log r`` (unbiased, >= 0).
    """
    log_ratio = ref_logprobs - logprobs
    if kind == "k1":
        return -log_ratio
    if kind == "k2":
        return 0.5 * log_ratio.square()
    if kind == "k3":
        return torch.expm1(log_ratio) - log_ratio  # expm1: exact near r = 1
    raise ValueError(f"unknown KL estimator {kind!r} (expected 'k1', 'k2' or 'k3')")


def per_token_rewards(
    scores: torch.Tensor, kl: torch.Tensor, response_mask: torch.Tensor, kl_coef: float
) -> torch.Tensor:
    """Rewards of the KL-penalised objective, ``(B, T)``.

    ``r_t = -kl_coef * kl_t`` on every real token, plus ``scores`` ``(B,)`` at the last real token of each
    row (the EOS, or the last token of a truncated response); 0 on padding. A row without real tokens
    gets no score at all. ``kl``, ``response_mask`` ``(B, T)``.
    """
    keep = response_mask.bool()
    rewards = torch.where(keep, -kl_coef * kl, 0)
    last = last_token_index(response_mask).unsqueeze(-1)  # (B, 1)
    score = torch.where(keep.any(-1), scores.to(rewards.dtype), 0).unsqueeze(-1)  # (B, 1)
    return rewards.scatter_add(-1, last, score)


@torch.no_grad()
def gae_advantages(
    rewards: torch.Tensor, values: torch.Tensor, response_mask: torch.Tensor, gamma: float, lam: float
) -> tuple[torch.Tensor, torch.Tensor]:
    """Generalised advantage estimation (Schulman et al. 2016, arXiv:1506.02438), no gradient.

    ``rewards``, ``values``, ``response_mask`` ``(B, T)`` -> ``(advantages, returns)``, both ``(B, T)``, 0 on
    padding. The episode ends at the last real token: the value after it is 0. Reversed loop over time:
    ``delta_t = r_t + gamma * V_{t+1} - V_t``;  ``A_t = delta_t + gamma * lam * A_{t+1}``;  ``R_t = A_t + V_t``,
    where ``t+1`` is the next real token (padded positions are skipped, so they leak nothing).
    """
    keep = response_mask.bool()
    rewards, values = torch.where(keep, rewards, 0), torch.where(keep, values, 0)
    advantages = torch.zeros_like(values)
    next_value = torch.zeros_like(values[:, 0])  # (B,)
    next_advantage = torch.zeros_like(values[:, 0])  # (B,)
    for t in reversed(range(values.shape[1])):
        delta = rewards[:, t] + gamma * next_value - values[:, t]
        advantage = delta + gamma * lam * next_advantage
        advantages[:, t] = torch.where(keep[:, t], advantage, 0)
        next_value = torch.where(keep[:, t], values[:, t], next_value)
        next_advantage = torch.where(keep[:, t], advantage, next_advantage)
    returns = torch.where(keep, advantages + values, 0)
    return advantages, returns


class PolicyLossStats(NamedTuple):
    """Detached scalars for logging (``ppo/...``)."""

    clipfrac: torch.Tensor  # fraction of real tokens where the clipped branch is taken
    approx_kl: torch.Tensor  # masked mean of 0.5 * (logp - old_logp)^2 (k2 estimate of KL(old || new))
    ratio: torch.Tensor  # masked mean of pi / pi_old


class ValueLossStats(NamedTuple):
    """Detached scalars for logging (``ppo/...``)."""

    value_clipfrac: torch.Tensor  # fraction of real tokens where the clipped value's error is the larger


def policy_loss(
    logprobs: torch.Tensor,
    old_logprobs: torch.Tensor,
    advantages: torch.Tensor,
    response_mask: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, PolicyLossStats]:
    """PPO clipped surrogate, masked mean over real tokens -> ``(loss, stats)``; inputs ``(B, T)``.

    ``ratio = exp(logp - logp_old)``;  ``loss_t = max(-A_t * ratio, -A_t * clamp(ratio, 1 - clip, 1 + clip))``.
    """
    keep = response_mask.bool()
    log_ratio = torch.where(keep, logprobs - old_logprobs, 0)  # padding: ratio 1, no overflow
    ratio = log_ratio.exp()
    unclipped = -advantages * ratio
    clipped = -advantages * ratio.clamp(1.0 - clip, 1.0 + clip)
    loss = masked_mean(torch.maximum(unclipped, clipped), response_mask)
    with torch.no_grad():
        stats = PolicyLossStats(
            clipfrac=masked_mean((clipped > unclipped).to(ratio.dtype), response_mask),
            approx_kl=masked_mean(0.5 * log_ratio.square(), response_mask),
            ratio=masked_mean(ratio, response_mask),
        )
    return loss, stats


def value_loss(
    values: torch.Tensor,
    old_values: torch.Tensor,
    returns: torch.Tensor,
    response_mask: torch.Tensor,
    clip: float,
) -> tuple[torch.Tensor, ValueLossStats]:
    """Clipped value loss, masked mean over real tokens -> ``(loss, stats)``; inputs ``(B, T)``.

    ``v_clip = clamp(v, v_old - clip, v_old + clip)``;  ``loss_t = 0.5 * max((v - R)^2, (v_clip - R)^2)``.
    """
    clipped_values = old_values + (values - old_values).clamp(-clip, clip)
    unclipped_error = (values - returns).square()
    clipped_error = (clipped_values - returns).square()
    loss = 0.5 * masked_mean(torch.maximum(unclipped_error, clipped_error), response_mask)
    with torch.no_grad():
        clipfrac = masked_mean((clipped_error > unclipped_error).to(values.dtype), response_mask)
    return loss, ValueLossStats(value_clipfrac=clipfrac)


def entropy_from_logits(logits: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """Masked mean of the per-token entropy of ``softmax(logits)`` -> scalar.

    ``logits`` ``(B, T, V)``, ``response_mask`` ``(B, T)``. ``H = logsumexp(l) - sum_v softmax(l)_v * l_v``.
    """
    logits = upcast(logits)
    entropy = logits.logsumexp(-1) - (logits.softmax(-1) * logits).sum(-1)  # (B, T)
    return masked_mean(entropy, response_mask)


@torch.no_grad()
def explained_variance(values: torch.Tensor, returns: torch.Tensor, response_mask: torch.Tensor) -> torch.Tensor:
    """``1 - Var[R - V] / Var[R]`` over real tokens -> scalar tensor; inputs ``(B, T)``.

    1 = perfect value function, 0 = no better than a constant, < 0 = worse. NaN if the returns are constant.
    """
    return 1.0 - masked_var(returns - values, response_mask) / masked_var(returns, response_mask)


class AdaptiveKLController:
    """KL coefficient steered towards a target KL (Ziegler et al. 2019, section 2.2).

    ``e = clamp(current_kl / target - 1, -0.2, 0.2)``;  ``kl_coef <- kl_coef * (1 + e * n_steps / horizon)``.
    """

    def __init__(self, init_kl_coef: float, target: float, horizon: int) -> None:
        self.value, self.target, self.horizon = float(init_kl_coef), float(target), int(horizon)

    def update(self, current_kl: float, n_steps: int) -> None:
        proportional_error = min(max(current_kl / self.target - 1.0, -0.2), 0.2)
        self.value *= 1.0 + proportional_error * n_steps / self.horizon

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class FixedKLController:
    """Constant KL coefficient with the interface of :class:`AdaptiveKLController`."""

    def __init__(self, kl_coef: float) -> None:
        self.value = float(kl_coef)

    def update(self, current_kl: float, n_steps: int) -> None:
        """Does nothing: the coefficient is fixed."""

    def state_dict(self) -> dict[str, float]:
        return {"value": self.value}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.value = float(state["value"])


class RunningMoments:
    """Running mean and standard deviation of every element seen, e.g. for reward normalisation.

    Each batch is merged in one step (Chan et al. 1979): with ``d = mean_b - mean``, ``N = n + n_b``,
    ``mean <- mean + d * n_b / N``;  ``M2 <- M2 + M2_b + d^2 * n * n_b / N``. Kept in Python floats (float64).
    ``std`` is the unbiased sample standard deviation ``sqrt(M2 / (N - 1))``, like ``torch.std``; it is 1.0
    until two elements have been seen, so that dividing by it is always safe.
    """

    def __init__(self) -> None:
        self.mean, self.m2, self.count = 0.0, 0.0, 0

    @property
    def std(self) -> float:
        return (self.m2 / (self.count - 1)) ** 0.5 if self.count > 1 else 1.0

    def update(self, x: torch.Tensor) -> None:
        """Merge every element of ``x`` (any shape) into the running moments."""
        x = x.detach().to(torch.float64).flatten()
        n_batch = x.numel()
        if n_batch == 0:
            return
        batch_mean = x.mean().item()
        batch_m2 = (x - batch_mean).square().sum().item()
        total = self.count + n_batch
        delta = batch_mean - self.mean
        self.mean += delta * n_batch / total
        self.m2 += batch_m2 + delta**2 * self.count * n_batch / total
        self.count = total

    def state_dict(self) -> dict[str, float]:
        return {"mean": self.mean, "m2": self.m2, "count": self.count}

    def load_state_dict(self, state: dict[str, float]) -> None:
        self.mean, self.m2, self.count = float(state["mean"]), float(state["m2"]), int(state["count"])


@dataclass(frozen=True)
class RolloutStats:
    """Scalars of one rollout (this process), logged as ``rollout/<name>``."""

    score: torch.Tensor  # mean reward-model score, before the EOS penalty, normalisation and clipping
    reward_total: torch.Tensor  # mean over rows of sum_t r_t (shaped score + KL penalty)
    kl: torch.Tensor  # mean over rows of sum_t (log pi - log rho): the sequence KL (k1 estimate)
    response_length: torch.Tensor  # mean number of real response tokens (EOS included)
    no_eos_fraction: torch.Tensor  # share of responses cut by max_new_tokens


@dataclass(frozen=True)
class PPOStats:
    """Scalars of one rollout's PPO epochs (this process, mean over minibatches), logged as ``ppo/<name>``."""

    policy_loss: torch.Tensor
    value_loss: torch.Tensor
    entropy: torch.Tensor  # of the sampling distribution softmax(logits / temperature)
    clipfrac: torch.Tensor
    approx_kl: torch.Tensor  # KL(pi_old || pi) over the update, k2 estimate
    value_clipfrac: torch.Tensor
    explained_variance: torch.Tensor  # of the returns by the rollout's values (before the update)
    policy_grad_norm: torch.Tensor  # before clipping
    critic_grad_norm: torch.Tensor


def as_metrics(stats: RolloutStats | PPOStats, prefix: str) -> dict[str, torch.Tensor]:
    """``{prefix}/<field>``: every field of ``stats`` as a detached float scalar."""
    return {f"{prefix}/{f.name}": getattr(stats, f.name).detach().float() for f in fields(stats)}
