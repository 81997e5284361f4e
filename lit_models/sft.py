"""Supervised fine-tuning on demonstrations: cross-entropy on response tokens only."""

from __future__ import annotations

import torch
from torchmetrics import MeanMetric

from almost.logprobs import response_logprobs
from almost.losses import response_token_loss
from almost.models import build_causal_lm
from lit_models.base import TrainingStage

EVAL_SPLITS = ("val", "test")


class SFTModule(TrainingStage):
    """Fine-tunes a causal LM on the assistant turns of demonstrations.

    Batches come from ``data_modules.DemonstrationDataModule`` (``labels`` = -100 off the assistant
    turns). Logs ``{split}/loss`` (mean over response tokens) and ``{split}/perplexity``: per step
    in training, token-weighted over the whole epoch in validation and test.
    """

    def make_metrics(self) -> dict[str, MeanMetric]:
        metrics = {}
        for split in EVAL_SPLITS:
            metrics[f"{split}_loss"], metrics[f"{split}_perplexity"] = MeanMetric(), Perplexity()
        return metrics

    def build_network(self) -> torch.nn.Module:
        return build_causal_lm(self.source, self.tokenizer)

    def empty_network_like(self) -> torch.nn.Module:
        from transformers import AutoModelForCausalLM

        return AutoModelForCausalLM.from_config(self.net.config)

    def shared_step(self, batch: dict[str, torch.Tensor], split: str) -> torch.Tensor:
        # 1. forward over the whole conversation
        logits = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        # 2. cross-entropy on the response tokens
        loss, n_tokens = response_token_loss(logits, batch["labels"])
        # 3. log: per step in training, token-weighted over the epoch in evaluation
        if split == "train":
            self.log("train/loss", loss.detach(), prog_bar=True, batch_size=batch["input_ids"].shape[0])
            self.log("train/perplexity", loss.detach().exp(), batch_size=batch["input_ids"].shape[0])
        else:
            for name in ("loss", "perplexity"):
                metric = self.metrics[f"{split}_{name}"]
                metric.update(loss.detach(), weight=n_tokens)
                self.log(f"{split}/{name}", metric, prog_bar=name == "loss", on_step=False, on_epoch=True)
        return loss

    def predict_step(self, batch, batch_idx) -> dict[str, torch.Tensor]:
        """Log-likelihood of each conversation's assistant turns (summed) and their number of tokens."""
        logits = self.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"], use_cache=False).logits
        logprob_sum, n_tokens = response_logprobs(logits, batch["labels"])
        return {"response_logprob": logprob_sum, "response_tokens": n_tokens}


class Perplexity(MeanMetric):
    """``exp`` of the weighted mean of the per-token loss (weights = token counts)."""

    def compute(self) -> torch.Tensor:
        return super().compute().exp()
