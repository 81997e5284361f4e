"""Comparisons -> tokenized chosen/rejected pairs for reward-model training."""

from __future__ import annotations

import torch

from almost.batching import pad_sequences
from almost.chat import encode_comparison
from almost.records import Comparison
from data_modules.base import RecordDataModule


class ComparisonDataModule(RecordDataModule):
    """Batches of ``B`` comparisons as ``2B`` sequences: rows ``[0, B)`` chosen, ``[B, 2B)`` rejected.

    The prompt is truncated from the left so that the response stays whole (see
    ``almost.chat.encode_comparison``); sequences are right-padded to the batch's longest.
    """

    record_type = Comparison

    def encode(self, record: Comparison) -> tuple[list[int], list[int]]:
        return encode_comparison(self.tokenizer, self.template, record, self.hparams.max_length)

    def collate(self, examples: list[tuple[list[int], list[int]]]) -> dict[str, torch.Tensor]:
        chosen = [c for c, _ in examples]
        rejected = [r for _, r in examples]
        input_ids, attention_mask = pad_sequences(chosen + rejected, self.tokenizer.pad_token_id)
        return {"input_ids": input_ids, "attention_mask": attention_mask}  # (2B, T) each
