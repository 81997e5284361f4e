"""Synthetic comparisons from a rubric of model configurations (ALMoST, Kim et al. 2023, section 2.1).

https://arxiv.org/abs/2305.13735

For one query, every configuration of the rubric (model size, number and quality of demonstrations) has
answered it. The prior "a better configuration gives a better response" turns those responses into pairs,
which are then validated, in this order:

1. Heuristic filter: responses that fail a rule of :class:`HeuristicFilter` are dropped; every pair that
   involves a dropped response is removed.
2. Length rule (also part of the heuristic filter): among the pairs of valid responses, a pair is kept only if
   its chosen response is longer than its rejected one, or not much shorter than a typical valid response of
   the query (:func:`length_threshold`).
3. As-is reward-model filter (optional): a pair is kept only if a reward model agrees with its order.

Lengths are counted in characters of the text stripped of surrounding whitespace (:func:`n_chars`).
Everything here is deterministic: pairs follow the rubric's order.
"""

from __future__ import annotations

import json
import math
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Callable, Mapping, Sequence

from almost.records import Comparison

RULES = ("too_short", "unfinished", "starts_with_well", "unknown", "role_marker")  # in the order checked

RmAgrees = Callable[[str, str, str], bool]  # (prompt, chosen, rejected) -> the reward model prefers chosen


def n_chars(text: str) -> int:
    """Length of a response: characters after stripping surrounding whitespace."""
    return len(text.strip())


# ------------------------------------------------------------------------------------------------ rubric
@dataclass(frozen=True, init=False)
class Rubric:
    """Configurations ranked from best to worst; configurations in one tier are tied.

    ``Rubric([["A"], ["B"], ["C", "D"], ["E"]])`` equals ``Rubric.parse("A > B > C = D > E")``.
    """

    tiers: tuple[tuple[str, ...], ...]

    def __init__(self, tiers: Sequence[Sequence[str]]) -> None:
        if isinstance(tiers, str) or any(isinstance(t, str) for t in tiers):
            raise TypeError("tiers is a list of lists of configuration names; use Rubric.parse for a string")
        normalised = tuple(tuple(tier) for tier in tiers)
        names = [name for tier in normalised for name in tier]
        if not normalised or any(not tier for tier in normalised):
            raise ValueError(f"a rubric needs at least one tier and no empty tier, got {tiers!r}")
        if any(not isinstance(n, str) or not n.strip() or n != n.strip() for n in names):
            raise ValueError(f"configuration names must be non-empty strings without surrounding spaces: {names!r}")
        repeated = sorted({n for n in names if names.count(n) > 1})
        if repeated:
            raise ValueError(f"configuration {repeated[0]!r} appears more than once in the rubric")
        object.__setattr__(self, "tiers", normalised)

    @classmethod
    def parse(cls, spec: str) -> "Rubric":
        """``"A > B > C = D > E"``: ``>`` separates tiers (better first), ``=`` ties configurations."""
        return cls([[name.strip() for name in tier.split("=")] for tier in spec.split(">")])

    @property
    def configs(self) -> tuple[str, ...]:
        """All configurations, best first (tied ones in the order written)."""
        return tuple(name for tier in self.tiers for name in tier)

    def __contains__(self, config: object) -> bool:
        return config in self.configs

    def rank(self, config: str) -> int:
        """Tier of ``config``: 0 for the best; tied configurations share a rank."""
        for rank, tier in enumerate(self.tiers):
            if config in tier:
                return rank
        raise ValueError(f"configuration {config!r} is not in the rubric {self}")

    def __str__(self) -> str:
        return " > ".join(" = ".join(tier) for tier in self.tiers)


def form_pairs(responses: Mapping[str, str], rubric: Rubric) -> list[tuple[str, str]]:
    """All ``(chosen_config, rejected_config)`` pairs whose chosen configuration ranks strictly better.

    Tied configurations form no pair; rubric configurations without a response are skipped. Pairs are ordered
    by the rubric (best chosen first, then best rejected first). A response from a configuration that is not
    in the rubric is an error: it cannot be ranked.
    """
    unknown = sorted(set(responses) - set(rubric.configs))
    if unknown:
        raise ValueError(f"response from configuration {unknown[0]!r}, which is not in the rubric {rubric}")
    present = [c for c in rubric.configs if c in responses]
    return [(better, worse) for i, better in enumerate(present) for worse in present[i + 1:]
            if rubric.rank(better) < rubric.rank(worse)]


