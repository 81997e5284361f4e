"""Best-of-N SFT data (RAFT, Dong et al. 2023, https://arxiv.org/abs/2304.06767): a policy's best answers.

    python train.py predict --config configs/sandbox/raft.yaml
    python train.py fit --config configs/sandbox/sft_raft.yaml     # SFT on what it wrote

For each query the policy samples ``n_samples`` zero-shot answers (its chat template, no few-shot prompt); a
scorer scores them and the highest-scored one becomes a one-turn ``Demonstration``, which the SFT stage trains on.
An answer the scorer cannot judge (None, or empty) never wins; a query with no judged answer gives nothing.
Statistics: the scorer's mean score of the kept answers against all judged samples of the same queries.
"""

from __future__ import annotations

import math
from typing import Any

from almost.generation import SamplingConfig
from almost.records import Demonstration, Prompt, write_jsonl
from almost.scorers import RewardModelScorer, Scorer
from almost.selfplay import best_of
from lit_models.jobs.policy import PolicySamplingJob, mean_std


class BestOfNJob(PolicySamplingJob):
    """Args:
        policy: local Hugging Face directory of the policy that samples (e.g. ``runs/sandbox/sft_rmsp/hf``).
        scorer: picks the best of the ``n_samples`` answers: any ``almost.scorers.Scorer``, or a saved reward
            model's directory.
        n_samples: answers sampled per query (``N``).
        sampling: sampling settings (the policy's template adds its stop string).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, policy: str, scorer: Scorer | str, output: str, n_samples: int = 4,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0) -> None:
        super().__init__(policy, output, n_samples, sampling, seed)
        self.scorer = RewardModelScorer(scorer) if isinstance(scorer, str) else scorer

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self.scorer.to(self.device)

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        prompts: list[Prompt] = [record for _, record in items]
        queries = [p.prompt for p in prompts]
        # 1. sample N answers per query  2. score every non-empty one
        answers = self.sample_answers(queries, seed)
        scores = self.score_answers(self.scorer, queries, answers)
        return [{"index": index, "prompt": prompt.prompt, "meta": prompt.meta, "samples": samples, "scores": s}
                for (index, prompt), samples, s in zip(items, answers, scores)]

    def finish(self, rows: list[dict]) -> dict:
        # 3. keep the best judged answer of each query
        demonstrations, kept, all_samples = [], [], []
        for row in rows:
            best = best_of(row["scores"])
            score = row["scores"][best]
            if score is None or math.isnan(score):  # no judged answer: best_of fell back to the first
                continue
            demonstrations.append(Demonstration.from_pair(
                row["prompt"], row["samples"][best],
                {**row["meta"], "score": score, "samples": row["samples"], "scores": row["scores"]}))
            kept.append(score)
            all_samples += row["scores"]  # the same queries' samples: kept and all compare like for like
        write_jsonl(self.output, demonstrations)
        scores = [s for row in rows for s in row["scores"]]
        return {
            "queries": len(rows), "demonstrations": len(demonstrations), "n_samples": self.n_samples,
            "queries_without_judged_answer": len(rows) - len(demonstrations),
            "empty_answers": sum(not a.strip() for row in rows for a in row["samples"]),
            "unjudged_answers": sum(s is None or math.isnan(s) for s in scores),
            "score_kept": mean_std(kept), "score_all_samples": mean_std(all_samples),
            "scorer": self.scorer.describe(),
        }
