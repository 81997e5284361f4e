"""peft adapters trained by a stage: the config from plain data, attached to a network, merged, loaded back.

A training stage (``lit_models.base.TrainingStage``) takes ``adapter``, the keyword arguments of a peft config
together with its ``peft_type`` (one argument for both kinds)::

    adapter: {peft_type: LORA, r: 8, lora_alpha: 16, target_modules: [q_proj, v_proj]}
    adapter: {peft_type: IA3, target_modules: [k_proj, v_proj, down_proj], feedforward_modules: [down_proj]}

``get_peft_model`` freezes every weight of the wrapped model but the adapter's. What the stage exports is a
standard peft adapter directory (``adapter_config.json`` + ``adapter_model.safetensors``) that
``PeftModel.from_pretrained(base, directory)`` loads and ``python -m almost.pem`` composes; its
``base_model_name_or_path`` is the stage's ``source.path``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, Mapping

from torch import nn

PEFT_TYPES = ("LORA", "IA3")  # the kinds almost.pem composes
REFUSED_OPTIONS = ("modules_to_save", "use_dora")  # almost.pem cannot compose adapters made with them


def adapter_config(spec: Mapping[str, Any], base: str | None = None, task_type: str | None = None):
    """The peft config of ``spec`` (``peft_type`` plus that config's keyword arguments) for a model loaded from
    ``base`` (None for fresh weights); ``task_type`` is the stage's (``CAUSAL_LM``, or None for a bare backbone).

    Raises ValueError, in one line, for another peft type, an option almost.pem refuses, an unknown keyword.
    """
    from peft import get_peft_config

    spec = dict(spec)
    peft_type = str(spec.pop("peft_type", "")).upper()
    if peft_type not in PEFT_TYPES:
        raise ValueError(f"adapter: peft_type must be one of {', '.join(PEFT_TYPES)}, got {peft_type or None!r}")
    for option in REFUSED_OPTIONS:
        if spec.get(option):
            raise ValueError(f"adapter: {option} is not supported (almost.pem cannot compose such adapters)")
    for fixed in ("task_type", "base_model_name_or_path", "inference_mode"):
        if fixed in spec:
            raise ValueError(f"adapter: {fixed!r} is set by the stage, leave it out")
    try:
        return get_peft_config({**spec, "peft_type": peft_type, "task_type": task_type,
                                "base_model_name_or_path": base})
    except TypeError as e:  # an unknown keyword
        raise ValueError(f"adapter ({peft_type}): {e}") from None


def attach_adapter(model: nn.Module, spec: Mapping[str, Any], base: str | None = None,
                   task_type: str | None = None) -> nn.Module:
    """``model`` wrapped in a ``PeftModel`` holding a fresh adapter of ``spec``; only the adapter is trainable."""
    from peft import get_peft_model

    return get_peft_model(model, adapter_config(spec, base, task_type))


def merge_adapters(net: nn.Module) -> nn.Module:
    """``net`` with its adapter merged into the weights: a ``PeftModel`` merged and unwrapped, or every
    ``PeftModel`` child (the reward model's backbone) replaced by its merged model. Changes ``net`` in place."""
    from peft import PeftModel

    if isinstance(net, PeftModel):
        return net.merge_and_unload()
    for name, child in list(net.named_children()):
        if isinstance(child, PeftModel):
            setattr(net, name, child.merge_and_unload())
    return net


def trainable_names(net: nn.Module) -> list[str]:
    """Names of the parameters that require gradients."""
    return [name for name, p in net.named_parameters() if p.requires_grad]


def load_reward_model(adapter_dir: str | Path, base: str | None = None, merge: bool = True):
    """A reward model exported with an adapter: the backbone of ``base`` (default: the adapter's
    ``base_model_name_or_path``) with the adapter, and the head saved beside it (``reward_head.safetensors``)."""
    from peft import PeftModel
    from safetensors.torch import load_file

    from almost.models import HEAD_FILE, ModelSource, RewardModel

    adapter_dir = Path(adapter_dir)
    base = base or json.loads((adapter_dir / "adapter_config.json").read_text())["base_model_name_or_path"]
    model = RewardModel.build(ModelSource(path=base), tokenizer=None)
    model.backbone = PeftModel.from_pretrained(model.backbone, str(adapter_dir))
    model.head.load_state_dict(load_file(str(adapter_dir / HEAD_FILE)))
    return merge_adapters(model) if merge else model
