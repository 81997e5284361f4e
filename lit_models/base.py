"""What every training stage shares: building (and sharding) the network, the optimizer, export."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch
from lightning.fabric.utilities.seed import reset_seed
from torch import nn

from almost.adapters import adapter_config, attach_adapter
from almost.distributed import shard_model
from almost.models import ModelSource, load_tokenizer
from almost.schedule import warmup_cosine
from lit_models.export import export_pretrained

MERGED_DIR = "merged"  # export_dir/merged: the full model with the adapter merged (export_merged)


class TrainingStage(L.LightningModule):
    """Base of the reward-model and SFT modules.

    Args:
        source: where the initial weights (or the architecture) and the tokenizer come from.
        lr: peak learning rate of AdamW.
        weight_decay: AdamW weight decay.
        warmup_ratio: fraction of the optimizer steps spent in linear warmup before cosine decay.
        min_lr_ratio: learning rate at the end of the cosine, as a fraction of ``lr``.
        gradient_checkpointing: recompute activations in the backward pass to save memory.
        export_dir: at the end of ``fit``, save the trained model and tokenizer here in Hugging Face format.
        adapter: train a peft adapter instead of every weight: the peft config's keyword arguments with its
            ``peft_type`` (``LORA`` or ``IA3``, see ``almost.adapters``), e.g. ``{peft_type: LORA, r: 8,
            lora_alpha: 16, target_modules: [q_proj, v_proj]}``. Only the adapter trains (and a reward model's
            head); ``export_dir`` then gets a peft adapter directory on the ``source.path`` base.
        export_merged: with ``adapter``, also save the full model with the adapter merged, in ``export_dir/merged``.
    """

    def __init__(
        self,
        source: ModelSource,
        lr: float = 1e-5,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        export_dir: str | None = None,
        adapter: dict[str, Any] | None = None,
        export_merged: bool = False,
    ) -> None:
        if adapter:
            adapter_config(adapter)  # refuse a bad adapter config now, not at the end of setup
        if export_merged and not adapter:
            raise ValueError("export_merged merges a trained adapter: it needs 'adapter'")
        super().__init__()
        self.source = ModelSource.of(source)
        self.save_hyperparameters(ignore=["source"])
        self.hparams["source"] = asdict(self.source)  # plain data, so checkpoints load with weights_only
        self.tokenizer = load_tokenizer(self.source)
        self.metrics = nn.ModuleDict(self.make_metrics())
        self.net: nn.Module | None = None  # built in configure_model, once

    # --- to implement -------------------------------------------------------------------------
    def make_metrics(self) -> dict[str, nn.Module]:
        """torchmetrics objects the stage accumulates over an epoch, by name."""
        return {}

    def build_network(self) -> nn.Module:
        """The network with its initial weights (from ``self.hparams.source``)."""
        raise NotImplementedError

    def empty_network_like(self) -> nn.Module:
        """An unsharded network of the same architecture, for export (without the adapter)."""
        raise NotImplementedError

    def with_adapter(self, net: nn.Module) -> nn.Module:
        """``net`` with a fresh adapter of ``hparams.adapter``, only it trainable; here ``net`` is a causal LM."""
        return attach_adapter(net, self.hparams.adapter, self.source.path, task_type="CAUSAL_LM")

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        """Loss of ``batch``, logging its metrics under ``{split}/``."""
        raise NotImplementedError

    # --- steps --------------------------------------------------------------------------------
    def training_step(self, batch, batch_idx):
        return self.shared_step(batch, "train")

    def validation_step(self, batch, batch_idx):
        self.shared_step(batch, "val")

    def test_step(self, batch, batch_idx):
        self.shared_step(batch, "test")

    # --- model --------------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.net is not None:  # Lightning may call this more than once
            return
        # Distributed strategies re-seed while setting up processes, a single process does not:
        # re-seed here (from `seed_everything`, if set) so fresh weights are the same under any strategy.
        reset_seed()
        net = self.build_network()
        if self.hparams.get("adapter"):
            net = self.with_adapter(net)
        net.train()  # from_pretrained leaves a model in eval mode: no dropout, and no gradient checkpointing
        if self.hparams.gradient_checkpointing:
            for module in net.modules():
                if hasattr(module, "gradient_checkpointing_enable"):
                    module.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
                    break
        if self.device_mesh is not None:  # FSDP2 (see lit_models.strategy.FSDP2Strategy)
            shard_model(net, self.device_mesh["data_parallel"])
        self.net = net

    # --- optimization -------------------------------------------------------------------------
    def configure_optimizers(self):
        decay = [p for p in self.net.parameters() if p.requires_grad and p.ndim >= 2]
        no_decay = [p for p in self.net.parameters() if p.requires_grad and p.ndim < 2]  # norms, biases
        # Fused AdamW: one kernel per step instead of several per parameter group. Lightning's mixed-precision
        # plugin refuses to clip the gradients of a fused optimizer (it assumes fp16 loss scaling), so when
        # both are on, the multi-tensor (foreach) kernels instead.
        refused = str(self.trainer.precision).endswith("-mixed") and bool(self.trainer.gradient_clip_val)
        optimizer = torch.optim.AdamW(
            [{"params": decay, "weight_decay": self.hparams.weight_decay}, {"params": no_decay, "weight_decay": 0.0}],
            lr=self.hparams.lr, fused=not refused, foreach=refused,
        )
        total_steps = int(self.trainer.estimated_stepping_batches)
        warmup_steps = int(self.hparams.warmup_ratio * total_steps)
        schedule = torch.optim.lr_scheduler.LambdaLR(
            optimizer, lambda step: warmup_cosine(step, total_steps, warmup_steps, self.hparams.min_lr_ratio)
        )
        return {"optimizer": optimizer, "lr_scheduler": {"scheduler": schedule, "interval": "step"}}

    def on_fit_start(self) -> None:
        # A `trainer.validate` before `fit` leaves metric states created under inference mode, which
        # the validation inside `fit` (run under no_grad) cannot update in place: start fresh.
        for metric in self.metrics.values():
            metric.reset()

    # --- export -------------------------------------------------------------------------------
    def on_train_end(self) -> None:
        if self.hparams.export_dir:
            self.export(self.hparams.export_dir)

    def export(self, directory: str | Path) -> None:
        """Save the trained model, tokenizer and chat template in Hugging Face format (``lit_models.export``);
        with an adapter, the peft adapter directory (and the merged model in ``directory/merged``)."""
        if not self.hparams.get("adapter"):
            export_pretrained(self, self.net, directory, self.tokenizer, self.empty_network_like)
            return
        merged = Path(directory) / MERGED_DIR if self.hparams.export_merged else None
        export_pretrained(self, self.net, directory, self.tokenizer,
                          lambda: self.with_adapter(self.empty_network_like()), merged_directory=merged)
