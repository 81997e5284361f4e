"""Batched sampling from a causal LM: left padding, KV cache, temperature / top-p, stop strings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Iterator, Sequence

import torch

from almost.batching import pad_sequences


@dataclass(frozen=True)
class SamplingConfig:
    """How to sample. ``temperature == 0`` means greedy decoding."""

    max_new_tokens: int = 64
    temperature: float = 1.0
    top_p: float = 0.9
    stop_strings: tuple[str, ...] = ()


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
        input_ids, attention_mask = pad_sequences(batch, pad, side="left")
        torch.manual_seed(seed + index)
        options = dict(do_sample=True, temperature=sampling.temperature, top_p=sampling.top_p)
        if sampling.temperature == 0:
            options = dict(do_sample=False)
        if sampling.stop_strings:
            options.update(stop_strings=list(sampling.stop_strings), tokenizer=tokenizer)
        output = model.generate(
            input_ids=input_ids.to(device), attention_mask=attention_mask.to(device),
            max_new_tokens=sampling.max_new_tokens, pad_token_id=pad, eos_token_id=eos, top_k=None, **options,
        )[:, input_ids.shape[1]:].tolist()  # (B, new tokens)
        for ids in output:
            if eos in ids:
                ids = ids[: ids.index(eos) + 1]
            while ids and ids[-1] == pad and pad != eos:
                ids = ids[:-1]
            text, stopped = cut_at_stop(tokenizer.decode(ids, skip_special_tokens=True), sampling.stop_strings)
            results.append(Generation(text.strip(), tuple(ids), stopped or (bool(ids) and ids[-1] == eos)))
    return results
