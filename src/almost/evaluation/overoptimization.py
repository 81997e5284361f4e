"""Best-of-N as an optimizer, for over-optimization curves (Gao et al. 2022, "Scaling Laws for Reward Model
Overoptimization", https://arxiv.org/abs/2210.10760).

Best-of-N picks, among N samples of a policy, the one a selector (a reward model, or the gold scorer itself) scores
highest. Its distance from the policy is known in closed form, ``KL = log N - (N - 1) / N`` (:func:`best_of_n_kl`),
and from K >= N samples per prompt its expected outcome for every N <= K is estimated without resampling
(:func:`best_of_n_expected`): rank the K samples by the selector; the sample ranked i-th from the bottom (1-based) is
the best of a random N-subset exactly when the subset holds it and N - 1 of the i - 1 samples below it, with
probability ``C(i - 1, N - 1) / C(K, N)`` (:func:`best_of_n_weights`).
"""

from __future__ import annotations

import math
import statistics
from typing import Sequence


def best_of_n_kl(n: int) -> float:
    """KL(best-of-n || policy) in nats: ``log n - (n - 1) / n`` (0 for n = 1)."""
    if n < 1:
        raise ValueError(f"best-of-n needs n >= 1, got {n}")
    return math.log(n) - (n - 1) / n


def best_of_n_weights(k: int, n: int) -> list[float]:
    """``(k,)`` probability that the sample ranked i-th lowest of ``k`` (i = 1..k) is the best of a uniformly random
    ``n``-subset: ``C(i - 1, n - 1) / C(k, n)``; they sum to 1."""
    if not 1 <= n <= k:
        raise ValueError(f"best-of-n from k samples needs 1 <= n <= k, got n={n}, k={k}")
    total = math.comb(k, n)
    return [math.comb(i - 1, n - 1) / total for i in range(1, k + 1)]


def best_of_n_expected(selector: Sequence[float], values: Sequence[float], n: int) -> float:
    """The expected ``value`` of the sample that ``selector`` scores highest among ``n`` drawn without replacement
    from these ``k`` samples of one prompt.

    Args:
        selector: ``(k,)`` the selector's score of each sample (higher is chosen). Among equal scores the earlier
            sample counts as higher (the first of the best is chosen, as ``max`` does).
        values: ``(k,)`` what is measured of each sample (the gold score, or the selector's own score).
        n: samples per choice, ``1 <= n <= k``.
    """
    if len(selector) != len(values):
        raise ValueError(f"{len(selector)} selector scores but {len(values)} values")
    order = sorted(range(len(selector)), key=lambda i: (selector[i], -i))  # ascending; ties: later sample lower
    weights = best_of_n_weights(len(selector), n)
    return sum(w * values[i] for w, i in zip(weights, order))


def best_of_n_curve(selector: Sequence[Sequence[float]], values: Sequence[Sequence[float]],
                    ns: Sequence[int]) -> list[dict]:
    """Per ``n`` of ``ns``: the KL, and the mean over prompts of :func:`best_of_n_expected` with its standard error
    over prompts. ``selector`` and ``values`` are ``(prompts, k)``."""
    if len(selector) != len(values) or not selector:
        raise ValueError(f"{len(selector)} prompts of selector scores but {len(values)} of values")
    rows = []
    for n in ns:
        per_prompt = [best_of_n_expected(s, v, n) for s, v in zip(selector, values)]
        se = statistics.stdev(per_prompt) / math.sqrt(len(per_prompt)) if len(per_prompt) > 1 else None
        rows.append({"n": n, "kl": best_of_n_kl(n), "mean": statistics.fmean(per_prompt), "se": se})
    return rows
