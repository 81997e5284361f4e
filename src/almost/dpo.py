"""Direct Preference Optimization losses, as pure tensor functions.

Every input is a summed log-probability of a response given its prompt, ``(B,)`` (prompt and padding
masked; see :func:`almost.logprobs.response_logprobs`), under the trained policy ``pi`` or the frozen
reference ``ref``, for the chosen (``c``) and the rejected (``r``) response of each pair. With

    h = (log pi(c) - log ref(c)) - (log pi(r) - log ref(r))        # (B,)

the losses, averaged over the batch, are:

    sigmoid  -log sigmoid(beta h)                     Rafailov et al. 2023, eq. 7, arXiv:2305.18290
    cdpo     -(1 - eps) log sigmoid(beta h) - eps log sigmoid(-beta h)
             (``sigmoid`` with ``label_smoothing = eps``: each label is wrong with probability eps;
             Mitchell 2023, "A note on DPO with noisy preferences")
    ipo      (h - 1 / (2 beta))^2                     Azar et al. 2023 (IPO, with tau = beta), arXiv:2310.12036

The implicit reward of a response is ``beta (log pi - log ref)``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F

DPOKind = Literal["sigmoid", "ipo"]


@dataclass(frozen=True)
class DPOStats:
    """Batch means of the implicit rewards, detached scalars."""

    reward_chosen: torch.Tensor  # beta (log pi(c) - log ref(c))
    reward_rejected: torch.Tensor  # beta (log pi(r) - log ref(r))
    reward_margin: torch.Tensor  # reward_chosen - reward_rejected = beta h
    reward_accuracy: torch.Tensor  # share of pairs with margin > 0 (a tie counts as wrong)


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    beta: float,
    kind: DPOKind = "sigmoid",
    label_smoothing: float = 0.0,
) -> tuple[torch.Tensor, DPOStats]:
    """DPO loss (mean over the batch) and its implicit-reward statistics (see the module docstring).

    Args:
        policy_chosen_logps, policy_rejected_logps: ``(B,)`` summed response log-probs under the policy.
        ref_chosen_logps, ref_rejected_logps: ``(B,)`` the same under the reference (no gradient flows to them).
        beta: strength of the implicit KL penalty (> 0).
        kind: ``"sigmoid"`` (DPO; cDPO with ``label_smoothing > 0``) or ``"ipo"``.
        label_smoothing: cDPO's ``eps`` in ``[0, 0.5)``; only with ``kind="sigmoid"``.

    Returns ``(loss, stats)``: a scalar and :class:`DPOStats`.
    """
    if beta <= 0:
        raise ValueError(f"beta must be > 0, got {beta}")
    if not 0.0 <= label_smoothing < 0.5:
        raise ValueError(f"label_smoothing must be in [0, 0.5), got {label_smoothing}")
    if kind == "ipo" and label_smoothing:
        raise ValueError("label_smoothing (cDPO) applies to the sigmoid loss only, not to ipo")
    chosen_logratio = policy_chosen_logps - ref_chosen_logps.detach()  # (B,)
    rejected_logratio = policy_rejected_logps - ref_rejected_logps.detach()  # (B,)
    h = chosen_logratio - rejected_logratio  # (B,)
    if kind == "sigmoid":
        losses = -(1 - label_smoothing) * F.logsigmoid(beta * h) - label_smoothing * F.logsigmoid(-beta * h)
    elif kind == "ipo":
        losses = (h - 1 / (2 * beta)) ** 2
    else:
        raise ValueError(f"unknown DPO loss kind {kind!r} (expected 'sigmoid' or 'ipo')")
    with torch.no_grad():
        reward_chosen, reward_rejected = beta * chosen_logratio, beta * rejected_logratio  # (B,) each
        margin = reward_chosen - reward_rejected
        stats = DPOStats(reward_chosen.mean(), reward_rejected.mean(), margin.mean(), (margin > 0).float().mean())
    return losses.mean(), stats
