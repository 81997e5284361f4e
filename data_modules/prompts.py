"""Prompts -> left-padded prompt batches, ready for generation (PPO rollouts, self-play)."""

from __future__ import annotations

from typing import Any

from almost.batching import pad_sequences
from almost.chat import encode_prompt
from almost.records import Prompt, Turn
from data_modules.base import RecordDataModule


class PromptDataModule(RecordDataModule):
    """Batches with ``input_ids`` and ``attention_mask`` ``(B, T)``, left-padded so that generation
    continues every row from its last real token, and ``prompts``, the ``B`` prompt texts (for scorers that read
    text). Prompts longer than ``max_length`` keep their end."""

    record_type = Prompt

    def encode(self, record: Prompt) -> tuple[list[int], str]:
        ids = encode_prompt(self.tokenizer, self.template, [Turn("user", record.prompt)])
        return ids[-self.hparams.max_length:], record.prompt

    def collate(self, examples: list[tuple[list[int], str]]) -> dict[str, Any]:
        input_ids, attention_mask = pad_sequences([ids for ids, _ in examples], self.tokenizer.pad_token_id, side="left")
        return {"input_ids": input_ids, "attention_mask": attention_mask, "prompts": [text for _, text in examples]}
