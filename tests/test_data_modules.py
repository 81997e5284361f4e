"""DataModules: seeded split, batch layout, masks."""

import pytest

from almost.chat import IGNORE_INDEX
from data_modules import ComparisonDataModule, DemonstrationDataModule, PromptDataModule
from data_modules.base import split_by_seed
from tests.conftest import FIXTURES


def test_split_is_seeded_disjoint_and_complete():
    records = list(range(50))
    train, val = split_by_seed(records, 0.2, seed=3)
    assert (train, val) == split_by_seed(records, 0.2, seed=3)
    assert split_by_seed(records, 0.2, seed=4)[1] != val
    assert len(val) == 10 and sorted(train + val) == records
    with pytest.raises(ValueError, match="too few"):
        split_by_seed([1], 0.5, seed=0)


def test_comparison_batches_stack_chosen_then_rejected(tokenizer_dir, tokenizer):
    dm = ComparisonDataModule(str(FIXTURES / "comparisons.jsonl"), tokenizer_dir, batch_size=4, max_length=40)
    dm.setup("fit")
    assert len(dm.train_set) == 360 and len(dm.val_set) == 40
    batch = next(iter(dm.val_dataloader()))
    chosen, rejected = dm.val_set[0]
    assert batch["input_ids"].shape[0] == 8 and batch["input_ids"].shape[1] <= 40
    assert batch["input_ids"][0, :len(chosen)].tolist() == chosen
    assert batch["input_ids"][4, :len(rejected)].tolist() == rejected
    assert batch["attention_mask"][0].sum().item() == len(chosen)
    full_chosen, _ = ComparisonDataModule(str(FIXTURES / "comparisons.jsonl"), tokenizer_dir, max_length=1000).encode(
        dm.val_set.records[0])
    assert len(full_chosen) > 40 and chosen == full_chosen[-40:]  # the response is kept, the prompt cut from the left


def test_demonstration_batches_mask_everything_but_responses(tokenizer_dir, tokenizer):
    dm = DemonstrationDataModule(str(FIXTURES / "demonstrations.jsonl"), tokenizer_dir, batch_size=3)
    dm.setup("fit")
    batch = next(iter(dm.val_dataloader()))
    record = dm.val_set.records[0]
    labels = batch["labels"][0][batch["labels"][0] != IGNORE_INDEX].tolist()
    response = tokenizer(record.messages[1].content, add_special_tokens=False)["input_ids"]
    assert labels == response + [tokenizer.eos_token_id]
    assert (batch["labels"][batch["attention_mask"] == 0] == IGNORE_INDEX).all()


def test_prompt_batches_are_left_padded(tokenizer_dir, tokenizer):
    dm = PromptDataModule(str(FIXTURES / "prompts.jsonl"), tokenizer_dir, batch_size=16)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert (batch["attention_mask"][:, -1] == 1).all()
    assert (batch["input_ids"][batch["attention_mask"] == 0] == tokenizer.pad_token_id).all()


def test_drop_last_drops_only_the_short_training_batch(tokenizer_dir):
    # 400 prompts, 10% held out: 360 train = 5 batches of 64 and one of 40; 40 val = one batch of 40
    sizes = {}
    for drop_last in (False, True):
        dm = PromptDataModule(str(FIXTURES / "prompts.jsonl"), tokenizer_dir, batch_size=64, drop_last=drop_last)
        dm.setup("fit")
        sizes[drop_last] = ([len(b["input_ids"]) for b in dm.train_dataloader()],
                            [len(b["input_ids"]) for b in dm.val_dataloader()])
    assert sizes[False] == ([64] * 5 + [40], [40])
    assert sizes[True] == ([64] * 5, [40])


def test_separate_validation_file(tokenizer_dir):
    path = str(FIXTURES / "comparisons.jsonl")
    dm = ComparisonDataModule(path, tokenizer_dir, val_path=path)
    dm.setup("fit")
    assert len(dm.train_set) == len(dm.val_set) == 400
