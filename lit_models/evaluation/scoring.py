"""Scoring sequences with a model: continuation log-likelihoods, per-token log-probs, reward-model scores.

Token ids are built with the project's chat template (``almost.chat``), so a policy is evaluated on the
layout it was trained on: ``<s> User: {query}\\nAssistant: {response} </s>``.
"""

from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from almost.batching import pad_sequences
from almost.chat import IGNORE_INDEX, ChatTemplate, encode_turn
from almost.losses import response_logprobs
from almost.models import ModelSource, RewardModel
from almost.ppo import logprobs_from_logits
from almost.records import Turn


def text_ids(tokenizer, template: ChatTemplate, text: str) -> list[int]:
    """Ids of ``text`` as an assistant turn's content, without the EOS that closes the turn."""
    return encode_turn(tokenizer, template, Turn("assistant", text))[:-1]


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


def token_logprobs(model: nn.Module, input_ids: torch.Tensor) -> torch.Tensor:
    """``(1, T)`` ids of one unpadded sequence -> ``(1, T - 1)`` log-probs of tokens 1..T-1 given their prefix
    (the ``logprob_fn`` of ``almost.evaluation.sliding_window_nll``)."""
    input_ids = input_ids.to(_device(model))
    logits = model(input_ids=input_ids, use_cache=False).logits  # (1, T, V)
    return logprobs_from_logits(logits[:, :-1], input_ids[:, 1:])


def reward_scores(reward_model: RewardModel, sequences: Sequence[list[int]], pad_id: int) -> torch.Tensor:
    """Reward of each sequence (read at its last real token): right-padded ``(N, T)`` -> ``(N,)`` float32."""
    input_ids, attention_mask = pad_sequences(sequences, pad_id)
    device = _device(reward_model)
    return reward_model.score(input_ids.to(device), attention_mask.to(device)).float()


def load_reward_model(source: ModelSource, tokenizer) -> RewardModel:
    """A saved reward model (its head file must be there: a causal LM would get a random head), or fresh
    weights from ``source.arch``."""
    if source.path is None:
        return RewardModel.build(source, tokenizer)
    return RewardModel.from_pretrained(source.path, dtype=source.dtype, trust_remote_code=source.trust_remote_code)
