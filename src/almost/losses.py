"""Losses of the reward model and SFT stages, as pure tensor functions.

Mask convention: 1 = real token, 0 = padding.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from almost.chat import IGNORE_INDEX


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
    """Next-token cross-entropy averaged over labelled (response) tokens.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with ``IGNORE_INDEX`` on tokens not trained on.
    Position ``t`` predicts ``labels[t + 1]``. Returns ``(loss, n_tokens)``; a batch without any
    labelled token gives loss 0 (it contributes nothing rather than NaN).
    """
    shift_logits = logits[:, :-1].float()  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    token_losses = F.cross_entropy(
        shift_logits.reshape(-1, shift_logits.shape[-1]), shift_labels.reshape(-1),
        ignore_index=IGNORE_INDEX, reduction="sum",
    )
    n_tokens = (shift_labels != IGNORE_INDEX).sum()
    return token_losses / n_tokens.clamp(min=1), n_tokens