# ------------------------------------------------------------------------------------------------ filters
@dataclass(frozen=True)
class HeuristicFilter:
    """Rules that drop a bad response; :meth:`check` names the first rule it fails (order of ``RULES``).

    - ``too_short``: fewer than ``min_chars`` characters (:func:`n_chars`). An empty response always fails
      this rule, even when it is not enabled, because a comparison cannot hold an empty text.
    - ``unfinished``: does not end with sentence-ending punctuation (``sentence_ends``), optionally followed
      by closing quotes or brackets (``closers``): "It is 4." and 'He said "hi!"' are finished, "It is" is not.
    - ``starts_with_well``: begins with the word "well", any case ("Well, ..."; "Well-known ..." passes).
    - ``unknown``: contains one of ``unknown_phrases`` as whole words, any case (curly apostrophes count
      as straight ones): the model says it does not know.
    - ``role_marker``: contains one of ``role_markers`` (case-sensitive, anywhere): the response ran on
      into a new dialogue turn.

    ``rules`` selects the enabled rules.
    """

    min_chars: int = 10
    unknown_phrases: tuple[str, ...] = ("i don't know", "i do not know", "i dont know", "not sure", "no idea")
    role_markers: tuple[str, ...] = ("Human:", "User:", "Assistant:")
    sentence_ends: str = ".!?"
    closers: str = "\"')]}\u201d\u2019\u00bb"  # " ' ) ] } and the closing curly quotes and guillemet
    rules: tuple[str, ...] = RULES

    def __post_init__(self) -> None:
        for name in ("unknown_phrases", "role_markers", "rules"):
            if isinstance(getattr(self, name), str):
                raise TypeError(f"{name} is a sequence of strings, not a string")
            object.__setattr__(self, name, tuple(getattr(self, name)))  # lists from a config file
        unknown = [r for r in self.rules if r not in RULES]
        if unknown:
            raise ValueError(f"unknown rule {unknown[0]!r} (expected some of {', '.join(RULES)})")
        if self.min_chars < 1:
            raise ValueError(f"min_chars must be at least 1, got {self.min_chars}")

    def fails(self, rule: str, text: str) -> bool:
        """Whether ``text`` (already stripped) fails ``rule``, enabled or not."""
        if rule == "too_short":
            return n_chars(text) < self.min_chars
        if rule == "unfinished":
            end = text.rstrip(self.closers)
            return not end or end[-1] not in self.sentence_ends
        if rule == "starts_with_well":
            return re.match(r"well(?![\w-])", text, re.IGNORECASE) is not None
        if rule == "unknown":
            lowered = text.lower().replace("\u2019", "'")
            return any(re.search(rf"(?<!\w){re.escape(p.lower())}(?!\w)", lowered) for p in self.unknown_phrases)
        if rule == "role_marker":
            return any(marker in text for marker in self.role_markers)
        raise ValueError(f"unknown rule {rule!r} (expected one of {', '.join(RULES)})")

    def check(self, response: str) -> str | None:
        """Name of the first enabled rule that ``response`` fails, or ``None`` if it is a valid response."""
        text = response.strip()
        if not text:
            return "too_short"
        return next((rule for rule in RULES if rule in self.rules and self.fails(rule, text)), None)


def length_threshold(valid_lengths: Sequence[int]) -> float:
    """``mean(L) - std(L) / 2`` over the character lengths ``L`` of one query's valid responses.

    ``std`` is the population standard deviation (divides by ``len(L)``), so a single valid response gives
    ``std = 0`` and the threshold is its own length (such a query has no pair of valid responses anyway).
    Example: ``L = [10, 20, 30, 40]`` -> mean 25, std sqrt(125) = 11.18, threshold 19.41.
    """
    if not valid_lengths:
        raise ValueError("length_threshold needs at least one valid response")
    mean = sum(valid_lengths) / len(valid_lengths)
    std = math.sqrt(sum((x - mean) ** 2 for x in valid_lengths) / len(valid_lengths))
    return mean - std / 2


def passes_length_rule(chosen_chars: int, rejected_chars: int, threshold: float) -> bool:
    """Keep a pair whose chosen response is longer than the rejected one, or at least ``threshold`` long.

    Long responses tend to be the better ones; a chosen response that is both shorter than its rejected
    response and short for its query more likely contradicts the rubric's prior than confirms it.
    """
    return chosen_chars > rejected_chars or chosen_chars >= threshold


