"""The whole pipeline (almost.sandbox.pipeline) on a tiny world with tiny settings: every stage runs through
its real command, writes its outputs, and the report has every key the issue asks for."""

import json
import os
from pathlib import Path

import pytest

from almost.sandbox import pipeline

ROOT = Path(__file__).resolve().parents[2]
SHORT = ["--model.init_args.sampling.max_new_tokens=8"]
TINY = {
    "world": ["--n-documents=300", "--n-heldout-documents=30", "--n-heldout-queries=64", "--n-seed-queries=10",
              "--vocab-size=400"],
    "pretrain_*": ["--trainer.max_steps=6", "--trainer.limit_val_batches=1"],
    "baselines": ["--batch-size=16", "--max-new-tokens=8", "--queries=16"],
    "mine": [*SHORT, "--model.init_args.target=24", "--model.init_args.candidates_per_round=16",
             "--model.init_args.min_words=1", "--data.init_args.rounds=3"],
    "responses": SHORT,
    "comparisons": ["--model.init_args.heuristic.rules=[]"],  # barely trained models: keep what they write
    "rm": ["--trainer.max_epochs=1", "--data.init_args.val_fraction=0.25"],
    "rmsp": [*SHORT, "--data.init_args.limit=8"],
    "selfplay": [*SHORT, "--data.init_args.limit=8"],
    "sft_*": ["--trainer.max_epochs=1", "--data.init_args.val_fraction=0.25"],
    # a barely trained L mines no question of the world: PPO's prompts are drawn from the mining seeds instead
    "ppo_prompts": ["--queries=runs/sandbox/world/seed_queries.jsonl", "--n=64"],
    "ppo": ["--trainer.limit_train_batches=2", "--trainer.limit_val_batches=1", "--data.init_args.batch_size=4",
            "--model.init_args.max_new_tokens=8", "--model.init_args.minibatch_size=2"],
    "hhh_*": ["--trainer.limit_test_batches=1"],
    "report": ["--answer-tokens=8"],
}
REPORT_KEYS = {
    "baselines": {"A", "B", "C", "D", "E", "spearman"},
    "comparisons": {"formed", "removed_heuristic", "removed_rm", "kept", "oracle", "label_agreement", "behaviours"},
    "rm": {"oracle_pair_accuracy", "length_baseline_accuracy", "val_accuracy", "by_family", "harm_refusal_by_family"},
    "rmsp": {"oracle"}, "selfplay": {"oracle"}, "sft_selfplay": {"oracle"},
    "sft_rmsp": {"oracle", "best_of_n", "rm_by_family", "refuses_by_family", "behaviours"},
    "ppo": {"oracle", "kl", "reward_start", "reward_end", "refuses_by_family"},
    "winrate": {"ppo_vs_sft"}, "hhh": {"policy", "rm"},
}


@pytest.mark.slow  # 4-5 minutes on 2 cores, 18 processes: not in make test, but .ci/run runs it after make test
def test_tiny_pipeline_runs_every_stage_and_reports(tmp_path, monkeypatch):
    for name in ("train.py", "configs"):  # the stages run `train.py --config configs/...` from the working dir
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    wall = pipeline.run(extra=TINY)
    names = [s.name for s in pipeline.stages()]
    assert list(wall) == names
    for stage in pipeline.stages():
        assert all(p.exists() for p in stage.outputs), stage.name
    report = json.loads((tmp_path / "runs/sandbox/report.json").read_text())
    for section, keys in REPORT_KEYS.items():
        assert keys <= set(report[section]), section
    assert report["sft_rmsp"]["best_of_n"]["by_family"]  # the Why section's choice among SFT's samples
    assert set(report["wall_seconds"]) == {*names[:-1], "total"}  # every stage before the report itself
    text = (tmp_path / "runs/sandbox/report.md").read_text()
    assert text.startswith("# ALMoST on the sandbox world") and "\n## Why (measured on this run)\n" in text
    # TensorBoard curves of every training stage and job
    for stage in ("pretrain_s", "rm", "sft_rmsp", "ppo", "mine", "rmsp"):
        assert list((tmp_path / "runs/sandbox" / stage).rglob("events.out.tfevents.*")), stage
    # a rerun has nothing to do
    assert all(stage.up_to_date() for stage in pipeline.stages())


def test_a_failing_stage_stops_with_its_name_and_log(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # no configs here: the world stage runs, pretrain_s fails
    with pytest.raises(SystemExit, match=r"stage 'pretrain_s' failed .*runs/sandbox/logs/pretrain_s.log"):
        pipeline.run(extra={"world": TINY["world"]})
