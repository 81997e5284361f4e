"""What PPO tests share: a callback recording every rollout (in-process or from `train.py` subprocesses),
and a PPO module with a scripted reward in place of the reward model."""

from __future__ import annotations

import json
from pathlib import Path

import lightning as L
import torch

from almost.ppo import masked_mean
from lit_models import PPOModule


class RolloutRecorder(L.Callback):
    """Keeps, per rollout, the logged ``rollout/`` and ``ppo/`` metrics (means over processes) and this
    process's response lengths; with ``out``, writes them to ``<out>/rank<r>.json`` at the end of training."""

    def __init__(self, out: str | None = None) -> None:
        self.out = Path(out) if out else None
        self.history: list[dict] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        metrics = {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith(("rollout/", "ppo/"))}
        self.history.append({"metrics": metrics, "response_lengths": outputs["response_length"].tolist(),
                             "rollouts_done": pl_module.rollouts_done})

    def on_train_end(self, trainer, pl_module) -> None:
        if self.out is None:
            return
        self.out.mkdir(parents=True, exist_ok=True)
        report = {"rank": trainer.global_rank, "world_size": trainer.world_size, "history": self.history,
                  "val": {k: float(v) for k, v in trainer.callback_metrics.items() if k.startswith("val/")}}
        (self.out / f"rank{trainer.global_rank}.json").write_text(json.dumps(report))

    def series(self, name: str) -> list[float]:
        return [h["metrics"][name] for h in self.history]


class TargetTokenPPO(PPOModule):
    """PPO whose score is the share of real response tokens equal to ``target_token`` (the reward model is
    built but unused): a reward the policy can raise quickly, with a known maximum of 1."""

    target_token: int = 0

    def score_responses(self, rollout, prompts) -> torch.Tensor:
        hits = (rollout.response_ids == self.target_token).float()
        return masked_mean(hits, rollout.response_mask, dim=-1)
