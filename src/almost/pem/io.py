"""Adapter directories in and out: load peft adapters, refuse incompatible ones, compose, save.

An adapter directory is what peft's ``save_pretrained`` writes: ``adapter_config.json`` and
``adapter_model.safetensors``. :func:`save_adapter` writes the same two files (plus ``pem_recipe.json``, which
peft ignores), so ``PeftModel.from_pretrained(base, directory)`` loads a composed adapter unchanged.

Supported: LoRA (without DoRA, rank or alpha patterns, bias or ``modules_to_save``) and (IA)3 (without
``modules_to_save``). Anything else is refused on loading with a one-line message.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Literal, Sequence

from almost.pem.ops import (IA3_KEY, StateDict, ia3_add, linear_combination, lora_concat, lora_modules, lora_negate,
                            lora_scaling)

CONFIG_FILE = "adapter_config.json"
WEIGHTS_FILE = "adapter_model.safetensors"
RECIPE_FILE = "pem_recipe.json"  # how a composed adapter was made; peft ignores it
Mode = Literal["paper", "exact"]


class AdapterError(ValueError):
    """An adapter that cannot be used, or adapters that cannot be composed; the message is one line."""


@dataclass(frozen=True)
class Adapter:
    """One loaded adapter directory."""

    name: str  # label from the command line, used in messages
    path: str
    config: dict  # adapter_config.json as peft wrote it
    state: StateDict  # adapter_model.safetensors

    @property
    def label(self) -> str:
        return f"{self.name!r} ({self.path})"

    @property
    def peft_type(self) -> str:
        return self.config.get("peft_type")

    @property
    def rank(self) -> int:
        return self.config["r"]

    @property
    def scaling(self) -> float:
        """``s`` of the LoRA update ``s B A``."""
        return lora_scaling(self.config["lora_alpha"], self.config["r"], bool(self.config.get("use_rslora")))


@dataclass(frozen=True)
class Term:
    """An adapter in a composition: added with weight ``c``, or negated with strength ``lambda``."""

    adapter: Adapter
    weight: float  # c for an added adapter, lambda for a negated one
    negate: bool = False

    @property
    def signed_weight(self) -> float:
        """The coefficient of the adapter's update in the exact sum: ``c``, or ``-lambda`` for a negation."""
        return -self.weight if self.negate else self.weight

    def describe(self) -> dict:
        return {"name": self.adapter.name, "path": self.adapter.path, "weight": self.weight, "negate": self.negate}


def _refuse_unsupported(name: str, path: str, config: dict, state: StateDict) -> None:
    where = f"adapter {name!r} ({path})"
    peft_type = config.get("peft_type")
    if peft_type not in ("LORA", "IA3"):
        raise AdapterError(f"{where}: peft type {peft_type!r} is not supported (LORA or IA3)")
    if config.get("modules_to_save"):
        raise AdapterError(f"{where}: modules_to_save {config['modules_to_save']} is not supported")
    if peft_type == "IA3":
        bad = [k for k in state if not k.endswith(IA3_KEY)]
        if bad:
            raise AdapterError(f"{where}: unexpected key {bad[0]!r} in an IA3 adapter")
        return
    for option in ("use_dora", "rank_pattern", "alpha_pattern", "lora_bias"):
        if config.get(option):
            raise AdapterError(f"{where}: {option}={config[option]!r} is not supported")
    if config.get("bias", "none") != "none":
        raise AdapterError(f"{where}: bias={config['bias']!r} is not supported (only 'none')")
    try:
        modules = lora_modules(state)
    except KeyError as e:
        raise AdapterError(f"{where}: {e.args[0]}") from None
    for module, (a, b) in modules.items():
        if a.shape[0] != config["r"] or b.shape[1] != config["r"]:
            raise AdapterError(f"{where}: {module} has rank {a.shape[0]} but the config says r={config['r']}")


def load_adapter(path: str | Path, name: str | None = None) -> Adapter:
    """The adapter saved in ``path`` by peft's ``save_pretrained``; ``name`` defaults to the folder name."""
    from safetensors.torch import load_file

    directory = Path(path)
    name = name or directory.name
    for file in (CONFIG_FILE, WEIGHTS_FILE):
        if not (directory / file).is_file():
            raise AdapterError(f"adapter {name!r} ({path}): no {file} (expected a peft adapter directory)")
    config = json.loads((directory / CONFIG_FILE).read_text(encoding="utf-8"))
    state = load_file(str(directory / WEIGHTS_FILE))
    _refuse_unsupported(name, str(path), config, state)
    return Adapter(name, str(path), config, state)


def _targets(config: dict):
    targets = config.get("target_modules")
    return sorted(targets) if isinstance(targets, (list, tuple, set)) else targets


def _mismatch(a: Adapter, b: Adapter, what: str, value_a, value_b, hint: str = "") -> AdapterError:
    return AdapterError(f"adapters {a.label} and {b.label} have different {what}: {value_a!r} vs {value_b!r}{hint}")


