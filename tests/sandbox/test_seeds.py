import json
import math
import statistics
from pathlib import Path

import pytest

from almost.sandbox import pipeline, seeds, self_rewarding
from almost.sandbox.pipeline import RUNS


def by_name(stages):
    return {stage.name: stage for stage in stages}


def test_every_stage_after_pretraining_gets_the_seed_and_pretraining_does_not():
    main = by_name(pipeline.stages())
    assert seeds.seed_arguments(main["world"], 3) == []
    assert seeds.seed_arguments(main["pretrain_m"], 3) == []
    assert seeds.seed_arguments(main["rm"], 3) == ["--seed_everything=3"]  # training
    assert seeds.seed_arguments(main["rmsp"], 3) == ["--seed_everything=3", "--model.init_args.seed=3"]  # sampling
    assert seeds.seed_arguments(main["baselines"], 3) == ["--seed=3"]
    assert seeds.seed_arguments(main["hhh_policy"], 3) == []  # evaluation: deterministic
    assert seeds.seed_arguments(main["report"], 3) == []
    loop = by_name(self_rewarding.stages())
    assert seeds.seed_arguments(loop["self_rewarding/judge_1"], 2)[-1] == "--model.init_args.seed=2"
    assert seeds.seed_arguments(loop["self_rewarding/m2"], 2) == ["--seed_everything=2"]
    options = seeds.set_options(pipeline.stages(), 5)
    assert "--set=sft_rmsp=--seed_everything=5" in options and not any("pretrain" in o for o in options)
    # the options parse back to the per-stage arguments the pipeline adds
    parsed = pipeline.parse_sets([o.removeprefix("--set=") for o in options])
    assert parsed["ppo"] == ["--seed_everything=5"] and parsed["mine"][-1] == "--model.init_args.seed=5"


def test_a_workspace_links_the_repository_and_make_demos_shared_stages(tmp_path, monkeypatch):
    repo = tmp_path / "repo"
    for name in seeds.SHARED:
        (repo / RUNS / name).mkdir(parents=True)
    (repo / "configs").mkdir()
    (repo / "train.py").write_text("")
    monkeypatch.chdir(repo)
    root = seeds.make_workspace(2, repo)
    assert root == Path("runs/seeds/seed_2")
    assert (root / "configs").resolve() == (repo / "configs").resolve()
    assert (root / RUNS / "pretrain_l").resolve() == (repo / RUNS / "pretrain_l").resolve()
    assert not (root / RUNS / "rm").exists()  # reseeded stages are the workspace's own
    seeds.make_workspace(2, repo)  # again: the links are kept
    (repo / RUNS / "pretrain_s").rmdir()
    with pytest.raises(SystemExit, match="make demo.*pretrain_s"):
        seeds.make_workspace(3, repo)


def test_leaves_are_the_numbers_of_a_report_by_dotted_path():
    tree = {"rm": {"acc": 0.7, "pairs": 848}, "findings": {"ok": True}, "name": "x", "nan": float("nan"),
            "curve": [{"n": 1, "mean": 0.5}, {"n": 2, "mean": 0.6, "label": "two"}]}
    assert dict(seeds.leaves(tree)) == {"rm.acc": 0.7, "rm.pairs": 848.0, "curve.0.n": 1.0, "curve.0.mean": 0.5,
                                        "curve.1.n": 2.0, "curve.1.mean": 0.6}


def test_a_finding_holds_only_beyond_two_standard_errors():
    reports = [{"a": 0.80, "b": 0.70}, {"a": 0.78, "b": 0.70}, {"a": 0.79, "b": 0.70}]
    diffs = [0.10, 0.08, 0.09]
    result = seeds.finding(reports, "a", "b", 0.0)
    assert result["per_seed"] == pytest.approx(diffs)
    assert result["mean"] == pytest.approx(0.09)
    assert result["se"] == pytest.approx(statistics.stdev(diffs) / math.sqrt(3))  # 0.00577
    assert result["holds"] is True and result["verdict"] == "holds"
    # a margin of 0.08: mean 0.01 against 2 SE = 0.0115
    assert seeds.finding(reports, "a", "b", 0.08)["verdict"] == "within noise"
    assert seeds.finding(reports, "a", "b", 0.08)["holds"] is False
    reversed_ = seeds.finding(reports, "b", "a", 0.0)  # mean -0.09, 2 SE 0.0115: the opposite holds
    assert reversed_["verdict"] == "reversed" and reversed_["holds"] is False
    # against a number, and with a seed that lacks the value
    against = seeds.finding(reports + [{"b": 0.1}], "a", 0.75, 0.0)
    assert against["n"] == 3 and against["mean"] == pytest.approx(0.04) and against["holds"] is True
    assert seeds.finding(reports[:1], "a", "b", 0.0)["holds"] is False  # one seed: no standard error
    assert seeds.finding(reports, "missing", "b", 0.0) == {"holds": None, "n": 0}