# ------------------------------------------------------------------------------------------------ statistics
@dataclass
class Stats:
    """Counts of one or more queries; add two with ``+`` (or ``sum(stats, Stats())``).

    Pairs: ``formed = removed_heuristic + removed_rm + kept`` and
    ``removed_heuristic = removed_bad_response + removed_identical + removed_length_rule``.
    ``dropped_responses`` counts *responses* (not pairs) by the rule they failed first.
    """

    queries: int = 0
    responses: int = 0
    dropped_responses: dict[str, int] = field(default_factory=dict)  # rule name -> responses that failed it
    formed: int = 0
    removed_heuristic: int = 0  # pairs with a dropped response, of identical responses, or failing the length rule
    removed_bad_response: int = 0
    removed_identical: int = 0
    removed_length_rule: int = 0
    removed_rm: int = 0
    kept: int = 0
    kept_chosen_chars: int = 0  # sum over kept pairs, so that merged means stay exact
    kept_rejected_chars: int = 0

    def __add__(self, other: "Stats") -> "Stats":
        if not isinstance(other, Stats):
            return NotImplemented
        rules = {**self.dropped_responses, **other.dropped_responses}
        dropped = {r: self.dropped_responses.get(r, 0) + other.dropped_responses.get(r, 0) for r in rules}
        counts = {f.name: getattr(self, f.name) + getattr(other, f.name)
                  for f in fields(self) if f.name != "dropped_responses"}
        return Stats(dropped_responses=dropped, **counts)

    def __radd__(self, other: object) -> "Stats":
        return self if other == 0 else NotImplemented  # lets the builtin sum() start from 0

    @property
    def mean_chosen_chars(self) -> float | None:
        return self.kept_chosen_chars / self.kept if self.kept else None

    @property
    def mean_rejected_chars(self) -> float | None:
        return self.kept_rejected_chars / self.kept if self.kept else None

    def to_dict(self) -> dict[str, int | float | None]:
        """Flat dictionary for logs and JSON: every count, ``dropped/<rule>`` for each rule, and the means."""
        out: dict[str, int | float | None] = {
            f.name: getattr(self, f.name) for f in fields(self) if f.name != "dropped_responses"}
        for rule in [*RULES, *sorted(set(self.dropped_responses) - set(RULES))]:
            out[f"dropped/{rule}"] = self.dropped_responses.get(rule, 0)
        out["mean_chosen_chars"] = self.mean_chosen_chars
        out["mean_rejected_chars"] = self.mean_rejected_chars
        return out


# ------------------------------------------------------------------------------------------------ pipeline
def build_comparisons(query: str, responses: Mapping[str, str], rubric: Rubric, heuristic: HeuristicFilter,
                      rm_agrees: RmAgrees | None = None, length_rule: bool = True) -> tuple[list[Comparison], Stats]:
    """Validated comparisons of one query's responses (``config -> response``) and their statistics.

    1. check every response with ``heuristic``; 2. form pairs with ``rubric`` (:func:`form_pairs`);
    3. remove pairs with a dropped response, and pairs whose two responses are the same text (ignoring
    surrounding whitespace: they state no preference); 4. unless ``length_rule`` is False, remove pairs failing the
    length rule, with the threshold from the query's valid responses; 5. if ``rm_agrees`` is given, keep a pair only
    if ``rm_agrees(query, chosen, rejected)`` (called only for pairs that survived 3 and 4).
    Comparisons hold the query and responses verbatim (not stripped); each one's meta is
    ``{"chosen_config": ..., "rejected_config": ...}``.
    """
    if not query.strip():
        raise ValueError("the query is empty")
    # 1. heuristic filter on responses
    failures = {config: heuristic.check(text) for config, text in responses.items()}
    stats = Stats(queries=1, responses=len(responses))
    for rule in failures.values():
        if rule is not None:
            stats.dropped_responses[rule] = stats.dropped_responses.get(rule, 0) + 1
    valid_lengths = [n_chars(responses[c]) for c, rule in failures.items() if rule is None]
    threshold = length_threshold(valid_lengths) if valid_lengths else math.inf

    # 2. pairs from the rubric
    pairs = form_pairs(responses, rubric)
    stats.formed = len(pairs)
    comparisons = []
    for chosen_config, rejected_config in pairs:
        chosen, rejected = responses[chosen_config], responses[rejected_config]
        # 3. a pair with a dropped response
        if failures[chosen_config] is not None or failures[rejected_config] is not None:
            stats.removed_bad_response += 1
        elif chosen.strip() == rejected.strip():
            stats.removed_identical += 1
        # 4. the length rule
        elif length_rule and not passes_length_rule(n_chars(chosen), n_chars(rejected), threshold):
            stats.removed_length_rule += 1
        # 5. the as-is reward model
        elif rm_agrees is not None and not rm_agrees(query, chosen, rejected):
            stats.removed_rm += 1
        else:
            comparisons.append(Comparison(query, chosen, rejected,
                                          {"chosen_config": chosen_config, "rejected_config": rejected_config}))
            stats.kept_chosen_chars += n_chars(chosen)
            stats.kept_rejected_chars += n_chars(rejected)
    stats.removed_heuristic = stats.removed_bad_response + stats.removed_identical + stats.removed_length_rule
    stats.kept = len(comparisons)
    return comparisons, stats


def recorded_rubric(responses: Path) -> Rubric:
    """The rubric that the responses job wrote ``responses`` with (its ``<stem>.stats.json``)."""
    stats = responses.with_name(responses.stem + ".stats.json")
    rubric = json.loads(stats.read_text()).get("rubric") if stats.is_file() else None
    if not rubric:
        raise ValueError(f"ComparisonJob: no rubric given and none recorded in {stats} (set model.init_args.rubric, "
                         "or write the responses with PromptedResponsesJob(rubric=...))")
    return Rubric.parse(rubric)