def check_compatible(adapters: Sequence[Adapter], equal_shapes: bool) -> None:
    """Refuse adapters that cannot be composed, naming the first pair that differs and how.

    All must share the peft type, ``base_model_name_or_path``, ``target_modules`` and key set.
    ``equal_shapes`` (element-wise arithmetic: LoRA in paper mode, (IA)3) also needs equal ranks, equal LoRA
    scalings and equal tensor shapes.
    """
    first = adapters[0]
    for other in adapters[1:]:
        for what, value in (("peft type", lambda x: x.peft_type),
                            ("base_model_name_or_path", lambda x: x.config.get("base_model_name_or_path")),
                            ("target_modules", lambda x: _targets(x.config)),
                            ("feedforward_modules", lambda x: _targets({"target_modules":
                                                                        x.config.get("feedforward_modules")}))):
            if value(first) != value(other):
                raise _mismatch(first, other, what, value(first), value(other))
        if first.state.keys() != other.state.keys():
            only_first, only_other = sorted(first.state.keys() - other.state.keys()), sorted(
                other.state.keys() - first.state.keys())
            example = (only_first or only_other)[0]
            raise AdapterError(f"adapters {first.label} and {other.label} have different key sets: "
                               f"{len(only_first)} keys only in {first.name!r}, {len(only_other)} only in "
                               f"{other.name!r} (e.g. {example!r})")
        if not equal_shapes:
            continue
        hint = " (--mode paper adds A and B element-wise; --mode exact concatenates ranks)"
        if first.peft_type == "LORA" and first.rank != other.rank:
            raise _mismatch(first, other, "ranks r", first.rank, other.rank, hint)
        if first.peft_type == "LORA" and first.scaling != other.scaling:
            raise _mismatch(first, other, "LoRA scalings (lora_alpha / r)", first.scaling, other.scaling, hint)
        for key, tensor in first.state.items():
            if tensor.shape != other.state[key].shape:
                raise _mismatch(first, other, f"shapes of {key}", tuple(tensor.shape),
                                tuple(other.state[key].shape))


def compose(terms: Sequence[Term], mode: Mode = "paper") -> tuple[StateDict, dict]:
    """The composed adapter's ``(state dict, adapter config)``, after :func:`check_compatible`.

    - LoRA, ``paper``: the paper's element-wise arithmetic, ``sum_i c_i theta_i`` where an added adapter is
      ``{A, B}`` with ``c`` its weight and a negated one is ``{A, -lambda B}`` with ``c = 1``. Needs equal ranks
      and scalings; the config is the first adapter's.
    - LoRA, ``exact``: the update is exactly ``sum_i w_i s_i B_i A_i`` (``w = c``, or ``-lambda`` for a negation),
      by :func:`almost.pem.ops.lora_concat`; the config gets ``r = lora_alpha = sum r_i`` (scaling 1).
    - (IA)3 (paper mode only): ``1 + sum_i w_i (l_i - 1)`` by :func:`almost.pem.ops.ia3_add`.
    """
    if mode not in ("paper", "exact"):
        raise AdapterError(f"unknown mode {mode!r} (paper or exact)")
    if not terms:
        raise AdapterError("nothing to compose: give at least one adapter to add or negate")
    adapters = [t.adapter for t in terms]
    peft_type = adapters[0].peft_type
    if peft_type == "IA3" and mode == "exact":
        raise AdapterError(f"adapter {adapters[0].label}: --mode exact is defined for LoRA only; use --mode paper")
    check_compatible(adapters, equal_shapes=mode == "paper")
    config = {**adapters[0].config, "inference_mode": True}
    if peft_type == "IA3":
        state = ia3_add([a.state for a in adapters], [t.signed_weight for t in terms])
    elif mode == "paper":
        states = [lora_negate(t.adapter.state, t.weight) if t.negate else t.adapter.state for t in terms]
        state = linear_combination(states, [1.0 if t.negate else t.weight for t in terms])
    else:
        state = lora_concat([a.state for a in adapters], [t.signed_weight for t in terms],
                            [a.scaling for a in adapters])
        total_rank = sum(a.rank for a in adapters)
        config.update(r=total_rank, lora_alpha=total_rank, use_rslora=False)
    return state, config


def save_adapter(directory: str | Path, state: StateDict, config: dict, recipe: dict | None = None) -> Path:
    """Write ``state`` and ``config`` as a peft adapter directory (and ``recipe`` as ``pem_recipe.json``)."""
    from safetensors.torch import save_file

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    (directory / CONFIG_FILE).write_text(json.dumps(config, indent=2, sort_keys=True) + "\n", encoding="utf-8")
    save_file({k: v.detach().contiguous() for k, v in state.items()}, str(directory / WEIGHTS_FILE),
              metadata={"format": "pt"})
    if recipe is not None:
        (directory / RECIPE_FILE).write_text(json.dumps(recipe, indent=2) + "\n", encoding="utf-8")
    return directory


def compose_to_dir(terms: Sequence[Term], mode: Mode, directory: str | Path) -> tuple[StateDict, dict]:
    """:func:`compose` then :func:`save_adapter` with the recipe; returns what was saved."""
    state, config = compose(terms, mode)
    save_adapter(directory, state, config, {"mode": mode, "terms": [t.describe() for t in terms]})
    return state, config

