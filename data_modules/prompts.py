"""Prompts -> left-padded prompt batches, ready for generation (PPO rollouts, self-play)."""

from __future__ import annotations

import torch

from almost.batching import pad_sequences
from almost.chat import encode_prompt
from almost.records import Prompt, Turn
from data_modules.base import RecordDataModule


class PromptDataModule(RecordDataModule):
    """Batches with ``input_ids`` and ``attention_mask`` ``(B, T)``, left-padded so that generation
    continues every row from its last real token. Prompts longer than ``max_length`` keep their end."""

    record_type = Prompt

    def encode(self, record: Prompt) -> list[int]:
        ids = encode_prompt(self.tokenizer, self.template, [Turn("user", record.prompt)])
        return ids[-self.hparams.max_length:]

    def collate(self, examples: list[list[int]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_sequences(examples, self.tokenizer.pad_token_id, side="left")
        return {"input_ids": input_ids, "attention_mask": attention_mask}
