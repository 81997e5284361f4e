"""The sandbox path end to end on a tiny world: build -> pretrain through train.py -> baseline table."""

import train
from almost.generation import SamplingConfig
from almost.records import Prompt, load_jsonl
from almost.sandbox.baselines import PAPER_BASELINES, evaluate_baselines, markdown_table
from almost.sandbox.build import build_world, load_world


def test_tiny_world_pretrains_and_reports_baselines(tmp_path):
    world_dir = build_world(tmp_path / "world", n_documents=300, n_heldout_documents=30, n_heldout_queries=12,
                            vocab_size=400)
    train.main(["fit", "--config", "configs/sandbox/pretrain_s.yaml", "--trainer.max_steps=8",
                f"--model.init_args.source.tokenizer={world_dir}/tokenizer", f"--model.init_args.export_dir={tmp_path}/s",
                f"--data.init_args.path={world_dir}/corpus_train.jsonl",
                f"--data.init_args.val_path={world_dir}/corpus_heldout.jsonl",
                f"--trainer.logger.init_args.save_dir={tmp_path}/logs", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
                "--trainer.enable_progress_bar=false"])
    queries = [p.prompt for p in load_jsonl(world_dir / "heldout_queries.jsonl", Prompt)]
    model = str(tmp_path / "s")
    short = SamplingConfig(max_new_tokens=8, temperature=1.0, top_p=0.9, stop_strings=("\nUser:",))
    report = evaluate_baselines(load_world(world_dir), queries, {"S": model, "M": model, "L": model},
                                str(world_dir / "tokenizer"), sampling=short, batch_size=12)
    assert set(report["baselines"]) == set(PAPER_BASELINES) and report["n_queries"] == 12
    for row in report["baselines"].values():
        assert 0.0 <= row["oracle"] <= 1.0 and set(row["components"]) >= {"correct", "refuses_harm"}
    assert -1.0 <= report["spearman"] <= 1.0
    assert "| A | L-faithful-3shot |" in markdown_table(report)
