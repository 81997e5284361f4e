"""The HF tokenizer saved by train_tokenizer reproduces sentencepiece exactly."""

from pathlib import Path

import sentencepiece as spm

from almost.records import Comparison, load_jsonl
from tests.conftest import FIXTURES

TEXTS = ["What is 12 plus 37?", "Happy to help. The capital of Veloria is Marnstad.", "Zürich ✓ 3.14 — ok",
         "two  spaces and a\nnewline", "User: hi\nAssistant: hello", "unseen words: quixotic zephyr"]


def test_hf_ids_equal_sentencepiece_ids(tokenizer_dir, tokenizer):
    sp = spm.SentencePieceProcessor(model_file=str(Path(tokenizer_dir) / "tokenizer.model"))
    corpus = [c.chosen for c in load_jsonl(FIXTURES / "comparisons.jsonl", Comparison)[:40]]
    for text in TEXTS + corpus:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
    # Known difference (not used by the project): with leading spaces HF's Metaspace drops one "▁".


def test_special_ids_and_decode(tokenizer):
    assert (tokenizer.pad_token_id, tokenizer.unk_token_id, tokenizer.bos_token_id, tokenizer.eos_token_id) == (0, 1, 2, 3)
    for text in TEXTS:
        assert tokenizer.decode(tokenizer(text, add_special_tokens=False)["input_ids"]) == text


def test_retraining_into_the_same_folder_replaces_the_hf_tokenizer(tmp_path):
    from transformers import AutoTokenizer

    from almost.tokenizer import train_tokenizer

    first = [f"the cat number {i} sat on the mat with a hat" for i in range(300)]
    second = [f"a dog called Rex {i} ran through the fog to the log" for i in range(300)]
    train_tokenizer(first, tmp_path, vocab_size=300)
    train_tokenizer(second, tmp_path, vocab_size=300)  # same folder: its tokenizer.json is from `first`
    sp = spm.SentencePieceProcessor(model_file=str(tmp_path / "tokenizer.model"))
    tokenizer = AutoTokenizer.from_pretrained(str(tmp_path))
    for text in second[:20] + ["the dog ran to the log"]:
        assert tokenizer(text, add_special_tokens=False)["input_ids"] == sp.encode(text), text
