"""Pretraining documents -> packed blocks of tokens, every token a label."""

from __future__ import annotations

import torch
from torch.utils.data import Dataset

from almost.records import CorpusDocument, load_jsonl
from data_modules.base import RecordDataModule, split_by_seed


class PackedBlocks(Dataset):
    """Documents as ``<s> text </s>``, concatenated and cut into blocks of ``block_size`` tokens
    (the incomplete last block is dropped)."""

    def __init__(self, documents: list[CorpusDocument], tokenizer, block_size: int) -> None:
        encoded = tokenizer([d.text for d in documents], add_special_tokens=False)["input_ids"]
        stream = torch.tensor([t for ids in encoded for t in (tokenizer.bos_token_id, *ids, tokenizer.eos_token_id)])
        n_blocks = len(stream) // block_size
        if n_blocks == 0:
            raise ValueError(f"{len(stream)} tokens are fewer than one block of {block_size}")
        self.blocks = stream[: n_blocks * block_size].view(n_blocks, block_size)  # (N, block_size)

    def __len__(self) -> int:
        return self.blocks.shape[0]

    def __getitem__(self, index: int) -> torch.Tensor:
        return self.blocks[index]


class CorpusDataModule(RecordDataModule):
    """Language-model pretraining: batches of ``input_ids``, ``attention_mask`` and ``labels`` ``(B, block)``
    with labels on every token (so ``SFTModule`` trains a plain causal LM on them).

    ``max_length`` is the block size; ``val_path`` is typically a held-out slice of the corpus.
    """

    record_type = CorpusDocument

    def setup(self, stage: str | None = None) -> None:
        if self.train_set is not None:
            return
        documents = load_jsonl(self.hparams.path, CorpusDocument, max_field_chars=None)  # documents may be long
        if self.hparams.val_path:
            train, val = documents, load_jsonl(self.hparams.val_path, CorpusDocument, max_field_chars=None)
        else:
            train, val = split_by_seed(documents, self.hparams.val_fraction, self.hparams.seed)
        self.train_set = PackedBlocks(train, self.tokenizer, self.hparams.max_length)
        self.val_set = PackedBlocks(val, self.tokenizer, self.hparams.max_length)

    def collate(self, blocks: list[torch.Tensor]) -> dict[str, torch.Tensor]:
        input_ids = torch.stack(blocks)
        return {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids), "labels": input_ids.clone()}
