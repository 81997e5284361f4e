"""One factory for every model of the pipeline: causal LMs and reward models.

A model comes either from a local directory in Hugging Face format (``ModelSource(path=...)``) or
is built with fresh weights from a small architecture dict (``ModelSource(arch={...},
tokenizer=...)``). Nothing here contacts a model hub: paths must exist locally. A path may also name a
GGUF file (or a directory holding one): it is converted once into a cached Hugging Face directory
(``almost.gguf``) and loaded from there.

The reward model is a causal-LM backbone (the transformer without its LM head) with a scalar head,
read at the last real token of each sequence. It saves as ``save_pretrained`` of the backbone plus
``reward_head.safetensors``, so transformers loads the backbone and :meth:`RewardModel.from_pretrained`
loads the whole model.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

from almost.batching import position_ids_from_mask
from almost.distributed import is_sharded
from almost.losses import gather_last, last_token_index

HEAD_FILE = "reward_head.safetensors"


@dataclass
class ModelSource:
    """Where a model comes from.

    Args:
        path: local directory in Hugging Face format (weights, config, usually the tokenizer), or a ``.gguf``
            file or a directory holding one (converted once, see ``almost.gguf``).
        arch: instead of ``path``: a transformers config as a dict (with ``model_type``) for fresh
            weights; vocabulary size and special token ids are taken from the tokenizer.
        tokenizer: tokenizer directory (or GGUF file); defaults to ``path``.
        trust_remote_code: allow code shipped inside ``path`` to run (off by default).
        dtype: dtype of the loaded weights (``float32``, ``bfloat16``, ``float16``).
    """

    path: str | None = None
    arch: dict[str, Any] | None = None
    tokenizer: str | None = None
    trust_remote_code: bool = False
    dtype: str = "float32"

    def __post_init__(self) -> None:
        if (self.path is None) == (self.arch is None):
            raise ValueError("ModelSource needs exactly one of 'path' (a local HF directory) or 'arch' (a config dict)")
        if self.arch is not None and self.tokenizer is None:
            raise ValueError("ModelSource with 'arch' needs 'tokenizer' (a local tokenizer directory)")
        if self.arch is not None and "model_type" not in self.arch:
            raise ValueError("ModelSource.arch needs a 'model_type' key, e.g. 'llama'")

    @classmethod
    def of(cls, source: "ModelSource | dict[str, Any]") -> "ModelSource":
        """``source`` itself, or a ModelSource from its fields as plain data (a config dict)."""
        return source if isinstance(source, ModelSource) else cls(**dict(source))

    @property
    def tokenizer_dir(self) -> str:
        return self.tokenizer or self.path  # type: ignore[return-value]

    @property
    def torch_dtype(self) -> torch.dtype:
        return getattr(torch, self.dtype)


def _local_dir(path: str, what: str) -> str:
    """``path``, a local directory, or the converted Hugging Face directory of a GGUF ``path``."""
    from almost.gguf import resolve

    path = resolve(path)
    if not Path(path).is_dir():
        raise FileNotFoundError(f"{what} directory {path!r} does not exist (models are only read from local directories)")
    return path


def load_tokenizer(source: ModelSource):
    """The tokenizer of ``source``, with a pad token (EOS when the tokenizer has none)."""
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(
        _local_dir(source.tokenizer_dir, "tokenizer"), trust_remote_code=source.trust_remote_code
    )
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def _arch_config(source: ModelSource, tokenizer):
    from transformers import AutoConfig

    arch = dict(source.arch)  # type: ignore[arg-type]
    model_type = arch.pop("model_type")
    return AutoConfig.for_model(
        model_type, vocab_size=len(tokenizer), pad_token_id=tokenizer.pad_token_id,
        bos_token_id=tokenizer.bos_token_id, eos_token_id=tokenizer.eos_token_id, **arch,
    )


def build_causal_lm(source: ModelSource, tokenizer) -> nn.Module:
    """A ``*ForCausalLM`` model from a local directory or from ``source.arch`` (fresh weights)."""
    from transformers import AutoModelForCausalLM

    if source.arch is not None:
        return AutoModelForCausalLM.from_config(_arch_config(source, tokenizer), dtype=source.torch_dtype)
    return AutoModelForCausalLM.from_pretrained(
        _local_dir(source.path, "model"), dtype=source.torch_dtype, trust_remote_code=source.trust_remote_code
    )


def disable_dropout(model: nn.Module) -> None:
    """Zero every dropout probability: the first PPO minibatch must see ``pi == pi_old`` (ratio 1), and
    rollout, scoring and updates must see the same function whatever the module's train/eval mode."""
    for module in model.modules():
        if isinstance(module, nn.Dropout):
            module.p = 0.0
        if isinstance(getattr(module, "attention_dropout", None), float):  # transformers attention modules
            module.attention_dropout = 0.0


