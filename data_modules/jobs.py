"""Inputs of the generation jobs (``train.py predict``): numbered records, not tokenized.

A job renders its own prompts (a vanilla LM's few-shot prompt is text), so a batch is a list of
``(index, record)`` pairs; ``index`` is the record's position in the file, which names its output rows.
"""

from __future__ import annotations

from typing import Any

import lightning as L
from torch.utils.data import DataLoader

from almost.records import Prompt, Responses, load_jsonl

RECORD_TYPES = {"prompt": Prompt, "responses": Responses}


def _as_list(batch: list[Any]) -> list[Any]:
    return batch


class _RecordBatches(L.LightningDataModule):
    def transfer_batch_to_device(self, batch, device, dataloader_idx):
        return batch  # records, not tensors: each job tokenizes and places its own tensors


class JobInputDataModule(_RecordBatches):
    """Records of a JSONL file, numbered in file order, in batches for ``predict``.

    Args:
        path: the input file.
        record: the record type of the file: ``"prompt"`` or ``"responses"`` (see ``almost.records``).
        batch_size: records per batch and process.
        limit: use only the first ``limit`` records.
    """

    def __init__(self, path: str, record: str = "prompt", batch_size: int = 16, limit: int | None = None) -> None:
        super().__init__()
        if record not in RECORD_TYPES:
            raise ValueError(f"record must be one of {sorted(RECORD_TYPES)}, got {record!r}")
        self.save_hyperparameters()
        self.items: list[tuple[int, Any]] = []

    def setup(self, stage: str | None = None) -> None:
        records = load_jsonl(self.hparams.path, RECORD_TYPES[self.hparams.record])
        self.items = list(enumerate(records[: self.hparams.limit]))

    def predict_dataloader(self) -> DataLoader:
        return DataLoader(self.items, batch_size=self.hparams.batch_size, shuffle=False, collate_fn=_as_list)


class RoundsDataModule(_RecordBatches):
    """``rounds`` numbered rounds (batches of one index each), for jobs whose inputs they make themselves
    (query mining)."""

    def __init__(self, rounds: int) -> None:
        super().__init__()
        self.save_hyperparameters()

    def predict_dataloader(self) -> DataLoader:
        return DataLoader([(i, None) for i in range(self.hparams.rounds)], batch_size=1, collate_fn=_as_list)
