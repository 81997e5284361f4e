"""How well a judge's scores agree with gold scores: the five reward-modelling metrics of self-rewarding language
models (Yuan et al. 2024, section 3), as pure functions on plain floats.

The data are groups, one per prompt: the judge's score of each of the prompt's answers (``None`` where no judgement
could be read) and the gold score of the same answers (human ranks in the paper, the oracle in the sandbox).
Unjudged answers take no part in any metric (they are counted, never given a score); a metric with nothing to
measure is None.

- pairwise accuracy: over every pair of judged answers to one prompt whose gold scores differ, the share the judge
  orders the same way; a pair the judge ties earns ``tie_credit`` (0.5: a judge that gives every answer the same
  score is at chance, as everywhere in ``almost.evaluation.metrics``);
- 5-best share: of the answers the judge gives a perfect score, the share that are gold-best for their prompt
  (ties for the best count as best);
- exact match: the share of prompts (two answers or more, all judged) whose order under the judge is the gold
  order exactly: every pair ordered alike, ties included;
- Spearman and Kendall (tau-b) correlations between judge and gold scores over all judged answers pooled
  (absolute agreement of the scales, not per-prompt orders); ties take their average rank.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from itertools import combinations
from typing import Sequence

from almost.evaluation.judge import MAX_SCORE

Groups = Sequence[Sequence[float | None]]


def _sign(x: float) -> int:
    return (x > 0) - (x < 0)


def _check(judge: Groups, gold: Sequence[Sequence[float]]) -> None:
    if len(judge) != len(gold) or any(len(j) != len(g) for j, g in zip(judge, gold)):
        raise ValueError("judge and gold scores need the same groups, of the same sizes")


def _judged_pairs(judge: Groups, gold: Sequence[Sequence[float]]):
    """Every ``(judge_a, judge_b, gold_a, gold_b)`` of two judged answers to one prompt."""
    for j, g in zip(judge, gold):
        for a, b in combinations(range(len(j)), 2):
            if j[a] is not None and j[b] is not None:
                yield j[a], j[b], g[a], g[b]


def pairwise_accuracy(judge: Groups, gold: Sequence[Sequence[float]], tie_credit: float = 0.5) -> float | None:
    """Share of the gold-ordered pairs of judged answers that the judge orders alike (see the module docstring)."""
    _check(judge, gold)
    credits = [1.0 if _sign(ja - jb) == _sign(ga - gb) else tie_credit if ja == jb else 0.0
               for ja, jb, ga, gb in _judged_pairs(judge, gold) if ga != gb]
    return sum(credits) / len(credits) if credits else None


def five_best_share(judge: Groups, gold: Sequence[Sequence[float]], perfect: float = MAX_SCORE) -> float | None:
    """Share of the answers scored ``perfect`` by the judge that have their prompt's highest gold score."""
    _check(judge, gold)
    hits = [g[i] == max(g) for j, g in zip(judge, gold) for i, score in enumerate(j) if score == perfect]
    return sum(hits) / len(hits) if hits else None


def exact_match(judge: Groups, gold: Sequence[Sequence[float]]) -> float | None:
    """Share of the prompts with two or more answers, all judged, whose judge order equals the gold order."""
    _check(judge, gold)
    matches = [all(_sign(j[a] - j[b]) == _sign(g[a] - g[b]) for a, b in combinations(range(len(j)), 2))
               for j, g in zip(judge, gold) if len(j) >= 2 and all(s is not None for s in j)]
    return sum(matches) / len(matches) if matches else None


def average_ranks(values: Sequence[float]) -> list[float]:
    """1-based ranks of ``values``; tied values share the mean of the ranks they span ([3, 1, 3] -> [2.5, 1, 2.5])."""
    order = sorted(range(len(values)), key=values.__getitem__)
    ranks = [0.0] * len(values)
    start = 0
    while start < len(order):
        end = start
        while end + 1 < len(order) and values[order[end + 1]] == values[order[start]]:
            end += 1
        for k in range(start, end + 1):
            ranks[order[k]] = (start + end) / 2 + 1
        start = end + 1
    return ranks


def spearman(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Pearson correlation of the average ranks; None when either side is constant (or fewer than 2 values)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} and {len(y)} values")
    if len(x) < 2:
        return None
    rx, ry = average_ranks(x), average_ranks(y)
    mx, my = sum(rx) / len(rx), sum(ry) / len(ry)
    cov = sum((a - mx) * (b - my) for a, b in zip(rx, ry))
    var_x, var_y = sum((a - mx) ** 2 for a in rx), sum((b - my) ** 2 for b in ry)
    return cov / math.sqrt(var_x * var_y) if var_x and var_y else None


def kendall_tau_b(x: Sequence[float], y: Sequence[float]) -> float | None:
    """Kendall's tau-b, ``(C - D) / sqrt((n0 - n_x) (n0 - n_y))``: C and D concordant and discordant pairs, n0 all
    pairs, n_x and n_y the pairs tied in x and in y. None when either side is constant (or fewer than 2 values)."""
    if len(x) != len(y):
        raise ValueError(f"{len(x)} and {len(y)} values")
    concordant = discordant = tied_x = tied_y = pairs = 0
    for a, b in combinations(range(len(x)), 2):
        pairs += 1
        sx, sy = _sign(x[a] - x[b]), _sign(y[a] - y[b])
        tied_x += sx == 0
        tied_y += sy == 0
        concordant += sx * sy > 0
        discordant += sx * sy < 0
    denominator = math.sqrt((pairs - tied_x) * (pairs - tied_y))
    return (concordant - discordant) / denominator if denominator else None


@dataclass(frozen=True)
class JudgeAgreement:
    """The five metrics (None: nothing to measure) and how much each one rests on."""

    pairwise_accuracy: float | None
    five_best_share: float | None
    exact_match: float | None
    spearman: float | None
    kendall_tau: float | None
    prompts: int
    answers: int
    unjudged: int  # answers without a readable judgement, left out of every metric
    perfect_scores: int  # answers the judge scored MAX_SCORE (the 5-best share's base)


def judge_agreement(judge: Groups, gold: Sequence[Sequence[float]], tie_credit: float = 0.5) -> JudgeAgreement:
    """All five metrics of ``judge`` against ``gold`` (groups of one prompt's answers each)."""
    _check(judge, gold)
    pooled = [(s, t) for j, g in zip(judge, gold) for s, t in zip(j, g) if s is not None]
    xs, ys = [s for s, _ in pooled], [t for _, t in pooled]
    return JudgeAgreement(
        pairwise_accuracy(judge, gold, tie_credit), five_best_share(judge, gold), exact_match(judge, gold),
        spearman(xs, ys), kendall_tau_b(xs, ys), prompts=len(judge), answers=sum(len(j) for j in judge),
        unjudged=sum(s is None for j in judge for s in j), perfect_scores=sum(s == MAX_SCORE for j in judge for s in j))
