"""Query mining in the style of Self-Instruct (Wang et al. 2022), as ALMoST collects its initial queries.

A vanilla LM sees ``k`` example queries drawn at random from the seeds and the queries mined so far, and
writes a new one. A candidate is kept if it passes the length checks, is not an excluded text (held-out
evaluation queries) and is not a near-duplicate (ROUGE-L F >= ``threshold``) of any seed, kept query or
excluded text. Mining stops when ``target`` queries are kept.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from typing import Callable, Sequence

from almost.rouge import NearDuplicateFilter, tokenize


@dataclass
class QueryMiner:
    """State of one mining run; feed it candidates with :meth:`offer`.

    Args:
        seeds: the initial queries (kept in the pool for examples and de-duplication, not counted as mined).
        target: how many queries to mine.
        examples_per_prompt: ``k``, examples shown in one prompt.
        min_words, max_words: length checks (words as ROUGE-L tokenizes them).
        threshold: ROUGE-L F at or above which a candidate is a near-duplicate (0.5 in ALMoST).
        excluded: texts a mined query must not be (or nearly be), e.g. held-out evaluation queries.
        is_excluded: an extra test for excluded texts (e.g. the sandbox world's held-out split).
        role_tags: a candidate that contains one ran on into a dialogue turn and is rejected.
    """

    seeds: Sequence[str]
    target: int
    examples_per_prompt: int = 4
    min_words: int = 3
    max_words: int = 40
    threshold: float = 0.5
    excluded: Sequence[str] = ()
    is_excluded: Callable[[str], bool] | None = None
    role_tags: Sequence[str] = ("User:", "Assistant:")
    mined: list[str] = field(default_factory=list, init=False)
    rejected: dict[str, int] = field(default_factory=dict, init=False)  # reason -> count

    def __post_init__(self) -> None:
        if not self.seeds:
            raise ValueError("query mining needs at least one seed query")
        self._pool = NearDuplicateFilter(self.threshold)
        for seed in self.seeds:
            self._pool.add(seed)
        self._excluded = NearDuplicateFilter(self.threshold)
        for text in self.excluded:
            self._excluded.add(text)

    @property
    def done(self) -> bool:
        return len(self.mined) >= self.target

    def examples(self, rng: random.Random) -> list[str]:
        """``k`` distinct example queries from the seeds and the mined queries."""
        pool = list(self.seeds) + self.mined
        return rng.sample(pool, min(self.examples_per_prompt, len(pool)))

    def check(self, candidate: str) -> str | None:
        """Why ``candidate`` would be rejected, or None if it would be kept."""
        n_words = len(tokenize(candidate))
        if n_words < self.min_words:
            return "too_short"
        if n_words > self.max_words:
            return "too_long"
        if any(tag in candidate for tag in self.role_tags):
            return "role_tag"
        if (self.is_excluded is not None and self.is_excluded(candidate)) or self._excluded.is_duplicate(candidate):
            return "excluded"
        if self._pool.is_duplicate(candidate):
            return "near_duplicate"
        return None

    def restore(self, mined: Sequence[str]) -> None:
        """Add queries an earlier run mined, without checks (resuming an interrupted run)."""
        for query in mined:
            self._pool.add(query)
            self.mined.append(query)

    def offer(self, candidate: str) -> bool:
        """Keep ``candidate`` (stripped) if it passes every check and the target is not reached yet."""
        candidate = candidate.strip()
        reason = "target_reached" if self.done else self.check(candidate)
        if reason is not None:
            self.rejected[reason] = self.rejected.get(reason, 0) + 1
            return False
        self._pool.add(candidate)
        self.mined.append(candidate)
        return True
