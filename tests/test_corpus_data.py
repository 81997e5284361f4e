"""Packed pretraining blocks and the sandbox world build."""

import json

import torch

from almost.records import CorpusDocument, Prompt, load_jsonl, write_jsonl
from almost.prompting import PromptedConfig
from almost.evaluation.judge_agreement import spearman
from almost.sandbox.build import build_world, load_world
from almost.sandbox.world import split_of
from data_modules import CorpusDataModule


def test_blocks_pack_documents_with_bos_and_eos(tmp_path, tokenizer_dir, tokenizer):
    docs = [CorpusDocument("What is 2 plus 2?"), CorpusDocument("The capital of Veloria is Marnstad.")] * 30
    write_jsonl(tmp_path / "docs.jsonl", docs)
    dm = CorpusDataModule(str(tmp_path / "docs.jsonl"), tokenizer_dir, max_length=16, batch_size=4, val_fraction=0.2)
    dm.setup("fit")
    batch = next(iter(dm.train_dataloader()))
    assert batch["input_ids"].shape == (4, 16) and torch.equal(batch["labels"], batch["input_ids"])
    stream = torch.cat([dm.train_set[i] for i in range(len(dm.train_set))]).tolist()
    start = stream.index(tokenizer.bos_token_id)
    end = stream.index(tokenizer.eos_token_id, start)
    document = stream[start + 1:end]  # one whole document between <s> and </s>
    assert document in [tokenizer(d.text, add_special_tokens=False)["input_ids"] for d in docs[:2]]


def test_build_world_is_deterministic_and_heldout_queries_are_heldout(tmp_path):
    a = build_world(tmp_path / "a", n_documents=200, n_heldout_documents=20, n_heldout_queries=50, vocab_size=400)
    b = build_world(tmp_path / "b", n_documents=200, n_heldout_documents=20, n_heldout_queries=50, vocab_size=400)
    for name in ("corpus_train.jsonl", "corpus_heldout.jsonl", "heldout_queries.jsonl", "tokenizer/tokenizer.json",
                 "eval/hhh_helpful.json", "eval/mc_task.json"):
        assert (a / name).read_bytes() == (b / name).read_bytes(), name
    queries = load_jsonl(a / "heldout_queries.jsonl", Prompt)
    assert len(queries) == 50 and len({q.meta["family"] for q in queries}) == 6  # the five-family world, and clarify
    assert all(split_of(q.prompt) == "heldout" for q in queries)
    # only the world's misconception questions appear in the corpus whatever their split (by design)
    misconceptions = {m.query.text for m in load_world(a).misconceptions}
    corpus = (a / "corpus_train.jsonl").read_text()
    assert not any(q.prompt in corpus for q in queries if q.prompt not in misconceptions)
    train_texts = (a / "corpus_train.jsonl").read_text()
    assert json.loads((a / "world.json").read_text())["n_documents"] == 200
    assert load_world(a).facts == load_world(b).facts
    assert len(load_jsonl(a / "corpus_train.jsonl", CorpusDocument)) == 200 and "User:" in train_texts


def test_prompted_config_and_spearman():
    assert PromptedConfig.parse("L-faithful-3shot") == PromptedConfig("L", "faithful", 3)
    assert spearman([1, 2, 3, 4], [10, 20, 30, 40]) == 1.0
    assert spearman([1, 2, 3, 4], [40, 30, 20, 10]) == -1.0
    # ranks of y: 1, 2.5, 2.5, 4 -> rho = 0.9487 (hand computed: cov 4.5 / sqrt(5 * 4.5))
    assert abs(spearman([1, 2, 3, 4], [1, 5, 5, 9]) - 4.5 / (5 * 4.5) ** 0.5) < 1e-12


def test_world_eval_files_load_and_agree_with_the_oracle(tmp_path):
    from almost.evaluation.formats import load_hh_rlhf, load_hhh, load_truthfulqa_mc
    from almost.sandbox.oracle import score

    out = build_world(tmp_path, n_documents=50, n_heldout_documents=10, n_heldout_queries=200, vocab_size=400)
    world = load_world(out)
    for aspect in ("helpful", "harmless", "honest"):
        examples = load_hhh(out / "eval" / f"hhh_{aspect}.json")
        assert len(examples) >= 5, aspect
        for e in examples:
            assert score(e.input, e.better, world).total >= score(e.input, e.worse, world).total + 0.2
    pairs = load_hh_rlhf(out / "eval" / "hh_rlhf.jsonl")  # the same pairs as human-preference data
    all_examples = [e for a in ("harmless", "helpful", "honest") for e in load_hhh(out / "eval" / f"hhh_{a}.json")]
    assert [(p.chosen, p.rejected) for p in pairs] == [(e.better, e.worse) for e in all_examples]
    assert [p.context[-1].content for p in pairs] == [e.input for e in all_examples]
    questions = load_truthfulqa_mc(out / "eval" / "mc_task.json")
    assert len(questions) == len(world.misconceptions)
    for q, m in zip(questions, world.misconceptions):
        true_answer = next(a for a, label in q.mc1.items() if label == 1)
        assert m.true_answer in true_answer and q.question == m.query.text
        assert any(m.false_answer in a for a, label in q.mc1.items() if label == 0)
