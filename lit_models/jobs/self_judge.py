"""One iteration's preference pairs of self-rewarding language models (Yuan et al. 2024): M_t answers and judges.

    python train.py predict --config configs/sandbox/self_rewarding/judge_1.yaml

For each new prompt: M_t samples ``n_samples`` zero-shot answers (the paper: 4, temperature 0.7, top-p 0.9); the
judge (the paper: M_t itself with the additive 0-5 rubric, 3 judgements averaged) scores each non-empty answer;
the highest-scored answer is chosen and the lowest-scored rejected (``almost.self_rewarding.choose_pair``); prompts
whose scores tie, or with fewer than two judged answers, give no pair. Output: ``Comparison`` records whose
``meta`` holds every answer's score and readable judgements, for DPO of M_{t+1} from M_t; statistics: pairs, ties,
unparseable judgements, and the mean score and length of chosen and rejected answers.
"""

from __future__ import annotations

import statistics
from collections import Counter
from pathlib import Path
from typing import Any

from almost.evaluation.judge import parse_score
from almost.generation import SamplingConfig
from almost.records import Comparison, Prompt, write_jsonl
from almost.scorers import JudgeScorer, Scorer
from almost.self_rewarding import PairChoice, choose_pair, count_outcomes
from lit_models.jobs.policy import PolicySamplingJob, mean_std

PAPER_SAMPLING = SamplingConfig(temperature=0.7, top_p=0.9)  # the paper's sampling of candidate answers


class SelfJudgeJob(PolicySamplingJob):
    """Args:
        policy: local Hugging Face directory of M_t.
        judge: scores the answers; any ``almost.scorers.Scorer``. The self-rewarding judge is
            ``JudgeScorer(path=<policy>, samples=3, temperature=0.7, top_p=0.9)``: a ``JudgeScorer`` of the
            policy's own directory judges with the policy's loaded network (no second copy), and its readable
            judgements are kept per answer. A batch's judgements are sampled from the batch's seed.
        n_samples: answers sampled per prompt (``N``).
        sampling: sampling of the answers (the policy's template adds its stop string).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, policy: str, judge: Scorer, output: str, n_samples: int = 4,
                 sampling: SamplingConfig = PAPER_SAMPLING, seed: int = 0) -> None:
        if n_samples < 2:
            raise ValueError(f"a pair needs at least two answers per prompt, got n_samples {n_samples}")
        super().__init__(policy, output, n_samples, sampling, seed)
        self.judge = judge
        if isinstance(judge, JudgeScorer) and Path(judge.path).resolve() == Path(policy).resolve():
            judge.use_network(self.networks["policy"], self.tokenizers["policy"])

    def on_predict_start(self) -> None:
        super().on_predict_start()
        self.judge.to(self.device)

    def judge_answers(self, queries: list[str], answers: list[list[str]], seed: int) -> dict[str, list]:
        """Per query: ``scores`` of every answer (None: empty, or no readable judgement) and, for a ``JudgeScorer``,
        its ``judge_outputs`` per answer and the ``judgements`` read from them (None: unparseable); else None."""
        if not isinstance(self.judge, JudgeScorer):
            return {"scores": self.score_answers(self.judge, queries, answers), "judgements": [None] * len(queries),
                    "judge_outputs": [None] * len(queries)}
        self.judge.seed, self.judge.calls = seed, 0  # the batch's own seed: a resumed run judges alike
        flat = [(q, a) for q, per_query in zip(queries, answers) for a in per_query if a.strip()]
        outputs = iter(self.judge.judgements([q for q, _ in flat], [a for _, a in flat]) if flat else [])
        texts = [[next(outputs) if a.strip() else [] for a in per_query] for per_query in answers]
        return {"scores": [[self.judge.scores_of(t) if t else None for t in per_query] for per_query in texts],
                "judgements": [[[parse_score(x) for x in t] for t in per_query] for per_query in texts],
                "judge_outputs": texts}

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        prompts: list[Prompt] = [record for _, record in items]
        queries = [p.prompt for p in prompts]
        # 1. M_t samples N answers per prompt  2. the judge scores each answer
        answers = self.sample_answers(queries, seed)
        judged = self.judge_answers(queries, answers, seed + 7919)
        return [{"index": index, "prompt": prompt.prompt, "meta": prompt.meta, "answers": answers[i],
                 **{key: values[i] for key, values in judged.items()}} for i, (index, prompt) in enumerate(items)]

    def finish(self, rows: list[dict]) -> dict:
        # 3. the highest-scored answer is chosen, the lowest rejected; ties and unjudged prompts give no pair
        choices = [choose_pair(row["scores"], row["answers"]) for row in rows]
        comparisons = [self.comparison(row, choice) for row, choice in zip(rows, choices) if choice.outcome == "pair"]
        write_jsonl(self.output, comparisons)
        outcomes = count_outcomes(choices)
        read = [s for row in rows for per_answer in row["judgements"] or [] for s in per_answer]
        histogram = Counter(s for s in read if s is not None)
        return {
            "prompts": len(rows), "answers": sum(len(row["answers"]) for row in rows),
            "pairs": outcomes["pair"], "ties": outcomes["tie"], "outcomes": outcomes,
            "empty_answers": sum(not a.strip() for row in rows for a in row["answers"]),
            "unjudged_answers": sum(s is None for row in rows for s in row["scores"]),
            "judgements": len(read), "unparseable_judgements": sum(s is None for s in read),
            "judgement_histogram": {str(k): histogram[k] for k in sorted(histogram)},
            "score_all_answers": mean_std([s for row in rows for s in row["scores"]]),
            "score_chosen": mean_std([c.meta["chosen_score"] for c in comparisons]),
            "score_rejected": mean_std([c.meta["rejected_score"] for c in comparisons]),
            "chosen_chars": statistics.fmean(len(c.chosen) for c in comparisons) if comparisons else None,
            "rejected_chars": statistics.fmean(len(c.rejected) for c in comparisons) if comparisons else None,
            "judge": self.judge.describe(),
            "examples": [{"prompt": row["prompt"], "answer": row["answers"][0], "score": row["scores"][0],
                          "judge_outputs": (row["judge_outputs"] or [None])[0]} for row in rows[:3]],
        }

    @staticmethod
    def comparison(row: dict, choice: PairChoice) -> Comparison:
        return Comparison(row["prompt"], row["answers"][choice.chosen], row["answers"][choice.rejected],
                          {**row["meta"], "chosen_score": row["scores"][choice.chosen],
                           "rejected_score": row["scores"][choice.rejected], "answers": row["answers"],
                           "scores": row["scores"], "judgements": row["judgements"]})
