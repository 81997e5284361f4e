"""Batched sampling from a causal LM: left padding, KV cache, temperature / top-p, stop strings.

Sampling is transformers' ``model.generate`` with our own temperature / top-p step (:class:`TemperatureTopP`): it
keeps exactly the tokens transformers' warpers keep without their sort of token indices, which on Gemma 3's
262,144-token vocabulary cost as much as the forward pass of a decoding step (``benchmarks/generation_real.py
--profile``).
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from functools import lru_cache
from typing import Iterator, Sequence

import numpy as np
import torch
from transformers import LogitsProcessor, LogitsProcessorList, StoppingCriteriaList, TopPLogitsWarper
from transformers.generation.stopping_criteria import StopStringCriteria

from almost.batching import pad_sequences


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.9
    stop_strings: tuple[str, ...] = ()
    # Run the forward pass of the prompts' common first tokens (a few-shot prompt's demonstrations) once per batch
    # and share its KV cache: the same distribution, but float rounding differs from the unshared pass, so a seed
    # may sample other tokens. Off by default (the sandbox's outputs stay bit-identical); see shared_prefix_cache.
    share_prefix: bool = False


@dataclass(frozen=True)
class Generation:
    text: str  # decoded response, cut before the first stop string, stripped
    token_ids: tuple[int, ...]  # generated ids up to and including EOS (if emitted), without padding
    finished: bool  # ended by EOS or a stop string rather than by max_new_tokens


def _chunks(items: Sequence, size: int) -> Iterator[tuple[int, Sequence]]:
    for start in range(0, len(items), size):
        yield start // size, items[start:start + size]


def cut_at_stop(text: str, stop_strings: Sequence[str]) -> tuple[str, bool]:
    """``text`` before the earliest stop string, and whether one was found."""
    cuts = [text.index(s) for s in stop_strings if s in text]
    return (text[: min(cuts)], True) if cuts else (text, False)


def sorted_logits(scores: torch.Tensor) -> torch.Tensor:
    """``scores`` ``(B, V)`` sorted ascending along the vocabulary, values only. On CPU numpy's sort (vectorised,
    values only) took 0.12 s for 32 x 262,144 float32 logits where ``torch.sort``, which also sorts the indices, took
    1.05 s (2 cores, AVX2, other jobs running)."""
    if scores.device.type == "cpu" and scores.dtype in (torch.float32, torch.float64):
        return torch.from_numpy(np.sort(scores.detach().numpy(), axis=-1))
    return scores.sort(dim=-1).values


def top_p_filter(scores: torch.Tensor, top_p: float) -> torch.Tensor:
    """Nucleus (top-p) filtering (Holtzman et al. 2020, https://arxiv.org/abs/1904.09751) of logits ``scores``
    ``(B, V)``: a copy with every token outside its row's nucleus set to ``-inf``.

    Exactly what transformers' ``TopPLogitsWarper(top_p)`` returns (min_tokens_to_keep 1), computed the same way:
    the logits sorted ascending, their softmax, its cumulative sum ``c``; the first ``n = #{c <= 1 - top_p}`` sorted
    positions go, the last always stays. ``c`` depends on the sorted values only, not on which token holds which,
    so the warper's sort with indices is needed only where equal logits straddle the cut (sent through the warper);
    elsewhere the kept tokens are those with a logit at least the smallest kept one.
    """
    ascending = sorted_logits(scores)  # (B, V)
    mass_at_or_below = ascending.softmax(dim=-1).cumsum(dim=-1)  # (B, V): the warper's cumulative_probs
    removed = (mass_at_or_below <= 1 - top_p).sum(dim=-1, keepdim=True).clamp(max=scores.shape[-1] - 1)  # (B, 1)
    smallest_kept = ascending.gather(-1, removed)  # (B, 1)
    filtered = scores.masked_fill(scores < smallest_kept, float("-inf"))  # (B, V)
    largest_removed = ascending.gather(-1, (removed - 1).clamp(min=0))  # (B, 1)
    tie = ((removed > 0) & (largest_removed == smallest_kept))[:, 0]  # (B,)
    if tie.any():
        filtered[tie] = TopPLogitsWarper(top_p)(None, scores[tie])
    return filtered


class TemperatureTopP(LogitsProcessor):
    """transformers' ``TemperatureLogitsWarper`` then ``TopPLogitsWarper``, with :func:`top_p_filter` for the second.
    ``model.generate`` then samples from ``softmax`` of the result, as with its own warpers."""

    def __init__(self, temperature: float, top_p: float) -> None:
        self.temperature, self.top_p = temperature, top_p

    def __call__(self, input_ids: torch.LongTensor, scores: torch.Tensor) -> torch.Tensor:
        if self.temperature != 1.0:
            scores = scores / self.temperature
        return top_p_filter(scores, self.top_p) if self.top_p < 1.0 else scores


@lru_cache(maxsize=8)
def stop_string_criteria(tokenizer, stop_strings: tuple[str, ...]) -> StopStringCriteria:
    """What ``model.generate(stop_strings=...)`` builds on every call, built once: its constructor reads and sorts
    the whole vocabulary (about 1.3 s for Gemma's 262k tokens, even when transformers has cached the rest)."""
    return StopStringCriteria(tokenizer, list(stop_strings))


MIN_SHARED_PREFIX = 16  # tokens; a shorter common prefix is not worth a separate forward pass


def common_prefix_length(prompts: Sequence[Sequence[int]]) -> int:
    """Number of first tokens that every prompt shares."""
    shortest = min(len(p) for p in prompts)
    first = prompts[0]
    return next((i for i in range(shortest) if any(p[i] != first[i] for p in prompts)), shortest)


@torch.no_grad()
def shared_prefix_cache(model, prompts: Sequence[Sequence[int]], pad: int, device,
                        max_new_tokens: int = 0) -> tuple[torch.Tensor, torch.Tensor, object] | None:
    """``(input_ids, attention_mask, cache)`` for ``model.generate`` with the prompts' common prefix computed once,
    or None when the batch has one prompt, shares fewer than ``MIN_SHARED_PREFIX`` tokens, or would outgrow a
    sliding attention window (with ``max_new_tokens`` generated).

    The prefix's KV cache is computed for one row and repeated over the batch; each prompt's remaining tokens
    (at least one, so a batch of one prompt repeated still has a token to start from) follow it after the padding
    that aligns their ends, so the rows read ``prefix, pads, rest``: generate gives the pads no attention and
    counts positions from the attention mask, so every real token keeps its position. A sliding window, though,
    spans cache slots, pads included: sharing is refused unless every row fits in the window, where the window
    hides nothing (Gemma 3's is 512 tokens).
    """
    if len(prompts) < 2:
        return None
    length = min(common_prefix_length(prompts), min(len(p) for p in prompts) - 1)
    window = getattr(model.config.get_text_config(), "sliding_window", None)
    longest = length + max(len(p) - length for p in prompts) + max_new_tokens
    if length < MIN_SHARED_PREFIX or (window is not None and longest > window):
        return None
    prefix = torch.tensor([list(prompts[0][:length])], device=device)  # (1, P)
    keep = {"logits_to_keep": 1} if "logits_to_keep" in inspect.signature(model.forward).parameters else {}
    cache = model(input_ids=prefix, use_cache=True, **keep).past_key_values  # no logits over the whole prefix
    cache.batch_repeat_interleave(len(prompts))
    rest_ids, rest_mask = pad_sequences([p[length:] for p in prompts], pad, side="left")  # (B, R)
    input_ids = torch.cat([prefix.expand(len(prompts), -1), rest_ids.to(device)], dim=1)  # (B, P + R)
    attention_mask = torch.cat([torch.ones_like(prefix).expand(len(prompts), -1), rest_mask.to(device)], dim=1)
    return input_ids, attention_mask, cache


@torch.no_grad()
def generate(model, tokenizer, prompts: Sequence[Sequence[int]], sampling: SamplingConfig, batch_size: int = 16,
             seed: int = 0) -> list[Generation]:
    """One sampled continuation per prompt (token ids), in prompt order.

    Batch ``i`` is sampled after ``torch.manual_seed(seed + i)``, so a run is reproducible for a
    given seed and batch size.
    """
    model.eval()
    device = next(model.parameters()).device
    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    results: list[Generation] = []
    for index, batch in _chunks(prompts, batch_size):
        shared = (shared_prefix_cache(model, batch, pad, device, sampling.max_new_tokens) if sampling.share_prefix
                  else None)
        if shared is None:
            input_ids, attention_mask = pad_sequences(batch, pad, side="left")
            cache = {}
        else:
            input_ids, attention_mask, past = shared
            cache = {"past_key_values": past}
        torch.manual_seed(seed + index)
        if sampling.temperature == 0:
            options = dict(do_sample=False)
        else:  # transformers' temperature and top-p warpers off, ours in their place
            warper = TemperatureTopP(sampling.temperature, sampling.top_p)
            options = dict(do_sample=True, temperature=1.0, top_p=1.0, logits_processor=LogitsProcessorList([warper]))
        if sampling.stop_strings:
            options.update(stopping_criteria=StoppingCriteriaList(
                [stop_string_criteria(tokenizer, tuple(sampling.stop_strings))]))
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=eos, top_k=None, **cache, **options,
        )[:, input_ids.shape[1]:].tolist()  # (B, new tokens)
        for ids in output:
            if eos in ids:
                ids = ids[: ids.index(eos) + 1]
            while ids and ids[-1] == pad and pad != eos:
                ids = ids[:-1]
            text, stopped = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), sampling.stop_strings)
            results.append(Generation(text.strip(), tuple(ids), stopped or (bool(ids) and ids[-1] == eos)))
    return results
