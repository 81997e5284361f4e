"""Demonstrations -> SFT examples with labels only on the assistant turns."""

from __future__ import annotations

import torch

from almost.batching import pad_sequences
from almost.chat import IGNORE_INDEX, encode_demonstration
from almost.records import Demonstration
from data_modules.base import RecordDataModule


class DemonstrationDataModule(RecordDataModule):
    """Batches with ``input_ids``, ``attention_mask`` and ``labels`` (IGNORE_INDEX off the responses), ``(B, T)``."""

    record_type = Demonstration

    def encode(self, record: Demonstration) -> tuple[list[int], list[int]]:
        return encode_demonstration(self.tokenizer, self.template, record, self.hparams.max_length)

    def collate(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        input_ids, attention_mask = pad_sequences([ids for ids, _ in examples], self.tokenizer.pad_token_id)
        labels, _ = pad_sequences([labels for _, labels in examples], IGNORE_INDEX)
        return {"input_ids": input_ids, "attention_mask": attention_mask, "labels": labels}
