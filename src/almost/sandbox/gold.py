"""Gold controls: every reward-using stage of ALMoST rerun with the oracle as its scorer, side by side with the
synthetic reward model, and best-of-N over-optimization curves; after ``make demo`` (it reads its outputs).

    python -m almost.sandbox.gold              # run what is missing or out of date, then the report
    python -m almost.sandbox.gold --list       # the stages and whether they are up to date

The gold rows are instruments that separate "the machinery does not work" from "the synthetic feedback has
nothing to teach here": the oracle is the scorer of ``configs/sandbox/gold/*.yaml`` only, never of the method's
own stages. Stages: RMSP with the oracle keeping the best of N (``gold/rmsp``), SFT on those demonstrations
(``gold/sft_rmsp``), PPO from the same SFT policy with the oracle as the reward (``gold/ppo``), the same PPO from the
vanilla M model, a weak start with room to climb (``gold/ppo_vanilla``: does the machinery climb?), PPO against the
reward model past the main run's KL budget (``gold/ppo_rm_long``: the RM's over-optimization curve), the reward
model's ceiling (``gold/rm_oracle``: ``rm.yaml`` on the synthetic pairs ordered by the oracle; ``gold/rm_policy``: on
oracle-ordered pairs of SFT-RMSP's own samples, ``almost.sandbox.gold_labels``), the paper's length rule,
which the sandbox's method leaves out (``gold/rm_length_rule``: ``rm.yaml`` on the comparisons post-validated with
it; no oracle), and the report
(``almost.sandbox.gold_report``: ``runs/sandbox/gold/report.{json,md}`` and ``best_of_n.png``). Stages run, skip
and resume as the main pipeline's do (``almost.sandbox.pipeline.run_stages``); wall-clock seconds are kept in
``runs/sandbox/gold/wall_seconds.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from almost.sandbox.pipeline import DATA, RUNS, SANDBOX_CODE, WORLD, Stage, after_demo_main, fit, job

OUT = RUNS / "gold"
NEEDS = tuple(RUNS / p for p in ("world/world.json", "pretrain_l/hf/config.json", "data/ppo_prompts.jsonl",
                                 "rm/hf/config.json", "sft_rmsp/hf/config.json", "ppo/hf/config.json"))


def _hf(stage: str):
    return RUNS / stage / "hf" / "config.json"


def labels(out: Path, option: str, source: Path) -> Stage:
    """``almost.sandbox.gold_labels``: oracle-ordered pairs from ``source`` (``option``: --comparisons, --samples)."""
    return Stage(f"gold/{out.stem}", (sys.executable, "-m", "almost.sandbox.gold_labels", "--world", str(WORLD),
                                      option, str(source), "--out", str(out)),
                 (source, WORLD / "world.json", SANDBOX_CODE / "gold_labels.py", SANDBOX_CODE / "oracle.py"), (out,))


def stages() -> list[Stage]:
    world, queries, prompts = WORLD / "world.json", DATA / "queries.jsonl", DATA / "ppo_prompts.jsonl"
    gold_rmsp, samples = OUT / "data" / "rmsp.jsonl", OUT / "data" / "policy_samples.jsonl"
    length_rule = OUT / "data" / "comparisons_length_rule.jsonl"
    return [
        job("gold/rmsp", (_hf("pretrain_l"), world, queries, SANDBOX_CODE / "prompts.py"), gold_rmsp, "rmsp"),
        fit("gold/sft_rmsp", (gold_rmsp, _hf("pretrain_m")), (_hf("gold/sft_rmsp"),), "sft_rmsp"),
        fit("gold/ppo", (_hf("sft_rmsp"), _hf("rm"), world, prompts), (_hf("gold/ppo"),), "ppo"),
        fit("gold/ppo_vanilla", (_hf("pretrain_m"), _hf("rm"), world, prompts), (_hf("gold/ppo_vanilla"),),
            "gold/ppo", "ppo"),
        fit("gold/ppo_rm_long", (_hf("sft_rmsp"), _hf("rm"), world, prompts), (_hf("gold/ppo_rm_long"),), "ppo"),
        labels(OUT / "data" / "comparisons_oracle.jsonl", "--comparisons", DATA / "comparisons.jsonl"),
        fit("gold/rm_oracle", (OUT / "data" / "comparisons_oracle.jsonl", _hf("pretrain_m")), (_hf("gold/rm_oracle"),),
            "rm"),
        job("gold/comparisons_length_rule", (DATA / "responses.jsonl",), length_rule, "comparisons"),
        fit("gold/rm_length_rule", (length_rule, _hf("pretrain_m")), (_hf("gold/rm_length_rule"),), "rm"),
        job("gold/policy_samples", (_hf("sft_rmsp"), queries), samples, "raft"),
        labels(OUT / "data" / "policy_pairs.jsonl", "--samples", samples),
        fit("gold/rm_policy", (OUT / "data" / "policy_pairs.jsonl", _hf("pretrain_m")), (_hf("gold/rm_policy"),),
            "rm"),
        Stage("gold/report", (sys.executable, "-m", "almost.sandbox.gold_report", "--runs", str(RUNS)),
              (_hf("gold/sft_rmsp"), _hf("gold/ppo"), _hf("gold/ppo_vanilla"), _hf("gold/ppo_rm_long"),
               _hf("sft_rmsp"), _hf("ppo"),
               _hf("gold/rm_oracle"), _hf("gold/rm_policy"), _hf("gold/rm_length_rule"),
               DATA / "rmsp.jsonl",
               DATA / "selfplay.jsonl", SANDBOX_CODE / "gold_report.py"),
              (OUT / "report.json", OUT / "report.md", OUT / "best_of_n.png")),
    ]


def main() -> None:
    after_demo_main(__doc__, stages, OUT / "wall_seconds.json", "gold", NEEDS, "gold/ppo=--trainer.max_epochs=2")


if __name__ == "__main__":
    main()
