"""ROUGE-L between two texts, and the near-duplicate filter used when mining queries.

Tokenisation: the text is lower-cased and split on every character that is not a letter or a digit
(Unicode-aware, so ``"Café's"`` gives ``["café", "s"]``); punctuation and whitespace never form tokens.
This matches the default tokenizer of Google's ``rouge_score`` for ASCII text without stemming; unlike it,
non-ASCII letters are kept instead of being erased.

ROUGE-L (Lin 2004) from the longest common subsequence (LCS) of the token lists, beta = 1::

    P = LCS / len(candidate)    R = LCS / len(reference)    F = 2 P R / (P + R) = 2 LCS / (len(c) + len(r))

Query mining keeps a new query only if its ROUGE-L F against every kept query is below a threshold, as in
Self-Instruct (Wang et al. 2022, threshold 0.7); this project's default is 0.5 (:class:`NearDuplicateFilter`).
"""

from __future__ import annotations

import re
from collections import Counter
from dataclasses import dataclass, field
from typing import Sequence

_TOKEN = re.compile(r"[^\W_]+")  # runs of letters and digits (\w without the underscore)


def tokenize(text: str) -> list[str]:
    """Lower-cased runs of letters and digits: ``"The cat's mat!"`` -> ``["the", "cat", "s", "mat"]``."""
    return _TOKEN.findall(text.lower())


def lcs_length(a: Sequence[str], b: Sequence[str]) -> int:
    """Length of the longest common subsequence of ``a`` and ``b``.

    Dynamic programme over two rows, ``O(len(a) * len(b))`` time and ``O(min(len(a), len(b)))`` memory::

        L[i][j] = L[i-1][j-1] + 1            if a[i-1] == b[j-1]
                = max(L[i-1][j], L[i][j-1])  otherwise
    """
    if len(a) < len(b):
        a, b = b, a  # the row runs over the shorter sequence
    previous = [0] * (len(b) + 1)
    for x in a:
        current = [0] * (len(b) + 1)
        for j, y in enumerate(b, start=1):
            current[j] = previous[j - 1] + 1 if x == y else max(previous[j], current[j - 1])
        previous = current
    return previous[-1]


@dataclass(frozen=True)
class RougeScore:
    precision: float  # LCS / number of candidate tokens
    recall: float  # LCS / number of reference tokens
    fmeasure: float  # F1 (beta = 1)


def _score(lcs: int, n_candidate: int, n_reference: int) -> RougeScore:
    if lcs == 0:  # also covers a text without tokens
        return RougeScore(0.0, 0.0, 0.0)
    # 2 LCS / (n_c + n_r) equals 2PR / (P + R) and is exact when the F is a simple fraction like 1/2.
    return RougeScore(lcs / n_candidate, lcs / n_reference, 2 * lcs / (n_candidate + n_reference))


def rouge_l(candidate: str, reference: str) -> RougeScore:
    """Sentence-level ROUGE-L of ``candidate`` against ``reference`` (see the module docstring).

    A text without any token scores 0 against everything, itself included.
    """
    c, r = tokenize(candidate), tokenize(reference)
    return _score(lcs_length(c, r), len(c), len(r))


@dataclass
class NearDuplicateFilter:
    """Keep a text only if its ROUGE-L F against every text kept so far is below ``threshold``.

    A text scoring F >= ``threshold`` against any kept text is rejected (F = 0.5 exactly rejects at the default).
    Texts are compared in the order they are added, so the first of two near-duplicates is the one kept.
    A text without tokens (empty, punctuation only) scores 0 against everything and is therefore kept.

    Cost: instead of running the LCS programme against every kept text, an inverted index from token to kept
    texts gives each kept text's shared-token count (multiset overlap), an exact upper bound of the LCS;
    the programme only runs where that bound could reach the threshold.
    """

    threshold: float = 0.5
    kept: list[str] = field(default_factory=list, init=False, repr=False)
    _tokens: list[list[str]] = field(default_factory=list, init=False, repr=False)
    # token -> [(kept id, count of the token in that kept text), ...]
    _index: dict[str, list[tuple[int, int]]] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if not 0.0 < self.threshold <= 1.0:
            raise ValueError(f"threshold must be in (0, 1], got {self.threshold}")

    def _overlaps(self, bag: Counter) -> dict[int, int]:
        """Kept id -> number of tokens shared with ``bag`` (as multisets), for kept texts sharing any."""
        overlap: dict[int, int] = {}
        for token, count in bag.items():
            for i, kept_count in self._index.get(token, ()):
                overlap[i] = overlap.get(i, 0) + min(count, kept_count)
        return overlap

    def is_duplicate(self, text: str) -> bool:
        """Whether ``text`` scores F >= ``threshold`` against some kept text (nothing is added)."""
        tokens = tokenize(text)
        for i, shared in sorted(self._overlaps(Counter(tokens)).items()):
            other = self._tokens[i]
            total = len(tokens) + len(other)
            # F = 2 LCS / (n + m) and LCS <= shared; division rounds monotonically, so a bound computed the
            # same way that falls below the threshold proves that F does too (texts sharing nothing have F = 0).
            if 2 * shared / total < self.threshold:
                continue
            if _score(lcs_length(tokens, other), len(tokens), len(other)).fmeasure >= self.threshold:
                return True
        return False

    def add(self, text: str) -> bool:
        """Keep ``text`` unless it is a near-duplicate of a kept text; return whether it was kept."""
        if self.is_duplicate(text):
            return False
        tokens = tokenize(text)
        kept_id = len(self.kept)
        self.kept.append(text)
        self._tokens.append(tokens)
        for token, count in Counter(tokens).items():
            self._index.setdefault(token, []).append((kept_id, count))
        return True
