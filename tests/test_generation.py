"""Batched sampling: left padding gives the same continuation as one prompt alone; stop strings; seeds; top-p and
temperature exactly as transformers' own warpers."""

import torch

from almost.batching import pad_sequences
from almost.generation import SamplingConfig, TemperatureTopP, cut_at_stop, generate, top_p_filter
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
