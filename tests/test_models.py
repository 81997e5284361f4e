"""Model factory, reward read-out under padding, and Hugging Face-format round trips."""

import pytest
import torch

from almost.batching import pad_sequences
from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from tests.conftest import TINY_ARCH

SEQUENCES = [[2, 40, 41, 42, 43, 44, 3], [2, 50, 51, 3], [2, 60, 61, 62, 3]]
# Absolute position embeddings: left padding shifts positions unless they are counted from the mask
# (with RoPE, as in TINY_ARCH, a shift cancels out and would hide that bug).
TINY_GPT2 = {"model_type": "gpt2", "n_embd": 32, "n_layer": 2, "n_head": 2, "n_positions": 64}


@pytest.fixture(params=["llama", "gpt2"])
def reward_model(request, tokenizer_dir):
    torch.manual_seed(0)
    source = ModelSource(arch=TINY_ARCH if request.param == "llama" else TINY_GPT2, tokenizer=tokenizer_dir)
    return RewardModel.build(source, load_tokenizer(source)).eval()


def test_source_needs_exactly_one_origin(tokenizer_dir):
    with pytest.raises(ValueError, match="exactly one"):
        ModelSource()
    with pytest.raises(ValueError, match="exactly one"):
        ModelSource(path="x", arch=TINY_ARCH)
    with pytest.raises(ValueError, match="needs 'tokenizer'"):
        ModelSource(arch=TINY_ARCH)
    with pytest.raises(ValueError, match="model_type"):
        ModelSource(arch={"hidden_size": 8}, tokenizer=tokenizer_dir)
    assert ModelSource(path="x").trust_remote_code is False


def test_only_local_directories(tokenizer):
    with pytest.raises(FileNotFoundError, match="local"):
        build_causal_lm(ModelSource(path="some-org/some-model"), tokenizer)
    with pytest.raises(FileNotFoundError, match="local"):
        load_tokenizer(ModelSource(path="some-org/some-model"))


def test_arch_takes_vocab_and_special_ids_from_tokenizer(tokenizer_dir, tokenizer):
    lm = build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer)
    assert lm.config.vocab_size == len(tokenizer) == 400
    assert (lm.config.pad_token_id, lm.config.bos_token_id, lm.config.eos_token_id) == (0, 2, 3)


@torch.no_grad()
def test_reward_read_at_last_real_token_under_left_and_right_padding(reward_model):
    alone = torch.stack([reward_model.score(torch.tensor([s]), torch.ones(1, len(s), dtype=torch.long))[0]
                         for s in SEQUENCES])
    right = reward_model.score(*pad_sequences(SEQUENCES, 0, "right"))
    left = reward_model.score(*pad_sequences(SEQUENCES, 0, "left"))
    torch.testing.assert_close(right, alone, atol=1e-5, rtol=0)
    torch.testing.assert_close(left, alone, atol=1e-5, rtol=0)
    # and it is the value at the final token, not at any other position
    values = reward_model(torch.tensor([SEQUENCES[0]]), torch.ones(1, 7, dtype=torch.long))
    assert torch.isclose(values[0, -1], alone[0], atol=1e-6, rtol=0) and not torch.isclose(values[0, -2], alone[0])


@pytest.mark.parametrize("kv_heads, checkpointing", [(4, False), (2, False), (2, True)])  # MHA, GQA; recompute
def test_last_layer_for_the_last_token_only_gives_the_full_scores_and_gradients(tokenizer_dir, kv_heads,
                                                                                checkpointing):
    """The shortcut of RewardModel.score (last decoder layer run for the last real token only) against the full
    backbone read at that token, in float64, under left and right padding: scores and every parameter's gradient
    (also with gradient checkpointing, whose layer wrapper the shortcut's hook must pass through)."""
    from almost.losses import gather_last
    from almost.models import last_token_hidden

    arch = {**TINY_ARCH, "num_hidden_layers": 3, "num_attention_heads": 4, "num_key_value_heads": kv_heads}
    torch.manual_seed(0)
    source = ModelSource(arch=arch, tokenizer=tokenizer_dir)
    model = RewardModel.build(source, load_tokenizer(source)).double().train()
    if checkpointing:
        model.backbone.gradient_checkpointing_enable(gradient_checkpointing_kwargs={"use_reentrant": False})
    for side in ("right", "left"):
        input_ids, attention_mask = pad_sequences(SEQUENCES, 0, side)
        fast = model.score(input_ids, attention_mask)
        full = gather_last(model(input_ids, attention_mask), attention_mask)
        torch.testing.assert_close(fast, full, atol=1e-12, rtol=0)
        fast_grads = torch.autograd.grad(fast.square().sum(), list(model.parameters()))
        full_grads = torch.autograd.grad(full.square().sum(), list(model.parameters()))
        for fast_grad, full_grad in zip(fast_grads, full_grads):
            torch.testing.assert_close(fast_grad, full_grad, atol=1e-12, rtol=0)
        hidden = last_token_hidden(model.backbone, input_ids, attention_mask)
        assert hidden.shape == (len(SEQUENCES), arch["hidden_size"])
    assert not any(hook for layer in model.backbone.layers for hook in layer._forward_pre_hooks.values())


@torch.no_grad()
def test_reward_model_save_load_reproduces_scores(reward_model, tokenizer, tmp_path):
    from transformers import AutoModel

    with torch.no_grad():
        reward_model.head.bias.fill_(0.3)  # a non-default head must survive the round trip
    reward_model.save_pretrained(tmp_path)
    batch = pad_sequences(SEQUENCES, 0, "left")
    loaded = RewardModel.from_pretrained(str(tmp_path)).eval()
    torch.testing.assert_close(loaded.score(*batch), reward_model.score(*batch), atol=0, rtol=0)
    backbone = AutoModel.from_pretrained(str(tmp_path))  # plain transformers reads the backbone
    assert type(backbone) is type(reward_model.backbone)
    with pytest.raises(FileNotFoundError, match="not a saved reward model"):
        RewardModel.from_pretrained(str(tmp_path / "nothing"))


def test_reward_model_from_causal_lm_directory_gets_a_new_head(tokenizer_dir, tokenizer, tmp_path):
    torch.manual_seed(0)
    lm = build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer)
    lm.save_pretrained(tmp_path)
    tokenizer.save_pretrained(tmp_path)
    reward_model = RewardModel.build(ModelSource(path=str(tmp_path)), tokenizer)
    torch.testing.assert_close(reward_model.backbone.embed_tokens.weight, lm.model.embed_tokens.weight)