def test_the_summary_reads_every_seeds_report(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    values = {0: (0.70, 0.60), 1: (0.74, 0.61), 2: (0.72, 0.66)}
    for seed, (ppo, sft) in values.items():
        report = {"ppo": {"oracle": ppo}, "sft_rmsp": {"oracle": sft}, "wall_seconds": {"rm": 30.0 + seed}}
        path = seeds.workspace(seed) / RUNS / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report))
    summary = seeds.write_summary([0, 1, 2])
    assert summary["self_rewarding"] is None and summary["gold"] is None  # no seed ran these pipelines
    main = summary["report"]
    assert main["seeds"] == [0, 1, 2] and "wall_seconds.rm" not in main["values"]
    assert main["values"]["ppo.oracle"]["mean"] == pytest.approx(0.72)
    assert main["values"]["ppo.oracle"]["se"] == pytest.approx(0.02 / math.sqrt(3))
    assert main["findings"]["ppo_>_sft"]["per_seed"] == pytest.approx([0.10, 0.13, 0.06])
    assert main["findings"]["rmsp_>_selfplay"]["n"] == 0
    text = (tmp_path / "runs/seeds/summary.md").read_text()
    assert "| ppo_>_sft | 0.097 +- 0.020 | +0.100 / +0.130 / +0.060 | holds |" in text


def test_a_seed_does_not_start_while_make_demos_shared_stages_are_out_of_date(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # an empty repository: nothing of make demo's run is there
    assert seeds.stale_shared_stages(tmp_path) == list(seeds.SHARED)
    assert Path.cwd() == tmp_path
    with pytest.raises(SystemExit, match="world, pretrain_s, pretrain_m, pretrain_l of make demo's run"):
        seeds.run_seed(1, tmp_path)
    assert not (tmp_path / "runs/seeds").exists()


def test_with_pretraining_each_seed_pretrains_its_own_models_and_shares_only_the_world(tmp_path, monkeypatch):
    main = by_name(pipeline.stages())
    assert seeds.seed_arguments(main["pretrain_m"], 3, pretraining=True) == ["--seed_everything=3"]
    assert seeds.seed_arguments(main["world"], 3, pretraining=True) == []
    assert "--set=pretrain_l=--seed_everything=4" in seeds.set_options(pipeline.stages(), 4, pretraining=True)
    repo = tmp_path / "repo"
    (repo / RUNS / "world").mkdir(parents=True)  # no vanilla models: a workspace with pretraining needs none
    (repo / "configs").mkdir()
    (repo / "train.py").write_text("")
    monkeypatch.chdir(repo)
    root = seeds.make_workspace(2, repo, pretraining=True)
    assert root == Path("runs/seeds_pretraining/seed_2")
    assert (root / RUNS / "world").resolve() == (repo / RUNS / "world").resolve()
    assert not (root / RUNS / "pretrain_l").exists()
    assert seeds.stale_shared_stages(repo, pretraining=True) == ["world"]  # only the world must be up to date
    report = {"ppo": {"oracle": 0.7}, "sft_rmsp": {"oracle": 0.6}}
    for seed in (0, 2):
        path = seeds.workspace(seed, pretraining=True) / RUNS / "report.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps(report))
    assert seeds.write_summary([0, 2], pretraining=True)["report"]["seeds"] == [0, 2]
    assert (repo / "runs/seeds_pretraining/summary.md").read_text().startswith(
        "# The sandbox over seeds, each with its own pretraining")
    assert not (repo / "runs/seeds").exists()  # the default summary is left alone
