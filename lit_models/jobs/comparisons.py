"""Ranked comparisons with post-validation (ALMoST section 2.1), from the prompted baselines' responses.

    python train.py predict --config configs/sandbox/comparisons.yaml

For each query: rank the responses by the rubric, drop bad responses (heuristic filter), apply the length
rule (unless ``length_rule`` is False), and, when a scorer is given (the as-is reward model), keep a pair only if
it agrees (``almost.feedback``). Output:
``Comparison`` records whose ``meta`` names the two configurations, and ``<output stem>.stats.json`` with
pairs formed, removed by each filter and kept, and the mean lengths of chosen and rejected responses.
"""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from almost.feedback import HeuristicFilter, Rubric, Stats, build_comparisons, recorded_rubric
from almost.records import Comparison, Responses, write_jsonl
from almost.scorers import RewardModelScorer, Scorer
from lit_models.jobs.base import GenerationJob


class ComparisonJob(GenerationJob):
    """Args:
        rubric: configurations from best to worst, e.g. ``"A > B > C = D > E"`` (``=`` ties); default: the rubric
            the responses job recorded in its statistics (``<responses stem>.stats.json``).
        heuristic: the rules that drop bad responses (``almost.feedback.HeuristicFilter``).
        scorer: the as-is RM filter's judge: any ``almost.scorers.Scorer``, or a saved reward model's directory
            (None: no RM filter). A pair is kept only if the chosen response scores higher.
        length_rule: apply the paper's length rule (False keeps the pairs it would remove; the sandbox's
            ``configs/sandbox/comparisons.yaml`` says why it does).
        output, seed: see ``GenerationJob`` (the job samples nothing; the seed is unused).
    """

    def __init__(self, output: str, rubric: str | None = None, heuristic: HeuristicFilter = HeuristicFilter(),
                 scorer: Scorer | str | None = None, length_rule: bool = True, seed: int = 0) -> None:
        super().__init__(output, seed)
        self.length_rule = length_rule
        self.rubric = Rubric.parse(rubric) if rubric else None
        self.heuristic = heuristic
        self.scorer = RewardModelScorer(scorer) if isinstance(scorer, str) else scorer

    def on_predict_start(self) -> None:
        super().on_predict_start()
        if self.rubric is None:
            self.rubric = recorded_rubric(Path(self.trainer.datamodule.hparams.path))

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        records: list[Responses] = [record for _, record in items]
        scores: dict[tuple[str, str], float] = {}
        if self.scorer is not None:  # one batched call over every response of the batch
            pairs = sorted({(r.prompt, text) for r in records for text in r.responses.values() if text.strip()})
            values = self.scorer.score([p for p, _ in pairs], [text for _, text in pairs])
            scores = dict(zip(pairs, values))

        def rm_agrees(prompt: str, chosen: str, rejected: str) -> bool:  # an unjudged side never wins
            good, bad = scores[prompt, chosen], scores[prompt, rejected]
            return good is not None and bad is not None and good > bad

        rows = []
        for index, record in items:
            comparisons, stats = build_comparisons(record.prompt, record.responses, self.rubric, self.heuristic,
                                                   rm_agrees if self.scorer is not None else None,
                                                   self.length_rule)
            rows.append({"index": index, "stats": asdict(stats),
                         "comparisons": [asdict(c) for c in comparisons]})
        return rows

    def finish(self, rows: list[dict]) -> dict:
        comparisons = [Comparison(**c) for row in rows for c in row["comparisons"]]
        write_jsonl(self.output, comparisons)
        stats = sum((Stats(**row["stats"]) for row in rows), Stats())
        return {"rubric": str(self.rubric), "reward_model_filter": self.scorer is not None,
                "length_rule": self.length_rule, **stats.to_dict()}
