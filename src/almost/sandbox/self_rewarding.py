"""Self-rewarding language models (Yuan et al. 2024) in the sandbox, and the other ways to use ALMoST's synthetic
feedback (DPO, RAFT), each stage a command of its own, after ``make demo``'s pipeline (it reads its outputs).

    python -m almost.sandbox.self_rewarding              # run what is missing or out of date, then the report
    python -m almost.sandbox.self_rewarding --list       # the stages and whether they are up to date
    python -m almost.sandbox.self_rewarding --force      # every stage again

The paper's schedule in miniature: M_1 = SFT of the vanilla M model on the RMSP demonstrations plus judge-format
examples from a small oracle-labelled seed set (``almost.sandbox.self_rewarding_data``; the oracle labels nothing
after that); then for t = 1, 2, M_t answers and judges new prompts (``lit_models.jobs.SelfJudgeJob``) and DPO from
M_t on those pairs gives M_{t+1}. Besides: DPO of SFT-RMSP on the synthetic comparisons (``configs/sandbox/dpo.yaml``)
and RAFT (SFT-RMSP's best-of-4 answers by the RM, then SFT on them). The report compares them all with SFT and PPO
(``almost.sandbox.self_rewarding_report``: ``runs/sandbox/self_rewarding/report.{json,md}``).

Stages are ``almost.sandbox.pipeline.Stage``s, run as the main pipeline runs its own: skipped when up to date,
resumed from checkpoints or shards when interrupted, logs in ``runs/sandbox/logs/<stage>.log``, wall-clock seconds
in ``runs/sandbox/self_rewarding/wall_seconds.json``.
"""

from __future__ import annotations

import sys
from pathlib import Path

from almost.sandbox.pipeline import DATA, RUNS, SANDBOX_CODE, WORLD, Stage, after_demo_main, fit, job, run_stages

OUT = RUNS / "self_rewarding"
SR_DATA = OUT / "data"
NEEDS = tuple(RUNS / p for p in ("world/world.json", "pretrain_m/hf/config.json", "data/queries.jsonl",
                                 "data/responses.jsonl", "data/rmsp.jsonl", "data/comparisons.jsonl",
                                 "rm/hf/config.json", "sft_rmsp/hf/config.json", "ppo/hf/config.json",
                                 "baselines/responses.jsonl"))


def _hf(stage: str) -> Path:
    return RUNS / stage / "hf" / "config.json"


def stages() -> list[Stage]:
    queries, responses, rmsp = DATA / "queries.jsonl", DATA / "responses.jsonl", DATA / "rmsp.jsonl"
    seed_files = tuple(SR_DATA / f for f in ("sft_m1.jsonl", "prompts_1.jsonl", "prompts_2.jsonl"))
    m = {t: _hf(f"self_rewarding/m{t}") for t in (1, 2, 3)}
    return [
        Stage("self_rewarding/seed", (sys.executable, "-m", "almost.sandbox.self_rewarding_data", "--runs", str(RUNS)),
              (WORLD / "world.json", responses, rmsp, queries, SANDBOX_CODE / "self_rewarding_data.py",
               SANDBOX_CODE / "oracle.py"), seed_files),
        fit("self_rewarding/m1", (seed_files[0], _hf("pretrain_m")), (m[1],), "sft_rmsp"),
        job("self_rewarding/judge_1", (m[1], seed_files[1]), SR_DATA / "pairs_1.jsonl"),
        fit("self_rewarding/m2", (m[1], SR_DATA / "pairs_1.jsonl"), (m[2],), "dpo"),
        job("self_rewarding/judge_2", (m[2], seed_files[2]), SR_DATA / "pairs_2.jsonl", "self_rewarding/judge_1"),
        fit("self_rewarding/m3", (m[2], SR_DATA / "pairs_2.jsonl"), (m[3],), "dpo", "self_rewarding/m2"),
        fit("dpo", (_hf("sft_rmsp"), DATA / "comparisons.jsonl"), (_hf("dpo"),)),
        job("raft", (_hf("sft_rmsp"), _hf("rm"), DATA / "ppo_prompts.jsonl"), DATA / "raft.jsonl"),
        fit("sft_raft", (_hf("sft_rmsp"), DATA / "raft.jsonl"), (_hf("sft_raft"),), "sft_rmsp"),
        Stage("self_rewarding/report", (sys.executable, "-m", "almost.sandbox.self_rewarding_report", "--runs", str(RUNS)),
              (*m.values(), _hf("dpo"), _hf("sft_raft"), _hf("sft_rmsp"), _hf("ppo"), SR_DATA / "pairs_2.jsonl",
               SANDBOX_CODE / "self_rewarding_report.py"), (OUT / "report.json", OUT / "report.md")),
    ]


def run(force: bool = False, extra: dict[str, list[str]] | None = None) -> dict[str, float]:
    """Run the stages that are not up to date (``extra``: arguments added to the stages whose name matches a
    pattern). Returns the wall-clock seconds of every stage run so far."""
    return run_stages(stages(), OUT / "wall_seconds.json", force=force, extra=extra, tag="self_rewarding")


def main() -> None:
    after_demo_main(__doc__, stages, OUT / "wall_seconds.json", "self_rewarding", NEEDS,
                    "self_rewarding/m2=--trainer.max_epochs=1")


if __name__ == "__main__":
    main()
