"""Batched sampling: left padding gives the same continuation as one prompt alone; stop strings; seeds; top-p and
temperature exactly as transformers' own warpers."""

from dataclasses import replace

import pytest
import torch

from almost import generation
from almost.batching import pad_sequences
from almost.generation import (MIN_SHARED_PREFIX, SamplingConfig, TemperatureTopP, common_prefix_length, cut_at_stop,
                               generate, shared_prefix_cache, top_p_filter)
from almost.models import ModelSource, build_causal_lm
from tests.conftest import TINY_ARCH


def tiny_lm(tokenizer_dir, tokenizer):
    torch.manual_seed(0)
    return build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer).eval()


def prompts(tokenizer):
    texts = ["User: What is 2 plus 2?\nAssistant:", "User: Hi\nAssistant:", "The capital of Veloria is"]
    return [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


def test_greedy_batch_equals_one_by_one(tokenizer_dir, tokenizer):
    model, batch = tiny_lm(tokenizer_dir, tokenizer), prompts(tokenizer)
    greedy = SamplingConfig(max_new_tokens=12, temperature=0)
    together = generate(model, tokenizer, batch, greedy, batch_size=3)
    alone = [generate(model, tokenizer, [p], greedy, batch_size=1)[0] for p in batch]
    assert [g.token_ids for g in together] == [g.token_ids for g in alone]
    assert all(len(g.token_ids) <= 12 for g in together)


def test_sampling_is_reproducible_under_a_seed(tokenizer_dir, tokenizer):
    model, batch = tiny_lm(tokenizer_dir, tokenizer), prompts(tokenizer)
    sampling = SamplingConfig(max_new_tokens=10, temperature=1.0, top_p=0.9)
    first = generate(model, tokenizer, batch, sampling, seed=3)
    assert first == generate(model, tokenizer, batch, sampling, seed=3)
    assert first != generate(model, tokenizer, batch, sampling, seed=4)


def test_cut_at_earliest_stop_string():
    assert cut_at_stop("yes.\nUser: more\nAssistant:", ["\nAssistant:", "\nUser:"]) == ("yes.", True)
    assert cut_at_stop("no stop here", ["\nUser:"]) == ("no stop here", False)


def test_top_p_keeps_the_smallest_set_reaching_top_p():
    # probabilities 0.5, 0.3, 0.15, 0.05: mass at or below each token 1, 0.5, 0.2, 0.05
    logits = torch.tensor([[0.5, 0.3, 0.15, 0.05]]).log()
    inf = float("-inf")
    assert top_p_filter(logits, 0.75).tolist() == [[logits[0, 0].item(), logits[0, 1].item(), inf, inf]]
    assert top_p_filter(logits, 0.3).tolist() == [[logits[0, 0].item(), inf, inf, inf]]
    assert top_p_filter(logits, 1e-6)[0, 0] == logits[0, 0]  # the most probable token always stays
    # equal logits across the cut: two of the three 0.2s go, as transformers' sort decides
    tied = torch.tensor([[0.2, 0.4, 0.2, 0.2]]).log()
    kept = top_p_filter(tied, 0.5).isfinite()
    assert kept[0, 1] and kept.sum() == 2


def test_top_p_and_temperature_equal_transformers_warpers():
    from transformers import TemperatureLogitsWarper, TopPLogitsWarper

    generator = torch.Generator().manual_seed(0)
    for vocab, scale in ((7, 1.0), (400, 3.0), (5000, 0.5), (5000, 8.0)):
        raw = torch.randn(16, vocab, generator=generator) * scale
        for scores in (raw, (raw * 2).round() / 2):  # the second with many equal logits
            for top_p in (0.1, 0.5, 0.9, 0.95, 0.999):
                assert torch.equal(top_p_filter(scores, top_p), TopPLogitsWarper(top_p)(None, scores))
                theirs = TopPLogitsWarper(top_p)(None, TemperatureLogitsWarper(0.7)(None, scores))
                assert torch.equal(TemperatureTopP(0.7, top_p)(None, scores), theirs)
    assert TemperatureTopP(1.0, 1.0)(None, raw) is raw


def test_sampling_equals_transformers_own_sampling(tokenizer_dir, tokenizer):
    model, batch = tiny_lm(tokenizer_dir, tokenizer), prompts(tokenizer)
    input_ids, attention_mask = pad_sequences(batch, tokenizer.pad_token_id, side="left")
    for temperature, top_p, stops in ((1.0, 0.9, ("\nUser:",)), (0.7, 0.5, ()), (1.5, 0.99, ("e", "\n"))):
        sampling = SamplingConfig(max_new_tokens=10, temperature=temperature, top_p=top_p, stop_strings=stops)
        for seed in range(3):
            ours = generate(model, tokenizer, batch, sampling, batch_size=3, seed=seed)
            torch.manual_seed(seed)
            theirs = model.generate(input_ids=input_ids, attention_mask=attention_mask, do_sample=True,
                                    temperature=temperature, top_p=top_p, top_k=None, max_new_tokens=10,
                                    pad_token_id=tokenizer.pad_token_id, eos_token_id=tokenizer.eos_token_id,
                                    **(dict(stop_strings=list(stops), tokenizer=tokenizer) if stops else {}))
            for generation, row in zip(ours, theirs[:, input_ids.shape[1]:].tolist()):
                assert list(generation.token_ids) == row[:len(generation.token_ids)]
                assert set(row[len(generation.token_ids):]) <= {tokenizer.pad_token_id}


GEMMA3_ARCH = {"model_type": "gemma3_text", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
               "num_attention_heads": 2, "num_key_value_heads": 1, "head_dim": 16, "sliding_window": 160,
               "layer_types": ["sliding_attention", "full_attention"], "max_position_embeddings": 256}


def shared_prefix_prompts(tokenizer):
    """Three prompts after one few-shot prefix (two of them the same prompt, as n samples of one query)."""
    prefix = "User: What is 2 plus 2?\nAssistant: It is 4.\nUser: Hi\nAssistant: Hello!\n"
    texts = [prefix + "User: Name a colour.\nAssistant:", prefix + "User: Why?\nAssistant:",
             prefix + "User: Why?\nAssistant:"]
    return [[tokenizer.bos_token_id] + tokenizer(t, add_special_tokens=False)["input_ids"] for t in texts]


@pytest.mark.parametrize("arch", [TINY_ARCH, GEMMA3_ARCH], ids=["llama", "gemma3-sliding-window"])
def test_shared_prefix_gives_each_prompt_its_own_next_token_logits(tokenizer_dir, tokenizer, arch):
    torch.manual_seed(0)
    model = build_causal_lm(ModelSource(arch=arch, tokenizer=tokenizer_dir), tokenizer).eval()
    batch = shared_prefix_prompts(tokenizer)
    input_ids, attention_mask, cache = shared_prefix_cache(model, batch, tokenizer.pad_token_id, "cpu")
    length = common_prefix_length(batch)
    assert length >= MIN_SHARED_PREFIX and cache.get_seq_length() == length
    assert input_ids[:, :length].tolist() == [batch[0][:length]] * 3
    assert [row[m.bool()].tolist() for row, m in zip(input_ids, attention_mask)] == batch  # pads sit in the middle
    positions = (attention_mask.cumsum(-1) - 1).clamp(min=0)  # as generate counts them
    with torch.no_grad():
        shared = model(input_ids=input_ids[:, length:], attention_mask=attention_mask, past_key_values=cache,
                       position_ids=positions[:, length:]).logits[:, -1]  # (3, V)
        alone = torch.stack([model(input_ids=torch.tensor([p])).logits[0, -1] for p in batch])
    torch.testing.assert_close(shared, alone, atol=1e-5, rtol=1e-5)


@pytest.mark.parametrize("arch", [TINY_ARCH, GEMMA3_ARCH], ids=["llama", "gemma3-sliding-window"])
def test_shared_prefix_generates_what_the_plain_batch_does(tokenizer_dir, tokenizer, arch, monkeypatch):
    torch.manual_seed(0)
    model = build_causal_lm(ModelSource(arch=arch, tokenizer=tokenizer_dir), tokenizer).eval()
    batch = shared_prefix_prompts(tokenizer) + prompts(tokenizer)[2:]  # the last one shares only BOS: plain batch
    greedy = SamplingConfig(max_new_tokens=16, temperature=0)
    caches = []  # what shared_prefix_cache gave generate, per batch
    monkeypatch.setattr(generation, "shared_prefix_cache", lambda *a, **k: caches.append(shared_prefix_cache(*a, **k))
                        or caches[-1])
    for chunk in (3, 4):
        plain = generate(model, tokenizer, batch, greedy, batch_size=chunk)
        assert caches == []  # off unless asked for
        shared = generate(model, tokenizer, batch, replace(greedy, share_prefix=True), batch_size=chunk)
        assert [g.token_ids for g in shared] == [g.token_ids for g in plain]
        # chunk 3: the three prompts with the few-shot prefix share it, the fourth batch is one prompt alone;
        # chunk 4: the four prompts share only BOS, so nothing is shared
        assert [c is not None for c in caches] == ([True, False] if chunk == 3 else [False])
        caches.clear()
    assert shared_prefix_cache(model, batch, tokenizer.pad_token_id, "cpu") is None  # nothing shared by all four
    assert shared_prefix_cache(model, batch[:1], tokenizer.pad_token_id, "cpu") is None  # one prompt alone
    window = getattr(model.config, "sliding_window", None)
    if window is not None:  # rows must fit in the window, or slots of pads would hide real tokens: then no sharing
        room = window - max(len(p) for p in batch[:3])
        assert shared_prefix_cache(model, batch[:3], tokenizer.pad_token_id, "cpu", max_new_tokens=room) is not None
        assert shared_prefix_cache(model, batch[:3], tokenizer.pad_token_id, "cpu", max_new_tokens=room + 1) is None
