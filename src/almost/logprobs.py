"""Log-probabilities of tokens under a causal LM: the one place every stage gets them from.

- :func:`token_logprobs`: per-token ``log p(x_t)`` from logits, at a sampling temperature (PPO);
- :func:`response_logprobs`: summed log-probability of each row's labelled tokens, the prompt and padding
  masked with ``IGNORE_INDEX`` labels (SFT, DPO, the evaluators);
- :func:`continuation_logprobs`: a model's summed log-probability of continuations after prompts (evaluators);
- :func:`next_token_logprobs`: a model's log-probability of every token of one sequence given its prefix
  (sliding-window perplexity).

Shapes: ``B`` rows, ``T`` positions, ``V`` vocabulary. Half-precision logits are upcast to float32 first.
"""

from __future__ import annotations

from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from almost.batching import pad_sequences
from almost.chat import IGNORE_INDEX


def upcast(logits: torch.Tensor) -> torch.Tensor:
    """Half-precision logits in float32 (a fresh copy); float32/float64 logits unchanged."""
    return logits.float() if logits.dtype in (torch.float16, torch.bfloat16) else logits


def token_logprobs(logits: torch.Tensor, tokens: torch.Tensor, temperature: float = 1.0) -> torch.Tensor:
    """Log-probability of ``tokens`` under ``softmax(logits / temperature)``.

    ``logits`` ``(B, T, V)``, ``tokens`` ``(B, T)`` -> ``(B, T)``; ``logits[:, t]`` is the distribution of
    ``tokens[:, t]``. Pass the temperature used for sampling so that the log-probs are those of the distribution
    the tokens were drawn from. ``log p(x_t) = logits[x_t] / tau - logsumexp(logits / tau)``.
    """
    if temperature <= 0:
        raise ValueError(f"temperature must be > 0, got {temperature}")
    scaled = upcast(logits)
    if temperature != 1.0:
        # divide a fresh upcast copy in place; never write into the caller's tensor
        scaled = scaled.div_(temperature) if scaled is not logits else scaled / temperature
    return scaled.log_softmax(-1).gather(-1, tokens.unsqueeze(-1)).squeeze(-1)  # (B, T)


def response_logprobs(logits: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Summed log-probability of each row's labelled (response) tokens, and their count.

    ``logits`` ``(B, T, V)``, ``labels`` ``(B, T)`` with ``IGNORE_INDEX`` on tokens not scored (prompt, padding).
    Position ``t`` predicts ``labels[t + 1]``. Returns ``(logprob_sum (B,), n_tokens (B,))``.
    """
    shift_logits = logits[:, :-1]  # (B, T-1, V)
    shift_labels = labels[:, 1:]  # (B, T-1)
    scored = shift_labels != IGNORE_INDEX
    per_token = -F.cross_entropy(  # over (B * (T-1), V) rows: contiguous, 3x faster than a (B, V, T-1) view
        shift_logits.reshape(-1, shift_logits.shape[-1]).float(), shift_labels.masked_fill(~scored, 0).reshape(-1),
        reduction="none",
    ).view_as(shift_labels)  # (B, T-1)
    return (per_token * scored).sum(-1), scored.sum(-1)


def _device(model: nn.Module) -> torch.device:
    return next(model.parameters()).device


def continuation_logprobs(model: nn.Module, prompts: Sequence[list[int]], continuations: Sequence[list[int]],
                          pad_id: int) -> torch.Tensor:
    """Summed log-probability of each continuation given its prompt, ``sum_t log p(c_t | prompt, c_<t)``.

    For a one-token continuation this is the next-token log-probability. ``prompts[i] + continuations[i]``
    are right-padded into one forward pass ``(N, T)``; returns ``(N,)`` float32.
    """
    if len(prompts) != len(continuations):
        raise ValueError(f"{len(prompts)} prompts but {len(continuations)} continuations")
    if not all(prompts) or not all(continuations):
        raise ValueError("every prompt and every continuation needs at least one token")
    ids = [p + c for p, c in zip(prompts, continuations)]
    labels = [[IGNORE_INDEX] * len(p) + c for p, c in zip(prompts, continuations)]
    input_ids, attention_mask = pad_sequences(ids, pad_id)  # (N, T) each
    labels, _ = pad_sequences(labels, IGNORE_INDEX)  # (N, T)
    device = _device(model)
    logits = model(input_ids=input_ids.to(device), attention_mask=attention_mask.to(device), use_cache=False).logits
    logprob_sum, _ = response_logprobs(logits, labels.to(device))  # (N,)
    return logprob_sum


def next_token_logprobs(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``(1, T)`` ids of one unpadded sequence -> ``(1, T - 1)`` log-probs of tokens 1..T-1 given their prefix
    (the ``logprob_fn`` of ``almost.evaluation.sliding_window_nll``)."""
    input_ids = input_ids.to(_device(model))
    logits = model(input_ids=input_ids, use_cache=False).logits  # (1, T, V)
    return token_logprobs(logits[:, :-1], input_ids[:, 1:])
