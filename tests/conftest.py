"""Shared test fixtures: a tokenizer trained on the fixture data and a tiny Llama architecture."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from almost.records import Comparison, iter_jsonl
from almost.tokenizer import train_tokenizer

FIXTURES = Path(__file__).parent / "fixtures"
TINY_ARCH = {"model_type": "llama", "hidden_size": 32, "intermediate_size": 64, "num_hidden_layers": 2,
             "num_attention_heads": 2, "max_position_embeddings": 256}


def pytest_collection_modifyitems(config, items):
    import torch

    if not torch.cuda.is_available():
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(pytest.mark.skip(reason="needs a CUDA device"))


@pytest.fixture(scope="session")
def tokenizer_dir(tmp_path_factory) -> str:
    texts = [t for c in iter_jsonl(FIXTURES / "comparisons.jsonl", Comparison) for t in (c.prompt, c.chosen, c.rejected)]
    texts.append("User: Assistant:")
    return str(train_tokenizer(texts, tmp_path_factory.mktemp("tokenizer"), vocab_size=400))


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from almost.models import ModelSource, load_tokenizer

    return load_tokenizer(ModelSource(path=tokenizer_dir))


def write_lines(path: Path, lines: list) -> Path:
    """Write ``lines`` (dicts as JSON, strings verbatim) one per line."""
    path.write_text("".join((json.dumps(x) if isinstance(x, dict) else x) + "\n" for x in lines))
    return path
