"""Arithmetic on parameter-efficient modules, as pure functions on adapter state dicts.

Zhang et al. 2023, "Composing Parameter-Efficient Modules with Arithmetic Operations"
(https://arxiv.org/abs/2306.14870). A state dict maps names to tensors as peft stores them
(``get_peft_model_state_dict``, ``adapter_model.safetensors``):

- LoRA: ``<module>.lora_A.weight`` ``(r, in)`` and ``<module>.lora_B.weight`` ``(out, r)``; the module's weight
  becomes ``W + s B A`` with ``s = lora_alpha / r`` (``lora_alpha / sqrt(r)`` under rsLoRA).
- (IA)3: ``<module>.ia3_l``, ``(out, 1)`` scaling a module's output or ``(1, in)`` scaling a feed-forward module's
  input; either way the module's weight acts as ``W * l`` (broadcast), so ``l = 1`` is the identity.

Every function returns a new dict and leaves its inputs alone; tensors keep their dtype.
"""

from __future__ import annotations

import math
from typing import Sequence

import torch

StateDict = dict[str, torch.Tensor]
LORA_A, LORA_B = ".lora_A.weight", ".lora_B.weight"
IA3_KEY = ".ia3_l"


def lora_scaling(lora_alpha: float, r: int, use_rslora: bool = False) -> float:
    """``s`` in ``W + s B A``: ``lora_alpha / r``, or ``lora_alpha / sqrt(r)`` under rsLoRA (as peft computes it)."""
    return lora_alpha / math.sqrt(r) if use_rslora else lora_alpha / r


def lora_modules(state: StateDict) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module: (A (r, in), B (out, r))}`` from a LoRA state dict; every module must have both factors."""
    modules = {}
    for key in state:
        if key.endswith(LORA_A):
            module = key[: -len(LORA_A)]
            if module + LORA_B not in state:
                raise KeyError(f"{key} has no matching {module + LORA_B}")
            modules[module] = (state[key], state[module + LORA_B])
        elif not key.endswith(LORA_B):
            raise KeyError(f"{key} is neither a lora_A nor a lora_B weight")
    if len(modules) * 2 != len(state):
        raise KeyError("a lora_B weight has no matching lora_A weight")
    return modules


def lora_delta(a: torch.Tensor, b: torch.Tensor, scaling: float) -> torch.Tensor:
    """The weight update of one module, ``s B A``: ``a`` ``(r, in)``, ``b`` ``(out, r)`` -> ``(out, in)``."""
    return scaling * (b @ a)


def linear_combination(states: Sequence[StateDict], coefficients: Sequence[float]) -> StateDict:
    """The paper's addition, element-wise on every tensor: ``theta = sum_i c_i theta_i``.

    For LoRA this is ``{sum_i c_i A_i, sum_i c_i B_i}`` (section 3.2; two modules with ``c = (lambda, 1 - lambda)``).
    Its update ``s (sum_i c_i B_i)(sum_i c_i A_i)`` holds the cross terms ``c_i c_j B_i A_j`` (i != j): it is not
    ``sum_i c_i s B_i A_i`` (see :func:`lora_concat` for that). Needs the same keys and shapes, so equal ranks.
    """
    if len(states) != len(coefficients) or not states:
        raise ValueError(f"need one coefficient per state dict, got {len(coefficients)} for {len(states)}")
    keys = states[0].keys()
    for state in states[1:]:
        if state.keys() != keys:
            raise KeyError("state dicts to combine must have the same keys")
    combined = {}
    for key in keys:
        shapes = {tuple(s[key].shape) for s in states}
        if len(shapes) != 1:
            raise ValueError(f"{key}: shapes {sorted(shapes)} differ; element-wise addition needs equal shapes")
        combined[key] = sum(c * s[key] for c, s in zip(coefficients, states))
    return combined


def lora_negate(state: StateDict, lam: float = 1.0) -> StateDict:
    """LoRA negation scaled by ``lam``: ``{A, -lam B}``, whose update is ``-lam s B A`` (section 3.3).

    Only B changes sign: negating both factors would leave ``B A`` unchanged.
    """
    return {k: -lam * v if k.endswith(LORA_B) else v.clone() for k, v in state.items()}


def lora_concat(states: Sequence[StateDict], weights: Sequence[float], scalings: Sequence[float]) -> StateDict:
    """Exact weighted sum of LoRA updates by concatenating ranks; the result has scaling 1.

    Per module, with ``A_i`` ``(r_i, in)``, ``B_i`` ``(out, r_i)`` and scaling ``s_i``::

        A = [A_1; A_2; ...]                        # (sum r_i, in): stacked along the rank
        B = [w_1 s_1 B_1, w_2 s_2 B_2, ...]        # (out, sum r_i): concatenated along the rank
        B A = sum_i w_i s_i B_i A_i                # no cross terms

    Save the result with ``r = lora_alpha = sum r_i`` and no rsLoRA so that peft applies it with ``s = 1``.
    Ranks may differ; a negation is a negative weight.
    """
    if not len(states) == len(weights) == len(scalings) or not states:
        raise ValueError(f"need one weight and scaling per state dict: {len(states)}, {len(weights)}, {len(scalings)}")
    per_adapter = [lora_modules(s) for s in states]
    modules = per_adapter[0].keys()
    if any(m.keys() != modules for m in per_adapter[1:]):
        raise KeyError("LoRA state dicts to concatenate must hold the same modules")
    combined = {}
    for module in modules:
        factors = [m[module] for m in per_adapter]
        combined[module + LORA_A] = torch.cat([a for a, _ in factors], dim=0)  # (sum r_i, in)
        combined[module + LORA_B] = torch.cat(  # (out, sum r_i)
            [w * s * b for (_, b), w, s in zip(factors, weights, scalings)], dim=1)
    return combined


def ia3_add(states: Sequence[StateDict], coefficients: Sequence[float]) -> StateDict:
    """(IA)3 addition around the identity: ``l = 1 + sum_i c_i (l_i - 1)`` ((IA)3 vectors ``(out, 1)`` or ``(1, in)``).

    When the coefficients sum to 1 this is the paper's ``sum_i c_i l_i``, e.g. ``lambda l_1 + (1 - lambda) l_2``;
    written around 1 so that a term with a negative coefficient ``-lambda`` is :func:`ia3_negate`.
    """
    shifted = [{k: v - 1 for k, v in s.items()} for s in states]
    return {k: 1 + v for k, v in linear_combination(shifted, coefficients).items()}


def ia3_negate(state: StateDict, lam: float = 1.0) -> StateDict:
    """(IA)3 negation scaled by ``lam``: ``l -> 1 - lam (l - 1)``; ``lam = 1`` gives ``2 - l``.

    Reflects the scaling about the identity ``l = 1``, the (IA)3 counterpart of a negated update.
    """
    return {k: 1 - lam * (v - 1) for k, v in state.items()}


def naive_negate(state: StateDict) -> StateDict:
    """Negative control only: ``theta -> -theta`` on every tensor. Deliberately wrong, never for real use.

    For (IA)3 it gives ``-l``: the module's activations flip sign instead of having the learned scaling undone.
    For LoRA it negates both A and B, leaving the update ``B A`` unchanged. The study keeps it to show that
    the proper negations (:func:`ia3_negate`, :func:`lora_negate`) are what undo a skill.
    """
    return {k: -v for k, v in state.items()}
