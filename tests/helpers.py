"""Callbacks that tests attach to `train.py` runs in subprocesses (``--trainer.callbacks+=...``)."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch


class ShardingReport(L.Callback):
    """Writes ``<out>/rank<r>.json``: parameters this rank holds vs the model's total, and, after
    training, the full model's loss on the first 4 validation examples (same on every rank)."""

    def __init__(self, out: str) -> None:
        self.out = Path(out)

    def on_train_start(self, trainer, pl_module) -> None:
        from torch.distributed.tensor import DTensor

        params = list(pl_module.net.parameters())
        self.local = sum((p.to_local() if isinstance(p, DTensor) else p).numel() for p in params)
        self.total = sum(p.numel() for p in params)
        self.initial_loss = self.validation_loss(trainer, pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        loss = self.validation_loss(trainer, pl_module)
        self.out.mkdir(parents=True, exist_ok=True)
        report = {"local_params": self.local, "total_params": self.total, "initial_loss": self.initial_loss, "loss": loss,
                  "world_size": trainer.world_size, "global_step": trainer.global_step}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))

    @staticmethod
    def validation_loss(trainer, pl_module) -> float:
        data = trainer.datamodule  # a fixed batch: the first 4 validation examples
        batch = {k: v.to(pl_module.device) for k, v in data.collate([data.val_set[i] for i in range(4)]).items()}
        with torch.no_grad():
            return batch_loss(pl_module, batch).item()


def batch_loss(pl_module, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    """The stage's training loss on ``batch``, without logging."""
    from almost.losses import preference_loss, response_token_loss

    if "labels" in batch:  # SFT
        logits = pl_module.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        return response_token_loss(logits, batch["labels"])[0]
    return preference_loss(*pl_module.rewards(batch))
