"""Shared DataModule machinery: load validated records, split by seed, tokenize lazily, pad per batch."""

from __future__ import annotations

from dataclasses import asdict
from typing import Any, Callable, Sequence, Type

import lightning as L
import torch
from torch.utils.data import DataLoader, Dataset

from almost.chat import ChatTemplate
from almost.models import ModelSource, load_tokenizer
from almost.records import load_jsonl


class EncodedRecords(Dataset):
    """Records encoded on access by ``encode(record) -> example``."""

    def __init__(self, records: Sequence[Any], encode: Callable[[Any], Any]) -> None:
        self.records, self.encode = records, encode

    def __len__(self) -> int:
        return len(self.records)

    def __getitem__(self, index: int) -> Any:
        return self.encode(self.records[index])


def split_by_seed(records: Sequence[Any], val_fraction: float, seed: int) -> tuple[list[Any], list[Any]]:
    """(train, val): a seeded random ``val_fraction`` of the records (at least one) goes to validation."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    order = torch.randperm(len(records), generator=torch.Generator().manual_seed(seed)).tolist()
    n_val = max(1, round(val_fraction * len(records)))
    if n_val >= len(records):
        raise ValueError(f"{len(records)} records are too few to hold out {val_fraction:.0%} for validation")
    return [records[i] for i in order[n_val:]], [records[i] for i in order[:n_val]]


class RecordDataModule(L.LightningDataModule):
    """Base of the DataModules: one JSONL file of one record type, split into train and validation
    (``fit``, ``validate``, ``test``: the validation part) or read whole, in order (``predict``).

    Args:
        path: JSONL file of records (see ``almost.records`` for the schema).
        tokenizer: tokenizer directory; LightningCLI links it from the model's ``source``.
        val_path: a separate validation file; without it ``val_fraction`` of ``path`` is held out.
        val_fraction: share of ``path`` held out for validation when ``val_path`` is not given.
        seed: seed of the train/validation split.
        batch_size: examples per batch and process.
        max_length: longest tokenized example.
        shuffle: shuffle the training set every epoch.
        drop_last: drop the training set's last batch when it is short (for PPO, where a batch is a rollout:
            a rollout of a few prompts gives noisy whitened advantages and rollout statistics).
        num_workers: DataLoader worker processes.
        template: chat template that renders turns as text.
    """

    record_type: Type = object

    def __init__(
        self,
        path: str,
        tokenizer: str,
        val_path: str | None = None,
        val_fraction: float = 0.1,
        seed: int = 0,
        batch_size: int = 8,
        max_length: int = 512,
        shuffle: bool = True,
        drop_last: bool = False,
        num_workers: int = 0,
        template: ChatTemplate = ChatTemplate(),
    ) -> None:
        super().__init__()
        self.template = template if isinstance(template, ChatTemplate) else ChatTemplate(**template)
        self.save_hyperparameters(ignore=["template"])
        self.hparams["template"] = asdict(self.template)  # plain data, so checkpoints load with weights_only
        self.tokenizer = load_tokenizer(ModelSource(path=tokenizer))
        self.train_set: Dataset | None = None
        self.val_set: Dataset | None = None
        self.predict_set: Dataset | None = None

    # --- to implement -------------------------------------------------------------------------
    def encode(self, record: Any) -> Any:
        raise NotImplementedError

    def collate(self, examples: list[Any]) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    # --- shared -------------------------------------------------------------------------------
    def setup(self, stage: str | None = None) -> None:
        if stage == "predict":  # every record of `path`, in file order
            self.predict_set = EncodedRecords(load_jsonl(self.hparams.path, self.record_type), self.encode)
            return
        if self.train_set is not None:
            return
        records = load_jsonl(self.hparams.path, self.record_type)
        if self.hparams.val_path:
            train, val = records, load_jsonl(self.hparams.val_path, self.record_type)
        else:
            train, val = split_by_seed(records, self.hparams.val_fraction, self.hparams.seed)
        self.train_set, self.val_set = EncodedRecords(train, self.encode), EncodedRecords(val, self.encode)

    def _loader(self, dataset: Dataset, shuffle: bool, drop_last: bool = False) -> DataLoader:
        return DataLoader(
            dataset, batch_size=self.hparams.batch_size, shuffle=shuffle, drop_last=drop_last, collate_fn=self.collate,
            num_workers=self.hparams.num_workers, persistent_workers=self.hparams.num_workers > 0,
        )

    def train_dataloader(self) -> DataLoader:
        return self._loader(self.train_set, shuffle=self.hparams.shuffle, drop_last=self.hparams.drop_last)

    def val_dataloader(self) -> DataLoader:
        return self._loader(self.val_set, shuffle=False)

    def test_dataloader(self) -> DataLoader:
        return self.val_dataloader()

    def predict_dataloader(self) -> DataLoader:
        return self._loader(self.predict_set, shuffle=False)
