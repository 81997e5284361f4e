"""Export at the end of ``fit``, shared by every training stage: the full (unsharded) weights and the tokenizer
in Hugging Face format, and the chat template the stage's data were rendered with (``almost.scorers``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable

import lightning as L
from torch import nn

from almost.adapters import merge_adapters
from almost.distributed import full_state_dict
from almost.scorers import save_template


def export_pretrained(stage: L.LightningModule, net: nn.Module, directory: str | Path, tokenizer,
                      empty_network: Callable[[], nn.Module], lora: dict[str, Any] | None = None,
                      merged_directory: str | Path | None = None) -> None:
    """Save ``net`` to ``directory``. Collective under FSDP: every rank gathers, rank 0 writes.

    ``empty_network()`` builds an unsharded network of the same architecture (on rank 0 only), which loads the
    weights and is saved with its ``save_pretrained``; each output directory also gets the tokenizer and template.

    - With ``lora`` (``peft.LoraConfig`` keyword arguments; PPO and DPO) ``net`` holds injected adapters: the copy
      gets the same adapter, loads the weights, and is saved with the adapter merged into them.
    - When ``net`` trains a peft adapter of its own (``TrainingStage(adapter=...)``), ``empty_network()`` holds the
      same adapter and ``save_pretrained`` writes a peft adapter directory (the reward model adds its head);
      ``merged_directory``, if given, gets the full network with the adapter merged into the weights.
    """
    state = full_state_dict(net)  # every rank takes part; rank 0 gets the weights
    if stage.global_rank == 0:
        target = empty_network()
        if lora:
            from peft import LoraConfig, get_peft_model

            peft_net = get_peft_model(target, LoraConfig(**{"task_type": "CAUSAL_LM", **lora}))
            peft_net.get_base_model().load_state_dict(state)
            target = peft_net.merge_and_unload()
        else:
            target.load_state_dict(state)
        _save(stage, target, directory, tokenizer)
        if merged_directory is not None:  # after the adapter directory: merging changes `target` in place
            _save(stage, merge_adapters(target), merged_directory, tokenizer)
    stage.trainer.strategy.barrier("export")


def _save(stage: L.LightningModule, target: nn.Module, directory: str | Path, tokenizer) -> None:
    target.save_pretrained(str(directory))
    tokenizer.save_pretrained(str(directory))
    datamodule = stage.trainer.datamodule if stage._trainer is not None else None
    template = getattr(datamodule, "template", None)
    if template is not None:
        save_template(directory, template)
