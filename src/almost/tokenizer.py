"""Train a Llama-style sentencepiece tokenizer and save it in Hugging Face format.

Measured with transformers 5.x: ``LlamaTokenizer.from_pretrained(dir)`` on a ``tokenizer.model``
reproduces sentencepiece exactly only for a BPE model trained Llama-style (byte fallback, identity
normalisation, split digits, pad/unk/bos/eos = 0/1/2/3). Passing ``vocab_file=`` instead yields an
empty tokenizer, so we always load from the directory.

    python -m almost.tokenizer --input corpus.txt --output runs/sandbox/tokenizer --vocab-size 1000
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path
from typing import Iterable

PAD, UNK, BOS, EOS = "<pad>", "<unk>", "<s>", "</s>"


def train_tokenizer(texts: Iterable[str], output_dir: str | Path, vocab_size: int = 1000) -> Path:
    """Train a byte-fallback BPE sentencepiece model on ``texts`` and save it as a HF tokenizer.

    ``vocab_size`` includes the 4 special tokens and the 256 byte pieces. Deterministic for fixed
    input (sentencepiece trains single-threaded here).
    """
    import sentencepiece as spm
    from transformers import LlamaTokenizer

    output_dir = Path(output_dir)
    output_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        corpus = Path(tmp) / "corpus.txt"
        with corpus.open("w", encoding="utf-8") as f:
            for text in texts:
                for line in text.splitlines():
                    if line.strip():
                        f.write(line + "\n")
        spm.SentencePieceTrainer.train(
            input=str(corpus),
            model_prefix=str(Path(tmp) / "tokenizer"),
            model_type="bpe",
            vocab_size=vocab_size,
            byte_fallback=True,
            normalization_rule_name="identity",
            remove_extra_whitespaces=False,
            add_dummy_prefix=True,
            split_digits=True,
            allow_whitespace_only_pieces=True,
            character_coverage=1.0,
            pad_id=0, unk_id=1, bos_id=2, eos_id=3,
            pad_piece=PAD, unk_piece=UNK, bos_piece=BOS, eos_piece=EOS,
            hard_vocab_limit=False,
            num_threads=1,
            minloglevel=2,
        )
        model_file = Path(tmp) / "tokenizer.model"
        (output_dir / "tokenizer.model").write_bytes(model_file.read_bytes())
        # Convert from the temporary folder, which holds the new model only: loading from output_dir would
        # prefer a tokenizer.json left there by an earlier build over the new tokenizer.model.
        tokenizer = LlamaTokenizer.from_pretrained(tmp, pad_token=PAD)
        tokenizer.save_pretrained(str(output_dir))
    return output_dir


def _strings(obj) -> Iterable[str]:
    if isinstance(obj, str):
        yield obj
    elif isinstance(obj, dict):
        for value in obj.values():
            yield from _strings(value)
    elif isinstance(obj, list):
        for value in obj:
            yield from _strings(value)


def _file_texts(path: Path) -> Iterable[str]:
    """A text file whole, or every string value of every line of a JSONL file."""
    if path.suffix != ".jsonl":
        yield path.read_text(encoding="utf-8")
        return
    with path.open(encoding="utf-8") as f:
        for line in f:
            if line.strip():
                yield from _strings(json.loads(line))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--input", nargs="+", required=True, help="text or JSONL files to train on")
    parser.add_argument("--output", required=True, help="directory for the HF-format tokenizer")
    parser.add_argument("--vocab-size", type=int, default=1000)
    args = parser.parse_args()
    texts = (text for p in args.input for text in _file_texts(Path(p)))
    print(f"tokenizer written to {train_tokenizer(texts, args.output, args.vocab_size)}")


if __name__ == "__main__":
    main()
