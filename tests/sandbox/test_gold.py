from pathlib import Path

import pytest

from almost.evaluation.overoptimization import best_of_n_curve
from almost.sandbox import gold, gold_report
from almost.sandbox.pipeline import RUNS


def test_gold_stages_rerun_the_reward_using_stages_with_the_oracle_configs():
    stages = {s.name: s for s in gold.stages()}
    assert list(stages) == ["gold/rmsp", "gold/sft_rmsp", "gold/ppo", "gold/ppo_vanilla", "gold/ppo_rm_long",
                            "gold/comparisons_oracle", "gold/rm_oracle", "gold/comparisons_length_rule",
                            "gold/rm_length_rule", "gold/policy_samples", "gold/policy_pairs", "gold/rm_policy",
                            "gold/report"]
    assert "configs/sandbox/gold/ppo.yaml" in stages["gold/ppo"].command
    assert stages["gold/ppo"].checkpoint == RUNS / "gold/ppo/checkpoints/last.ckpt"
    assert RUNS / "gold/data/rmsp.jsonl" in stages["gold/sft_rmsp"].inputs  # SFT on the oracle's selection
    assert "configs/sandbox/gold/ppo_vanilla.yaml" in stages["gold/ppo_vanilla"].command
    assert RUNS / "pretrain_m/hf/config.json" in stages["gold/ppo_vanilla"].inputs  # the weak start
    # the RM's over-optimization curve: the main PPO run from the same start, past its KL budget
    assert "configs/sandbox/gold/ppo_rm_long.yaml" in stages["gold/ppo_rm_long"].command
    assert {RUNS / "sft_rmsp/hf/config.json", RUNS / "rm/hf/config.json"} <= set(stages["gold/ppo_rm_long"].inputs)
    assert RUNS / "gold/ppo_rm_long/hf/config.json" in stages["gold/report"].inputs
    assert RUNS / "gold/best_of_n.png" in stages["gold/report"].outputs
    # the RM's ceilings: rm.yaml's run on oracle-ordered pairs of the same responses and of the policy's samples
    assert RUNS / "data/comparisons.jsonl" in stages["gold/comparisons_oracle"].inputs
    assert RUNS / "gold/data/comparisons_oracle.jsonl" in stages["gold/rm_oracle"].inputs
    assert RUNS / "gold/data/policy_samples.jsonl" in stages["gold/policy_pairs"].inputs
    assert RUNS / "gold/data/policy_pairs.jsonl" in stages["gold/rm_policy"].inputs
    assert RUNS / "data/ppo_prompts.jsonl" in stages["gold/ppo"].inputs  # PPO's prompts, in the held-out mix
    # the paper's length rule: the comparisons job on the same responses with it, and rm.yaml's run on its pairs
    ablation = stages["gold/comparisons_length_rule"]
    assert "configs/sandbox/gold/comparisons_length_rule.yaml" in ablation.command
    assert {RUNS / "data/responses.jsonl", Path("configs/sandbox/comparisons.yaml")} <= set(ablation.inputs)
    assert RUNS / "gold/data/comparisons_length_rule.jsonl" in stages["gold/rm_length_rule"].inputs
    assert {RUNS / "gold/rm_oracle/hf/config.json", RUNS / "gold/rm_policy/hf/config.json",
            RUNS / "gold/rm_length_rule/hf/config.json"} <= set(stages["gold/report"].inputs)


def fake_report() -> dict:
    rm = [[0.1 * i + 0.01 * q for i in range(4)] for q in range(5)]
    oracle = [[1.0 if i == q % 4 else 0.5 for i in range(4)] for q in range(5)]
    ns = [1, 2, 4]
    policy = {"oracle": 0.7, "oracle_se": 0.01, "rm": 5.0, "kl_to_start": 0.3, "start": "sft_rmsp",
              "mean_answer_chars": 40.0}
    return {"n_heldout_queries": 5, "seeds": [0, 1],
            "best_of_n": {"samples": 4, "queries": 5,
                          "rm_selects": {"oracle": best_of_n_curve(rm, oracle, ns), "rm": best_of_n_curve(rm, rm, ns)},
                          "oracle_selects": {"oracle": best_of_n_curve(oracle, oracle, ns),
                                             "rm": best_of_n_curve(oracle, rm, ns)}},
            "policies": {name: dict(policy) for name in gold_report.POLICIES},
            "rm_ceiling": {name: {"training_pairs": 100 + i, "val_accuracy": 0.6 + i / 10, "oracle_pair_accuracy": 0.7,
                                  "oracle_pairs": 50, "length_baseline_accuracy": 0.55,
                                  "best_of_n_oracle": best_of_n_curve(rm, oracle, ns)}
                           for i, name in enumerate(gold_report.REWARD_MODELS)},
            "demonstrations": {"rm_selects": 0.69, "oracle_selects": 0.75, "no_selection": 0.7},
            "ppo_training": {name: {"rollout_score_first3": 0.5, "rollout_score_last3": 0.6, "rollouts": 14,
                                    "curve": {"kl": [0.1, 0.2], "score": [4.9, 5.0], "oracle_score": [0.7, 0.69]}}
                             for name in ("ppo", "ppo_rm_long", "ppo_gold", "ppo_gold_vanilla")},
            "wall_seconds": {"gold/ppo": 60.0, "total": 60.0}}


def test_the_report_plots_the_curves_and_tabulates_every_n(tmp_path: Path):
    report = fake_report()
    gold_report.plot(report, tmp_path / "best_of_n.png")
    assert (tmp_path / "best_of_n.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    text = gold_report.markdown(report)
    # N = 4 of 4 samples: the RM's choice is the last sample, whose oracle score is 1.0 for q = 3 only
    assert "| 4 | 0.636 | 0.600 +- 0.100 | 0.320 +- 0.007 | 1.000 +- 0.000 |" in text
    assert "RM selects 0.690, oracle selects 0.750, no selection (self-play) 0.700" in text
    assert ("| SFT-RMSP's own samples, ordered by the oracle | 102 | 0.800 | 0.700 (50 pairs) | 0.550 | "
            "0.600 +- 0.100 | n/a |") in text
    assert text.count("| PPO from SFT") == 6  # the policies table and the training curves
    assert text.count("| PPO from vanilla M (oracle reward) |") == 2
    assert "| SFT on RMSP (oracle selects) | 0.700 +- 0.010 | 5.000 | 0.300 (sft_rmsp) | 40 |" in text
    assert "| PPO from SFT (RM reward, KL budget) | 0.100 / 0.200 | 4.900 / 5.000 | 0.700 / 0.690 |" in text


def test_gold_needs_make_demo_first_and_lists_its_stages(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["gold"])
    with pytest.raises(SystemExit, match=r"\[gold\] run `make demo` first: runs/sandbox/world/world.json"):
        gold.main()
    monkeypatch.setattr("sys.argv", ["gold", "--list"])
    gold.main()
    listed = capsys.readouterr().out.splitlines()
    assert [line.split()[0] for line in listed] == [s.name for s in gold.stages()]
    assert all(" to run " in line for line in listed)
