"""TRL's DPO loss (``DPOTrainer``'s own loss code, trl 1.16) on a batch given as JSON, for the parity test
``tests/test_dpo_trl.py``, which compares it with ``almost.dpo.dpo_loss``. Runs in the peer's TRL 1.16 environment:

    /tmp/peer-trl116/bin/python benchmarks/trl_dpo_loss.py < batch.json     # prints {"sigmoid": ..., "ipo": ...}

The JSON holds the batch, either in TRL's layout (``input_ids``, ``attention_mask``, ``completion_mask``: ``(2B, T)``,
the B chosen rows then the B rejected ones) or as ``examples`` (``prompt_ids``, ``chosen_ids``, ``rejected_ids`` per
pair, batched by TRL's ``DataCollatorForPreference`` with ``pad_token_id``); ``beta``, ``loss_types``; and where
the per-token log-probs come from, either

- ``policy_token_logps`` / ``reference_token_logps`` ``(2B, T - 1)``: fixed values, returned by stand-in models in
  place of TRL's fused LM head (zero where the next token is not a completion token, as that head returns them); or
- ``policy`` / ``reference``: model directories, loaded in fp32 and given TRL's fused LM head as ``DPOTrainer`` does;
  ``policy_head_scale`` multiplies the policy's LM head weights (so that the policy differs from the reference).

``DPOTrainer._compute_loss`` runs on a stand-in for the trainer holding only what that method reads (a
single-process CPU ``Accelerator``, the loss settings, empty metrics), so no dataset, optimizer or training loop is
built. Every loss is computed in float64 when the log-probs are given, in fp32 from models.
"""

from __future__ import annotations

import json
import sys
from collections import defaultdict
from types import SimpleNamespace

import torch
from torch import nn


class FixedLogProbs(nn.Module):
    """Stands in for a model with TRL's fused LM head: returns the given per-token log-probs, zero where the label
    is -100, and zero metrics (entropy, mean logits, top-1), whatever the input."""

    def __init__(self, token_logps: torch.Tensor) -> None:
        super().__init__()
        self.token_logps = token_logps  # (2B, T - 1)
        self.is_gradient_checkpointing = False

    def forward(self, labels: torch.Tensor, **_):
        from trl.trainer.utils import FusedCausalLMOutput

        scored = labels[:, 1:] != -100  # (2B, T - 1)
        zeros = torch.zeros_like(self.token_logps)
        return FusedCausalLMOutput(log_probs=self.token_logps.masked_fill(~scored, 0.0), entropy=zeros,
                                   mean_logits=zeros, is_top1=torch.zeros_like(scored))


def load_with_fused_head(path: str, head_scale: float = 1.0) -> nn.Module:
    from transformers import AutoModelForCausalLM
    from trl.trainer.utils import add_fused_lm_head

    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32)
    with torch.no_grad():
        model.get_output_embeddings().weight.mul_(head_scale)
    add_fused_lm_head(model, outputs=("log_probs", "entropy", "mean_logits", "is_top1"))  # as DPOTrainer does
    return model.train()


def trl_dpo_loss(policy: nn.Module, reference: nn.Module, inputs: dict[str, torch.Tensor], beta: float,
                 loss_type: str) -> float:
    """``DPOTrainer._compute_loss`` on ``inputs`` with a live reference, one loss type, standard (reverse-KL) DPO."""
    from accelerate import Accelerator
    from trl import DPOTrainer

    trainer = SimpleNamespace(
        model=policy, ref_model=reference, accelerator=Accelerator(cpu=True), beta=beta, loss_types=[loss_type],
        loss_weights=[1.0], ld_alpha=None, precompute_ref_logps=False, aux_loss_enabled=False,
        f_divergence_type="reverse_kl", f_alpha_divergence_coef=0.5, use_weighting=False, label_smoothing=0.0,
        _metrics={"train": defaultdict(list), "eval": defaultdict(list)}, _total_train_tokens=0, _tp_size=1,
        args=SimpleNamespace(gradient_checkpointing_kwargs=None))
    with torch.no_grad():
        return DPOTrainer._compute_loss(trainer, policy, inputs, return_outputs=False).item()


def main() -> None:
    spec = json.load(sys.stdin)
    if "examples" in spec:
        from trl.trainer.dpo_trainer import DataCollatorForPreference

        inputs = DataCollatorForPreference(pad_token_id=spec["pad_token_id"])(spec["examples"])
    else:
        inputs = {name: torch.tensor(spec[name]) for name in ("input_ids", "attention_mask", "completion_mask")}
    if "policy_token_logps" in spec:
        policy = FixedLogProbs(torch.tensor(spec["policy_token_logps"], dtype=torch.float64))
        reference = FixedLogProbs(torch.tensor(spec["reference_token_logps"], dtype=torch.float64))
    else:
        torch.set_num_threads(1)
        policy = load_with_fused_head(spec["policy"], spec.get("policy_head_scale", 1.0))
        reference = load_with_fused_head(spec["reference"]).eval()
    print(json.dumps({kind: trl_dpo_loss(policy, reference, inputs, spec["beta"], kind)
                      for kind in spec["loss_types"]}))


if __name__ == "__main__":
    main()
