"""Batched sampling: left padding gives the same continuation as one prompt alone; stop strings; seeds."""

import torch

from almost.generation import SamplingConfig, cut_at_stop, generate
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
