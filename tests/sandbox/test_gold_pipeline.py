"""The gold controls (almost.sandbox.gold) end to end, through their real commands, after the whole tiny pipeline
of test_pipeline_smoke: every gold stage runs, writes its outputs, and the report has every section."""

import json
import os
import random
from dataclasses import asdict
from pathlib import Path

import pytest

from almost.feedback import HeuristicFilter, Rubric, build_comparisons
from almost.records import Comparison, Responses, load_jsonl
from almost.sandbox import gold, pipeline
from almost.sandbox.build import load_world
from almost.sandbox.corpus import answer
from tests.sandbox.test_pipeline_smoke import ROOT, SHORT, TINY

FIT = ["--trainer.max_epochs=1", "--data.init_args.val_fraction=0.25"]
TINY_GOLD = {
    "gold/rmsp": TINY["rmsp"], "gold/sft_rmsp": FIT, "gold/ppo*": TINY["ppo"], "gold/rm_*": FIT,
    # a barely trained L mines no question of the world (see test_pipeline_smoke): the policy answers the seeds
    "gold/policy_samples": [*SHORT, "--data.init_args.path=runs/sandbox/world/seed_queries.jsonl",
                            "--model.init_args.n_samples=8"],
    "gold/report": ["--queries=8", "--samples=4"],
}


@pytest.mark.slow
def test_tiny_gold_controls_run_after_the_pipeline_and_report(tmp_path, monkeypatch):
    for name in ("train.py", "configs"):
        (tmp_path / name).symlink_to(ROOT / name)
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]))
    pipeline.run(extra=TINY)
    assert all(p.exists() for p in gold.NEEDS)
    # the tiny comparisons answer mined non-questions, which the oracle cannot order: add pairs it can
    world = load_world("runs/sandbox/world")
    rng = random.Random(0)
    pairs = [Comparison(q.text, answer(q, "careful", world, rng), answer(q, "wrong", world, rng))
             for q in world.sample_queries(12, seed=0, split="train", families=["kb_fact", "arithmetic"])]
    with open("runs/sandbox/data/comparisons.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps(asdict(pair)) + "\n" for pair in pairs)
    # and responses the length rule's ablation can pair: each rubric configuration answers in one corpus style
    styles = dict(zip(Rubric.parse(json.loads(Path("runs/sandbox/data/responses.stats.json").read_text())["rubric"]
                                   ).configs, ("careful", "terse", "terse", "compliant", "wrong")))
    records = [Responses(q.text, {c: answer(q, style, world, rng) for c, style in styles.items()})
               for q in world.sample_queries(12, seed=1, split="train", families=["harmful", "kb_fact"])]
    with open("runs/sandbox/data/responses.jsonl", "a", encoding="utf-8") as f:
        f.writelines(json.dumps(asdict(record)) + "\n" for record in records)
    wall = pipeline.run_stages(gold.stages(), gold.OUT / "wall_seconds.json", extra=TINY_GOLD, tag="gold")
    assert list(wall) == [s.name for s in gold.stages()]
    for stage in gold.stages():
        assert all(p.exists() for p in stage.outputs), stage.name
    report = json.loads((gold.OUT / "report.json").read_text())
    assert {"best_of_n", "rm_ceiling", "policies", "demonstrations", "ppo_training", "wall_seconds"} <= set(report)
    assert set(report["rm_ceiling"]) == {"rm", "rm_oracle", "rm_policy", "rm_length_rule"}
    # the method's comparisons skip the length rule; the instrument post-validates the same responses with it
    method = json.loads(Path("runs/sandbox/data/comparisons.stats.json").read_text())
    ablation = json.loads((gold.OUT / "data/comparisons_length_rule.stats.json").read_text())
    rubric, responses = Rubric.parse(ablation["rubric"]), load_jsonl("runs/sandbox/data/responses.jsonl", Responses)
    kept = {rule: sum(len(build_comparisons(r.prompt, r.responses, rubric, HeuristicFilter(), length_rule=rule)[0])
                      for r in responses) for rule in (True, False)}
    assert method["length_rule"] is False and method["removed_length_rule"] == 0
    assert ablation["length_rule"] is True and ablation["kept"] == kept[True] < kept[False]
    assert [row["n"] for row in report["rm_ceiling"]["rm_policy"]["best_of_n_oracle"]] == [1, 2, 4]
    assert report["rm_ceiling"]["rm_oracle"]["training_pairs"] > 0
    assert len(report["ppo_training"]["ppo_gold"]["curve"]["oracle_score"]) > 0  # the oracle instrument logged
    assert (gold.OUT / "best_of_n.png").read_bytes()[:4] == b"\x89PNG"
    assert all(stage.up_to_date() for stage in gold.stages())  # a rerun has nothing to do
