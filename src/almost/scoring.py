"""Reward-model scores of answers in context, batched: the as-is RM filter and RMSP's choice of answer."""

from __future__ import annotations

from typing import Sequence

import torch

from almost.batching import pad_sequences
from almost.chat import ChatTemplate, encode_exchange
from almost.records import Turn


def load_scorer(directory: str):
    """A saved reward model (frozen, eval mode) and its tokenizer, from one local directory."""
    from almost.models import ModelSource, RewardModel, load_tokenizer

    return RewardModel.from_pretrained(directory).eval().requires_grad_(False), load_tokenizer(ModelSource(path=directory))


@torch.no_grad()
def reward_scores(reward_model, tokenizer, histories: Sequence[Sequence[Turn]], answers: Sequence[str],
                  template: ChatTemplate = ChatTemplate(), max_length: int = 512, batch_size: int = 32) -> list[float]:
    """Reward of ``answers[i]`` as the assistant's reply to ``histories[i]`` (which ends with a user turn).

    Encoded exactly as the reward model was trained (``almost.chat``): the prompt is cut from the left to
    fit ``max_length``.
    """
    if len(histories) != len(answers):
        raise ValueError(f"{len(histories)} histories but {len(answers)} answers")
    reward_model.eval()
    device = next(reward_model.parameters()).device
    sequences = [encode_exchange(tokenizer, template, history, answer, max_length)
                 for history, answer in zip(histories, answers)]
    scores: list[float] = []
    for start in range(0, len(sequences), batch_size):
        input_ids, attention_mask = pad_sequences(sequences[start:start + batch_size], tokenizer.pad_token_id,
                                                  side="right")
        scores += reward_model.score(input_ids.to(device), attention_mask.to(device)).tolist()
    return scores
