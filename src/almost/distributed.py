"""FSDP2 sharding of transformers models and gathering their full weights for export."""

from __future__ import annotations

import torch
from torch import nn


def decoder_layers(model: nn.Module) -> list[nn.Module]:
    """The repeated transformer blocks of a transformers model (the units FSDP shards one by one)."""
    classes = set(getattr(model, "_no_split_modules", None) or [])
    for module in model.modules():  # wrappers (reward model, peft) hide the attribute on an inner model
        classes |= set(getattr(module, "_no_split_modules", None) or [])
    layers = [m for m in model.modules() if type(m).__name__ in classes]
    if not layers:
        raise ValueError(f"found no decoder layers to shard in {type(model).__name__}")
    return layers


def shard_model(model: nn.Module, mesh) -> nn.Module:
    """``fully_shard`` each decoder layer, then the root, over the 1-D data-parallel ``mesh``.

    Mixed precision is left to the Trainer's precision plugin (autocast), as on a single device.
    """
    from torch.distributed.fsdp import fully_shard

    for layer in decoder_layers(model):
        fully_shard(layer, mesh=mesh)
    fully_shard(model, mesh=mesh)
    return model


def is_sharded(model: nn.Module) -> bool:
    from torch.distributed.tensor import DTensor

    return any(isinstance(p, DTensor) for p in model.parameters())


def full_state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Unsharded CPU weights of ``model``. Collective when sharded: every rank must call it.

    On a sharded model only rank 0 receives the weights (other ranks get an empty dict).
    """
    if not is_sharded(model):
        return {k: v.detach().cpu() for k, v in model.state_dict().items()}
    from torch.distributed.checkpoint.state_dict import StateDictOptions, get_model_state_dict

    return get_model_state_dict(model, options=StateDictOptions(full_state_dict=True, cpu_offload=True))
