"""Dynamic padding of token id lists into batch tensors."""

from __future__ import annotations

from typing import Literal, Sequence

import torch


def pad_sequences(
    sequences: Sequence[Sequence[int]], pad_value: int, side: Literal["left", "right"] = "right"
) -> tuple[torch.Tensor, torch.Tensor]:
    """Pad to the longest sequence of the batch.

    Returns ``(values, mask)``, both ``(B, T)`` with ``T = max(len(s))``; ``values`` is int64 and
    ``mask`` is 1 on real tokens and 0 on padding.
    """
    if side not in ("left", "right"):
        raise ValueError(f"side must be 'left' or 'right', got {side!r}")
    length = max(len(s) for s in sequences)
    values = torch.full((len(sequences), length), pad_value, dtype=torch.long)
    mask = torch.zeros((len(sequences), length), dtype=torch.long)
    for i, seq in enumerate(sequences):
        n = len(seq)
        span = slice(length - n, length) if side == "left" else slice(0, n)
        values[i, span] = torch.as_tensor(seq, dtype=torch.long)
        mask[i, span] = 1
    return values, mask


def position_ids_from_mask(attention_mask: torch.Tensor) -> torch.Tensor:
    """Positions counted over real tokens only, so left padding does not shift them.

    ``attention_mask`` ``(B, T)`` -> ``(B, T)``; padding positions get 0.
    """
    return (attention_mask.long().cumsum(-1) - 1).clamp(min=0)
