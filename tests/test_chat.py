"""Tokenization helpers and padding, checked with a character-level fake tokenizer (ids by hand)."""

import pytest
import torch

from almost.batching import pad_sequences, position_ids_from_mask
from almost.chat import (IGNORE_INDEX, ChatTemplate, content_prefix, encode_comparison, encode_demonstration,
                         encode_exchange, encode_prompt, encode_turn)
from almost.records import Comparison, Demonstration, Turn

BOS, EOS, PAD = 1, 2, 0


class CharTokenizer:
    """One token per character: id = ord(c)."""

    name_or_path, bos_token_id, eos_token_id, pad_token_id = "chars", BOS, EOS, PAD

    def __call__(self, text, add_special_tokens=False):
        assert not add_special_tokens
        return {"input_ids": [ord(c) for c in text]}

    def convert_ids_to_tokens(self, ids):  # as if it marked word starts itself: assistant turns get no space
        return ["\u2581" + chr(i) for i in ids]


TOK, TEMPLATE = CharTokenizer(), ChatTemplate(user_tag="U:", assistant_tag="A:")


def ids(text):
    return [ord(c) for c in text]


def test_prompt_layout():
    assert encode_prompt(TOK, TEMPLATE, [Turn("user", "hi")]) == [BOS] + ids("U: hi\nA:")
    with pytest.raises(ValueError, match="end with a user turn"):
        encode_prompt(TOK, TEMPLATE, [Turn("user", "hi"), Turn("assistant", "yo")])


def test_comparison_keeps_response_and_cuts_prompt_from_left():
    chosen, rejected = encode_comparison(TOK, TEMPLATE, Comparison("abcdef", "xy", "z"), max_length=100)
    assert chosen == [BOS] + ids("U: abcdef\nA:") + ids("xy") + [EOS]
    assert rejected == [BOS] + ids("U: abcdef\nA:") + ids("z") + [EOS]
    # prompt is 1 + 12 = 13 tokens, chosen response 3: max_length 8 keeps the last 5 prompt tokens
    chosen, rejected = encode_comparison(TOK, TEMPLATE, Comparison("abcdef", "xy", "z"), max_length=8)
    assert chosen == ids("ef\nA:")[-5:] + ids("xy") + [EOS]
    assert rejected == ids("def\nA:")[-6:] + ids("z") + [EOS]
    assert len(chosen) == len(rejected) == 8


def test_exchange_is_a_multi_turn_history_then_a_closed_answer():
    history = [Turn("user", "ab"), Turn("assistant", "cd"), Turn("user", "ef")]
    full = [BOS] + ids("U: ab\nA:") + ids("cd") + [EOS] + ids("U: ef\nA:") + ids("gh") + [EOS]
    assert encode_exchange(TOK, TEMPLATE, history, "gh", max_length=100) == full
    assert encode_exchange(TOK, TEMPLATE, history, "gh", max_length=7) == full[-7:]  # the history is cut first


def test_comparison_response_longer_than_max_length_is_cut_from_right():
    chosen, _ = encode_comparison(TOK, TEMPLATE, Comparison("p", "abcdefgh", "z"), max_length=4)
    assert chosen == ids("abcd")


def test_demonstration_labels_only_on_assistant_turns():
    demo = Demonstration((Turn("user", "a"), Turn("assistant", "bc"), Turn("user", "d"), Turn("assistant", "e")))
    input_ids, labels = encode_demonstration(TOK, TEMPLATE, demo, max_length=100)
    user1, user2 = ids("U: a\nA:"), ids("U: d\nA:")
    assert input_ids == [BOS] + user1 + ids("bc") + [EOS] + user2 + ids("e") + [EOS]
    ignore = lambda n: [IGNORE_INDEX] * n  # noqa: E731
    assert labels == ignore(1 + len(user1)) + ids("bc") + [EOS] + ignore(len(user2)) + ids("e") + [EOS]
    cut_ids, cut_labels = encode_demonstration(TOK, TEMPLATE, demo, max_length=10)
    assert cut_ids == input_ids[:10] and cut_labels == labels[:10]


def test_pad_sequences_right_and_left():
    values, mask = pad_sequences([[5, 6, 7], [8]], pad_value=0)
    assert values.tolist() == [[5, 6, 7], [8, 0, 0]] and mask.tolist() == [[1, 1, 1], [1, 0, 0]]
    values, mask = pad_sequences([[5, 6, 7], [8]], pad_value=-1, side="left")
    assert values.tolist() == [[5, 6, 7], [-1, -1, 8]] and mask.tolist() == [[1, 1, 1], [0, 0, 1]]
    assert values.dtype == mask.dtype == torch.long


def test_position_ids_ignore_left_padding():
    mask = torch.tensor([[0, 0, 1, 1, 1], [1, 1, 1, 0, 0]])
    assert position_ids_from_mask(mask).tolist() == [[0, 0, 0, 1, 2], [0, 1, 2, 2, 2]]


def byte_level_tokenizer():
    """A small byte-level BPE tokenizer (as SmolLM2's): it adds no space before a text encoded on its own."""
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    core = Tokenizer(models.BPE())
    core.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    core.decoder = decoders.ByteLevel()
    texts = ["User: What is the capital of France?\nAssistant: Paris is the capital of France."] * 20
    core.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=320, special_tokens=["<s>", "</s>", "<pad>"],
                                                        initial_alphabet=pre_tokenizers.ByteLevel.alphabet()))
    return PreTrainedTokenizerFast(tokenizer_object=core, bos_token="<s>", eos_token="</s>", pad_token="<pad>")


def test_an_assistant_turn_follows_the_tag_as_one_text_would_with_any_tokenizer(tokenizer):
    template = ChatTemplate()
    history = [Turn("user", "What is the capital of France?")]
    answer = Turn("assistant", "Paris is the capital of France.")
    # SentencePiece with a dummy prefix (the sandbox's): the content as is, ids unchanged
    assert content_prefix(tokenizer) == ""
    assert encode_turn(tokenizer, template, answer)[:-1] == tokenizer(answer.content, add_special_tokens=False)["input_ids"]
    # byte-level BPE: the content after a space, so prompt + answer are the ids of the whole text in one go
    byte_level = byte_level_tokenizer()
    assert content_prefix(byte_level) == " "
    ids = encode_prompt(byte_level, template, history) + encode_turn(byte_level, template, answer)
    whole = byte_level("User: What is the capital of France?\nAssistant: Paris is the capital of France.",
                       add_special_tokens=False)["input_ids"]
    assert ids == [byte_level.bos_token_id, *whole, byte_level.eos_token_id]
    assert byte_level.decode(ids[1:-1]).endswith("Assistant: Paris is the capital of France.")
