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