class RewardModel(nn.Module):
    """Backbone + scalar head. ``forward`` gives per-token values ``(B, T)``; ``score`` the reward ``(B,)``."""

    def __init__(self, backbone: nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        hidden = backbone.config.hidden_size
        self.head = nn.Linear(hidden, 1)
        nn.init.normal_(self.head.weight, std=1.0 / (hidden + 1) ** 0.5)
        nn.init.zeros_(self.head.bias)
        self.head.to(next(backbone.parameters()).dtype)

    @classmethod
    def build(cls, source: ModelSource, tokenizer) -> "RewardModel":
        """From a saved reward model (backbone and head), a causal LM (new head) or ``source.arch``."""
        from transformers import AutoModel

        if source.arch is not None:
            return cls(AutoModel.from_config(_arch_config(source, tokenizer), dtype=source.torch_dtype))
        path = _local_dir(source.path, "model")
        model = cls(AutoModel.from_pretrained(path, dtype=source.torch_dtype, trust_remote_code=source.trust_remote_code))
        if Path(path, HEAD_FILE).is_file():
            from safetensors.torch import load_file

            model.head.load_state_dict(load_file(str(Path(path, HEAD_FILE))))
        return model

    @classmethod
    def load(cls, source: ModelSource, tokenizer=None) -> "RewardModel":
        """The one reward-model loader: a saved reward model from ``source.path`` (its head file must be there: a
        causal LM would get a random head), or fresh weights from ``source.arch`` (``tokenizer`` needed)."""
        if source.path is None:
            return cls.build(source, tokenizer)
        if not Path(source.path, HEAD_FILE).is_file():
            raise FileNotFoundError(f"{source.path!r} holds no {HEAD_FILE}: not a saved reward model")
        return cls.build(source, tokenizer)

    @classmethod
    def from_pretrained(cls, path: str, **source_kwargs) -> "RewardModel":
        """Load a reward model saved by :meth:`save_pretrained` (the head file must be there)."""
        return cls.load(ModelSource(path=path, **source_kwargs))

    def forward(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """``input_ids``, ``attention_mask`` ``(B, T)`` -> values ``(B, T)`` (one scalar per position)."""
        hidden = self.backbone(
            input_ids=input_ids, attention_mask=attention_mask,
            position_ids=position_ids_from_mask(attention_mask), use_cache=False,
        ).last_hidden_state  # (B, T, H)
        # clone: a fresh tensor, not a view, so that FSDP2's backward hooks attach safely
        return self.head(hidden).squeeze(-1).float().clone()  # (B, T)

    def score(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """Reward of each sequence, read at its last real token: ``(B, T)`` -> ``(B,)``.

        Only that token's final hidden state is needed, so for Llama backbones (unsharded) the last decoder layer
        runs for that token alone (:func:`last_token_hidden`): the same scores, with about ``1/n_layers`` less work.
        """
        if self.backbone.config.model_type not in LAST_TOKEN_MODEL_TYPES or is_sharded(self.backbone):
            return gather_last(self(input_ids, attention_mask), attention_mask)
        hidden = last_token_hidden(self.backbone, input_ids, attention_mask)  # (B, H)
        return self.head(hidden).squeeze(-1).float()

    def save_pretrained(self, directory: str | Path, state_dict: dict[str, torch.Tensor] | None = None) -> None:
        """Backbone in HF format plus the head; ``state_dict`` (full, unsharded) overrides the weights."""
        from safetensors.torch import save_file

        directory = Path(directory)
        state_dict = state_dict if state_dict is not None else self.state_dict()
        backbone_state = {k.removeprefix("backbone."): v for k, v in state_dict.items() if k.startswith("backbone.")}
        head_state = {k.removeprefix("head."): v.contiguous() for k, v in state_dict.items() if k.startswith("head.")}
        self.backbone.save_pretrained(str(directory), state_dict=backbone_state)
        save_file(head_state, str(directory / HEAD_FILE))


LAST_TOKEN_MODEL_TYPES = ("llama",)  # decoder layers whose structure last_token_hidden repeats


class _LastLayerInputs(Exception):
    """Raised by a pre-hook of the last decoder layer to stop the backbone there, carrying the layer's inputs."""

    def __init__(self, hidden_states: torch.Tensor, position_embeddings: tuple[torch.Tensor, torch.Tensor]) -> None:
        super().__init__()
        self.hidden_states, self.position_embeddings = hidden_states, position_embeddings


def last_token_hidden(backbone: nn.Module, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
    """Final hidden state ``(B, H)`` of each row's last real token (left or right padding), as the full backbone
    gives it, but with the last decoder layer run for that token only: keys and values over all positions, query,
    attention output and MLP for one position. A Llama decoder layer (``LAST_TOKEN_MODEL_TYPES``), unsharded."""

    def stop(module, args, kwargs):
        raise _LastLayerInputs(args[0] if args else kwargs["hidden_states"], kwargs["position_embeddings"])

    layer = backbone.layers[-1]
    handle = layer.register_forward_pre_hook(stop, with_kwargs=True)
    try:  # 1. every layer but the last, over all positions
        backbone(input_ids=input_ids, attention_mask=attention_mask,
                 position_ids=position_ids_from_mask(attention_mask), use_cache=False)
        raise RuntimeError("the backbone never reached its last decoder layer")
    except _LastLayerInputs as inputs:
        hidden, (cos, sin) = inputs.hidden_states, inputs.position_embeddings  # (B, T, H), (B, T, D) each
    finally:
        handle.remove()
    # 2. the last layer: keys and values of every position, everything else for the last real token
    from transformers.models.llama.modeling_llama import apply_rotary_pos_emb

    attention, batch, length = layer.self_attn, hidden.shape[0], hidden.shape[1]
    rows, last = torch.arange(batch, device=hidden.device), last_token_index(attention_mask)  # (B,), (B,)
    normed = layer.input_layernorm(hidden)  # (B, T, H)
    heads = lambda x, n: x.view(batch, n, -1, attention.head_dim).transpose(1, 2)  # noqa: E731 (B, heads, n, D)
    keys, values = heads(attention.k_proj(normed), length), heads(attention.v_proj(normed), length)
    query = heads(attention.q_proj(normed[rows, last][:, None]), 1)  # (B, heads, 1, D)
    query, _ = apply_rotary_pos_emb(query, query, cos[rows, last][:, None], sin[rows, last][:, None])
    keys, _ = apply_rotary_pos_emb(keys, keys, cos, sin)
    groups = query.shape[1] // keys.shape[1]  # grouped-query attention: each key/value head serves `groups`
    keys, values = keys.repeat_interleave(groups, 1), values.repeat_interleave(groups, 1)
    visible = attention_mask.bool()[:, None, None, :]  # (B, 1, 1, T): every real token precedes the last one
    dropout = attention.attention_dropout if attention.training else 0.0
    attended = torch.nn.functional.scaled_dot_product_attention(query, keys, values, attn_mask=visible,
                                                                dropout_p=dropout, scale=attention.scaling)
    out = hidden[rows, last] + attention.o_proj(attended.transpose(1, 2).reshape(batch, -1))  # (B, H)
    out = out + layer.mlp(layer.post_attention_layernorm(out))
    return backbone.norm(out)  # (B, H)
