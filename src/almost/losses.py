"""Losses of the reward model and SFT stages, as pure tensor functions.

Mask convention: 1 = real token, 0 = padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from almost.logprobs import response_logprobs


def last_token_index(attention_mask: torch.Tensor) -> torch.Tensor:
    """Index of the last real token of each row, under left or right padding.

    ``attention_mask`` ``(B, T)`` -> ``(B,)``. A row without real tokens gives 0.
    """
    positions = torch.arange(attention_mask.shape[-1], device=attention_mask.device)
    return (attention_mask.long() * positions).argmax(-1)


def gather_last(values: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """``values`` ``(B, T)`` read at the last real token of each row -> ``(B,)``."""
    index = last_token_index(attention_mask).unsqueeze(-1)
    return values.gather(-1, index).squeeze(-1)


def preference_loss(chosen_rewards: torch.Tensor, rejected_rewards: torch.Tensor) -> torch.Tensor:
    """Ranked-preference loss ``mean(-log sigmoid(r_chosen - r_rejected))``.

    ``chosen_rewards``, ``rejected_rewards`` ``(B,)`` -> scalar. (Ouyang et al. 2022, eq. 1.)
    """
    return -F.logsigmoid(chosen_rewards - rejected_rewards).mean()


def response_token_loss(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Next-token cross-entropy averaged over all labelled (response) tokens of the batch.

    Shapes as in :func:`response_logprobs`. Returns ``(loss, n_tokens)``; a batch without any
    labelled token gives loss 0 (it contributes nothing rather than NaN).
    """
    logprob_sum, n_tokens = response_logprobs(logits, labels)
    n_total = n_tokens.sum()
    return -logprob_sum.sum() / n_total.clamp(min=1), n_total
