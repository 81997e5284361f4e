"""Self-rewarding language models (Yuan et al. 2024, https://arxiv.org/abs/2401.10020) as pure functions.

The loop: M_1 is SFT on demonstrations plus judge-format examples (a rubric prompt of
``almost.evaluation.judge.render_judge_prompt`` answered by a short rationale and a final ``Score: n``); then for
t = 1, 2, ... M_t samples N answers per new prompt, judges each one several times with the additive 0-5 rubric
(``almost.scorers.JudgeScorer``), and the highest- and lowest-scored answers become a DPO pair that trains M_{t+1}
from M_t. This module holds what needs no model:

- :func:`choose_pair`: which answers of one prompt make the pair, or why the prompt gives none;
- :func:`count_outcomes`: per-iteration counts of pairs and of each reason for dropping a prompt;
- :func:`judge_points`, :func:`judge_demonstration`: a judge-format training example from a score in [0, 1].

Scores are "higher is better"; ``None`` is an answer no judgement could be read for, which is left out (never
scored 0). The jobs that run the models are ``lit_models.jobs.SelfJudgeJob`` and ``BestOfNJob``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Iterable, Literal, Sequence

from almost.evaluation.judge import MAX_SCORE, render_judge_prompt
from almost.records import Demonstration, same_text

# "pair": a chosen and a rejected answer; the rest say why a prompt gives no pair:
# "unjudged": no answer has a readable judgement; "one_judged": only one has; "tie": the highest and the lowest
# judged score are equal (all judged answers tie); "same_text": the highest- and the lowest-scored answers are the
# same text (a pair that states no preference, which ``almost.records.Comparison`` refuses).
Outcome = Literal["pair", "unjudged", "one_judged", "tie", "same_text"]
OUTCOMES: tuple[str, ...] = ("pair", "unjudged", "one_judged", "tie", "same_text")


@dataclass(frozen=True)
class PairChoice:
    """What one prompt's answers give: the indices of the chosen and rejected answers when ``outcome == "pair"``."""

    outcome: Outcome
    chosen: int | None = None
    rejected: int | None = None


def _judged(score: float | None) -> bool:
    return score is not None and not math.isnan(score)


def choose_pair(scores: Sequence[float | None], answers: Sequence[str]) -> PairChoice:
    """The paper's pair of one prompt: the highest-scored answer is chosen, the lowest-scored one rejected.

    Unjudged answers (``None`` or NaN) take no part. Among equal scores the first answer counts (for both the
    highest and the lowest). A prompt whose highest and lowest judged scores are equal gives no pair ("tie").

    Args:
        scores: ``(N,)`` the score of each answer, or None.
        answers: ``(N,)`` the answers' texts (to refuse a pair of two identical texts).
    """
    if len(scores) != len(answers):
        raise ValueError(f"{len(scores)} scores but {len(answers)} answers")
    judged = [i for i, score in enumerate(scores) if _judged(score)]
    if not judged:
        return PairChoice("unjudged")
    if len(judged) == 1:
        return PairChoice("one_judged")
    best = max(judged, key=lambda i: (scores[i], -i))  # the first of the highest
    worst = min(judged, key=lambda i: (scores[i], i))  # the first of the lowest
    if scores[best] == scores[worst]:
        return PairChoice("tie")
    if same_text(answers[best], answers[worst]):
        return PairChoice("same_text")
    return PairChoice("pair", best, worst)


def count_outcomes(choices: Iterable[PairChoice]) -> dict[str, int]:
    """How many prompts gave each outcome; every outcome of ``OUTCOMES`` is a key (0 when none)."""
    counts = dict.fromkeys(OUTCOMES, 0)
    for choice in choices:
        counts[choice.outcome] += 1
    return counts


def judge_points(score: float) -> int:
    """A score in [0, 1] on the rubric's 0..MAX_SCORE scale: ``MAX_SCORE * score`` rounded to the nearest whole
    number, halves up (0.5 -> 3, 0.9 -> 5, 0.1 -> 1). A 1e-9 guard keeps float noise in a weighted sum (0.9 computed
    as 0.8999999999999999) from rounding a half down."""
    if not 0.0 <= score <= 1.0:
        raise ValueError(f"a score to put on the rubric's scale must be in [0, 1], got {score}")
    return min(MAX_SCORE, math.floor(MAX_SCORE * score + 0.5 + 1e-9))


def judge_demonstration(question: str, answer: str, points: int, rationale: str, meta: dict | None = None,
                        prompt: str = "rubric") -> Demonstration:
    """A judge-format training example: the judge prompt ``prompt`` (a name of ``JUDGE_PROMPTS``) for
    ``(question, answer)`` as the user turn; the rationale and a final ``Score: <points>`` line as the assistant's
    answer (what ``parse_score`` reads)."""
    if not 0 <= points <= MAX_SCORE:
        raise ValueError(f"points must be in 0..{MAX_SCORE}, got {points}")
    judgement = f"{rationale.strip()}\nScore: {points}" if rationale.strip() else f"Score: {points}"
    return Demonstration.from_pair(render_judge_prompt(question, answer, prompt), judgement, meta)
