"""Reward model training with the ranked-preference loss."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from almost.adapters import attach_adapter
from almost.losses import preference_loss
from almost.models import RewardModel
from lit_models.base import TrainingStage

SPLITS = ("train", "val", "test")


class RewardModelModule(TrainingStage):
    """Learns ``r(x, y)`` from comparisons: loss ``-log sigmoid(r(x, y_chosen) - r(x, y_rejected))``.

    Batches come from ``data_modules.ComparisonDataModule``: rows ``[0, B)`` are the chosen and rows
    ``[B, 2B)`` the rejected sequences, scored in one forward pass. Logs ``{split}/loss``,
    ``{split}/accuracy`` (share of pairs with ``r_chosen > r_rejected``; ties count as wrong),
    ``{split}/chosen_reward``, ``{split}/rejected_reward`` and ``{split}/margin``.

    With ``adapter`` the backbone gets the adapter and the scalar head stays trainable; the export is the
    backbone's peft adapter directory plus ``reward_head.safetensors`` (``almost.adapters.load_reward_model``).
    """

    def make_metrics(self) -> dict[str, MeanMetric]:
        return {f"{split}_accuracy": MeanMetric() for split in SPLITS}

    def build_network(self) -> RewardModel:
        return RewardModel.build(self.source, self.tokenizer)

    def empty_network_like(self) -> RewardModel:
        from transformers import AutoModel

        return RewardModel(AutoModel.from_config(self.net.backbone.config))

    def with_adapter(self, net: RewardModel) -> RewardModel:
        net.backbone = attach_adapter(net.backbone, self.hparams.adapter, self.source.path)  # freezes the backbone
        return net

    def rewards(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """(chosen rewards, rejected rewards), each ``(B,)``."""
        scores = self.net.score(batch["input_ids"], batch["attention_mask"])  # (2B,)
        return scores.chunk(2)

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        # 1. score both responses of every pair
        chosen_rewards, rejected_rewards = self.rewards(batch)
        # 2. ranked-preference loss
        loss = preference_loss(chosen_rewards, rejected_rewards)
        # 3. log
        margin = (chosen_rewards - rejected_rewards).detach()
        accuracy = self.metrics[f"{split}_accuracy"]
        accuracy.update((margin > 0).float())
        # training: per step, this process's batch; evaluation: per epoch, over all processes
        training = split == "train"
        log = dict(on_step=training, on_epoch=not training, batch_size=margin.shape[0], sync_dist=not training)
        self.log(f"{split}/loss", loss.detach(), prog_bar=True, **log)
        self.log(f"{split}/chosen_reward", chosen_rewards.detach().mean(), **log)
        self.log(f"{split}/rejected_reward", rejected_rewards.detach().mean(), **log)
        self.log(f"{split}/margin", margin.mean(), **log)
        self.log(f"{split}/accuracy", accuracy, prog_bar=not training, on_step=False, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx) -> dict[str, torch.Tensor]:
        chosen_rewards, rejected_rewards = self.rewards(batch)
        return {"chosen_rewards": chosen_rewards, "rejected_rewards": rejected_rewards}
