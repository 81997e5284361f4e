"""Direct Preference Optimization: the policy learns from comparisons directly, against a frozen reference."""

from __future__ import annotations

import copy
import hashlib
import json
from contextlib import contextmanager
from dataclasses import fields
from pathlib import Path
from typing import Any, Callable, Iterator, Literal

import torch
from lightning.pytorch.utilities import rank_zero_info
from torch import nn
from torch.utils.data import DataLoader
from torchmetrics import MeanMetric

from almost.distributed import shard_model
from almost.dpo import DPOStats, dpo_loss
from almost.logprobs import response_logprobs
from almost.models import ModelSource, build_causal_lm, disable_dropout
from data_modules.preference import PreferenceDataModule
from lit_models.base import TrainingStage
from lit_models.export import export_pretrained

EVAL_SPLITS = ("val", "test")
METRICS = ("loss",) + tuple(f.name for f in fields(DPOStats))
CACHE_SUFFIX = ".dpo_reference.pt"  # the cache of reference log-probs, beside its data file


class DPOModule(TrainingStage):
    """DPO (Rafailov et al. 2023) and its IPO / cDPO variants on comparisons (see ``almost.dpo``).

    Batches come from ``data_modules.PreferenceDataModule``. The reference is the initial policy, frozen.
    Logs ``{split}/loss``, ``{split}/reward_chosen``, ``{split}/reward_rejected``, ``{split}/reward_margin`` and
    ``{split}/reward_accuracy`` (implicit rewards ``beta (log pi - log ref)``): per step in training, averaged over
    the epoch (all processes) in validation and test.

    Args:
        source: the initial policy (usually the SFT model); also the reference.
        beta: strength of the implicit KL penalty to the reference.
        loss: ``sigmoid`` (DPO), ``ipo`` or ``cdpo`` (DPO with ``label_smoothing`` > 0).
        label_smoothing: cDPO's assumed share of wrong labels, in (0, 0.5); only with ``loss: cdpo``.
        reference: where the reference log-probs come from:
            ``copy``: a frozen copy of the initial policy (a second model in memory, one more forward per step);
            ``adapter``: with ``lora``, the policy with its adapter disabled (no second model);
            ``cached``: one no-grad pass of the initial policy over every pair of the data files before training,
            saved beside each file (``<file>.dpo_reference.pt``) under a key of the sha256 of the file, of the
            reference weights, and of what changes the log-probs (max length, template, vocabulary, precision);
            a changed key recomputes. No second model and no reference forward pass per step.
        lora: ``peft.LoraConfig`` keyword arguments; the policy trains only the adapter, export merges it.
        lr: peak learning rate; the default is the DPO paper's.
        compile: ``torch.compile`` the forward passes of the policy and of the reference copy: fuses the small
            element-wise operations (norms, rotary embeddings, activations) around the matmuls, which pays on a CPU
            with small models (``benchmarks/compare_trl.py``); the first steps pay the compilation (and one more
            when a new sequence length turns on dynamic shapes). Single process, without LoRA.
        Other arguments: see ``TrainingStage``.
    """

    def __init__(
        self,
        source: ModelSource,
        beta: float = 0.1,
        loss: Literal["sigmoid", "ipo", "cdpo"] = "sigmoid",
        label_smoothing: float = 0.0,
        reference: Literal["copy", "adapter", "cached"] = "copy",
        lora: dict[str, Any] | None = None,
        lr: float = 1e-6,
        weight_decay: float = 0.0,
        warmup_ratio: float = 0.03,
        min_lr_ratio: float = 0.0,
        gradient_checkpointing: bool = False,
        compile: bool = False,
        export_dir: str | None = None,
    ) -> None:
        if compile and lora:
            raise ValueError("DPOModule(compile=True) is for a full fine-tune: not combined with lora")
        if loss not in ("sigmoid", "ipo", "cdpo"):
            raise ValueError(f"unknown DPO loss {loss!r} (expected sigmoid, ipo or cdpo)")
        if loss == "cdpo" and not 0.0 < label_smoothing < 0.5:
            raise ValueError(f"loss 'cdpo' needs label_smoothing in (0, 0.5), got {label_smoothing}")
        if loss != "cdpo" and label_smoothing:
            raise ValueError(f"label_smoothing is cDPO's parameter: set loss 'cdpo' (got loss {loss!r})")
        if reference not in ("copy", "adapter", "cached"):
            raise ValueError(f"unknown reference {reference!r} (expected copy, adapter or cached)")
        if reference == "adapter" and not lora:
            raise ValueError("reference 'adapter' is the policy with its LoRA adapter disabled: it needs 'lora'")
        super().__init__(source, lr=lr, weight_decay=weight_decay, warmup_ratio=warmup_ratio, min_lr_ratio=min_lr_ratio,
                         gradient_checkpointing=gradient_checkpointing, export_dir=export_dir)
        self.reference: nn.Module | None = None  # `copy`: built in configure_model, once
        self.reference_weights: str | None = None  # `cached`: sha256 of the initial weights, set in configure_model
        self.reference_table: torch.Tensor | None = None  # `cached`: (N, 2) chosen, rejected log-probs by record_index
        self.policy_updated = False  # an optimizer step was taken or a checkpoint loaded: the policy left the reference
        # with ``compile``: the compiled forwards of the policy and the reference copy, by network (a plain dict of
        # functions, so that no network is registered twice)
        self.compiled: dict[int, Callable[..., Any]] = {}

    def make_metrics(self) -> dict[str, MeanMetric]:
        return {f"{split}_{name}": MeanMetric() for split in EVAL_SPLITS for name in METRICS}

    # --- model --------------------------------------------------------------------------------
    @property
    def policy_lm(self) -> nn.Module:
        """The causal LM inside the policy (under LoRA: the model inside peft, adapters injected)."""
        return self.net.get_base_model() if self.hparams.lora else self.net

    def build_network(self) -> nn.Module:
        net = build_causal_lm(self.source, self.tokenizer)
        disable_dropout(net)  # at the start the policy must equal the reference, in train mode too
        net.train()  # from_pretrained gives eval mode, where transformers skips gradient checkpointing
        if self.hparams.reference == "copy":
            self.reference = copy.deepcopy(net).requires_grad_(False)
        elif self.hparams.reference == "cached":
            self.reference_weights = weights_sha256(net)
        if self.hparams.lora:
            from peft import LoraConfig, get_peft_model

            net = get_peft_model(net, LoraConfig(**{"task_type": "CAUSAL_LM", **self.hparams.lora}))
            disable_dropout(net)  # LoRA's own dropout
        return net

    def configure_model(self) -> None:
        if self.net is not None:  # Lightning may call this more than once
            return
        super().configure_model()
        if self.reference is not None and self.device_mesh is not None:  # FSDP2, as the policy
            shard_model(self.reference, self.device_mesh["data_parallel"])
        if self.hparams.compile:
            if self.device_mesh is not None or (self._trainer is not None and self.trainer.world_size > 1):
                raise ValueError("DPOModule(compile=True) runs in a single process")
            self.compiled = {id(net): torch.compile(net.forward) for net in (self.net, self.reference) if net is not None}

    def empty_network_like(self) -> nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(self.policy_lm.config, dtype=self.source.torch_dtype)

    @contextmanager
    def reference_policy(self) -> Iterator[nn.Module]:
        """The frozen initial policy: the copy, the policy with its adapter disabled, or (``cached`` without LoRA,
        to fill the cache) the policy itself while it still holds its initial weights."""
        if self.reference is not None:
            yield self.reference
        elif self.hparams.lora:
            with self.net.disable_adapter():
                yield self.net
        elif not self.policy_updated:
            yield self.net
        else:
            raise RuntimeError(f"the cache of reference log-probs ({CACHE_SUFFIX} beside the data) is missing or stale "
                               "and the policy no longer holds its initial weights: restart from the source")

    # --- the DPO step -------------------------------------------------------------------------
    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        hp = self.hparams
        # 1. policy log-probs of the chosen and rejected responses (one forward pass over 2B rows)
        policy_chosen, policy_rejected = self.response_logps(self.net, batch)
        # 2. reference log-probs: from the cache, or one no-grad forward pass of the reference
        ref_chosen, ref_rejected = self.reference_logps(batch)
        # 3. DPO loss and the implicit rewards
        kind = "ipo" if hp.loss == "ipo" else "sigmoid"
        loss, stats = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, hp.beta, kind,
                               hp.label_smoothing)
        # 4. log
        self.log_stats(split, loss, stats, batch_size=len(policy_chosen))
        return loss

    def response_logps(self, net: nn.Module, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        """Summed log-probs of the chosen and of the rejected responses under ``net``, ``(B,)`` each."""
        input_ids = torch.cat([batch["chosen_input_ids"], batch["rejected_input_ids"]])  # (2B, T)
        attention_mask = torch.cat([batch["chosen_attention_mask"], batch["rejected_attention_mask"]])  # (2B, T)
        labels = torch.cat([batch["chosen_labels"], batch["rejected_labels"]])  # (2B, T)
        forward = self.compiled.get(id(net), net)
        logits = forward(input_ids=input_ids, attention_mask=attention_mask, use_cache=False).logits  # (2B, T, V)
        logps, _ = response_logprobs(logits, labels)  # (2B,)
        return logps.chunk(2)

    def reference_logps(self, batch: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        if self.hparams.reference == "cached":
            rows = self.reference_table[batch["record_index"]]  # (B, 2)
            return rows[:, 0], rows[:, 1]
        with torch.no_grad(), self.reference_policy() as reference:
            return self.response_logps(reference, batch)

    def log_stats(self, split: str, loss: torch.Tensor, stats: DPOStats, batch_size: int) -> None:
        """Training: this process's batch, per step. Evaluation: the epoch's mean over all processes."""
        values = {"loss": loss.detach(), **{f.name: getattr(stats, f.name) for f in fields(stats)}}
        for name, value in values.items():
            if split == "train":
                self.log(f"train/{name}", value, prog_bar=name == "loss", batch_size=batch_size)
                continue
            metric = self.metrics[f"{split}_{name}"]
            metric.update(value, weight=batch_size)
            self.log(f"{split}/{name}", metric, prog_bar=name in ("loss", "reward_accuracy"), on_step=False,
                     on_epoch=True)

    def on_before_optimizer_step(self, optimizer) -> None:
        self.policy_updated = True

    def on_load_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        self.policy_updated = True

    # --- the cached reference -----------------------------------------------------------------
    def on_fit_start(self) -> None:
        super().on_fit_start()
        self.prepare_reference_table()

    def on_validation_start(self) -> None:
        self.prepare_reference_table()

    def on_test_start(self) -> None:
        self.prepare_reference_table()

    def prepare_reference_table(self) -> None:
        """``cached``: each data file's reference log-probs, loaded from beside it or computed and saved there."""
        if self.hparams.reference != "cached" or self.reference_table is not None:
            return
        data = self.trainer.datamodule
        if not isinstance(data, PreferenceDataModule):
            raise TypeError("DPOModule(reference='cached') needs a PreferenceDataModule: it caches beside the data")
        tables = []
        for number, file in enumerate(data.files):
            cache, key = Path(str(file) + CACHE_SUFFIX), self.cache_key(file, data)
            table = load_reference_cache(cache, key) if self.global_rank == 0 else None
            table = self.trainer.strategy.broadcast(table)  # all ranks compute or none (FSDP's passes are collective)
            if table is None:
                rank_zero_info(f"DPO: reference log-probs of {len(data.file_records[number])} pairs of {file}")
                table = self.compute_reference_table(data.file_loader(number))
                if self.global_rank == 0:
                    torch.save({"key": key, "logps": table}, cache)
            if len(table) != len(data.file_records[number]):
                raise RuntimeError(f"{cache}: {len(table)} rows for {len(data.file_records[number])} pairs")
            tables.append(table)
        self.trainer.strategy.barrier("dpo reference cache")
        self.reference_table = torch.cat(tables).to(self.device)  # (N, 2)

    def cache_key(self, file: str | Path, data: PreferenceDataModule) -> str:
        vocabulary = json.dumps(sorted(data.tokenizer.get_vocab().items()))
        parts = {"data": file_sha256(file), "reference": self.reference_weights,
                 "max_length": data.hparams.max_length, "template": data.hparams.template,
                 "vocabulary": hashlib.sha256(vocabulary.encode()).hexdigest(),
                 "precision": str(self.trainer.precision)}
        return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()

    def compute_reference_table(self, loader: DataLoader) -> torch.Tensor:
        """``(N, 2)`` float32 on the CPU: the reference's chosen and rejected log-probs of every pair of ``loader``."""
        rows = []
        forward_context = self.trainer.precision_plugin.forward_context()  # autocast, as in the training step
        with torch.no_grad(), forward_context, self.reference_policy() as reference:
            for batch in loader:
                batch = {name: tensor.to(self.device) for name, tensor in batch.items()}
                chosen, rejected = self.response_logps(reference, batch)
                rows.append(torch.stack([chosen, rejected], dim=-1).float().cpu())  # (B, 2)
        return torch.cat(rows)

    # --- export -------------------------------------------------------------------------------
    def export(self, directory: str | Path) -> None:
        """Save the full policy (LoRA merged into its weights), the tokenizer and the chat template. Collective
        under FSDP."""
        export_pretrained(self, self.policy_lm, directory, self.tokenizer, self.empty_network_like,
                          lora=self.hparams.lora)


def file_sha256(path: str | Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def weights_sha256(net: nn.Module) -> str:
    """sha256 over every tensor of ``net``'s state dict: names, dtypes, shapes and bytes."""
    digest = hashlib.sha256()
    for name, tensor in sorted(net.state_dict().items()):
        digest.update(f"{name}:{tensor.dtype}:{tuple(tensor.shape)}".encode())
        digest.update(tensor.detach().cpu().contiguous().reshape(-1).view(torch.uint8).numpy())
    return digest.hexdigest()


def load_reference_cache(path: Path, key: str) -> torch.Tensor | None:
    """The cached ``(N, 2)`` table, or None when there is no cache or its key differs."""
    if not path.is_file():
        return None
    cache = torch.load(path, weights_only=True)
    return cache["logps"] if cache.get("key") == key else None
