"""Ranked comparisons with post-validation (ALMoST section 2.1), from the prompted baselines' responses.

    python train.py predict --config configs/sandbox/comparisons.yaml

For each query: rank the responses by the rubric, drop bad responses (heuristic filter), apply the length
rule, and, when a reward model is given, keep a pair only if it agrees (``almost.feedback``). Output:
``Comparison`` records whose ``meta`` names the two configurations, and ``<output stem>.stats.json`` with
pairs formed, removed by each filter and kept, and the mean lengths of chosen and rejected responses.
"""

from __future__ import annotations

from dataclasses import asdict
from typing import Any

from almost.feedback import HeuristicFilter, Rubric, Stats, build_comparisons
from almost.records import Comparison, Responses, Turn, write_jsonl
from almost.scoring import load_scorer, reward_scores
from lit_models.jobs.base import GenerationJob


class ComparisonJob(GenerationJob):
    """Args:
        rubric: configurations from best to worst, e.g. ``"A > B > C = D > E"`` (``=`` ties).
        heuristic: the rules that drop bad responses (``almost.feedback.HeuristicFilter``).
        reward_model: a saved reward model directory for the as-is RM filter (None: no RM filter).
        max_length: longest sequence the reward model scores (the prompt is cut from the left).
        output, seed: see ``GenerationJob`` (the job samples nothing; the seed is unused).
    """

    def __init__(self, rubric: str, output: str, heuristic: HeuristicFilter = HeuristicFilter(),
                 reward_model: str | None = None, max_length: int = 512, seed: int = 0) -> None:
        super().__init__(output, seed)
        self.rubric = Rubric.parse(rubric)
        self.heuristic = heuristic
        self.max_length = max_length
        self.reward_model, self.rm_tokenizer = load_scorer(reward_model) if reward_model else (None, None)

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        records: list[Responses] = [record for _, record in items]
        scores: dict[tuple[str, str], float] = {}
        if self.reward_model is not None:  # one batched pass over every response of the batch
            pairs = sorted({(r.prompt, text) for r in records for text in r.responses.values() if text.strip()})
            values = reward_scores(self.reward_model, self.rm_tokenizer, [[Turn("user", p)] for p, _ in pairs],
                                   [text for _, text in pairs], max_length=self.max_length)
            scores = dict(zip(pairs, values))

        def rm_agrees(prompt: str, chosen: str, rejected: str) -> bool:
            return scores[prompt, chosen] > scores[prompt, rejected]

        rows = []
        for index, record in items:
            comparisons, stats = build_comparisons(record.prompt, record.responses, self.rubric, self.heuristic,
                                                   rm_agrees if self.reward_model is not None else None)
            rows.append({"index": index, "stats": asdict(stats),
                         "comparisons": [asdict(c) for c in comparisons]})
        return rows

    def finish(self, rows: list[dict]) -> dict:
        comparisons = [Comparison(**c) for row in rows for c in row["comparisons"]]
        write_jsonl(self.output, comparisons)
        stats = sum((Stats(**row["stats"]) for row in rows), Stats())
        return {"rubric": str(self.rubric), "reward_model_filter": self.reward_model is not None, **stats.to_dict()}
