"""Probes of a scorer with the corpus's own answers to held-out queries (evaluation only; the oracle judges).

``rewards_by_style``: every corpus style's answer to each query, split by whether it shows the family's key
component: does the scorer rank the aligned behaviour first, or a feature of the better writers' text?
``refusal_everywhere``: a refusal of some harmful request as the answer to every query: does the scorer read the
question, or reward refusing whatever was asked? The report and ``almost.sandbox.diagnose`` print both.
"""

from __future__ import annotations

import collections
import random
import statistics
from typing import TYPE_CHECKING, Iterator, Sequence

from almost.sandbox.corpus import STYLE_FAMILIES, answer
from almost.sandbox.oracle import score
from almost.sandbox.world import Query, World

if TYPE_CHECKING:
    from almost.scorers import Scorer

KEY_COMPONENT = {"harmful": "refuses_harm", "unknowable": "admits_uncertainty", "format": "follows_format",
                 "clarify": "asks_clarification"}
# else "correct"


def _parsed(world: World, queries: Sequence[str]) -> Iterator[tuple[str, Query]]:
    """``(prompt, query)`` for each prompt the world can parse, in order."""
    for prompt in queries:
        query = world.parse(prompt)
        if query is not None:
            yield prompt, query


def _table(scorer: Scorer, answers: list[tuple[str, str, str, str, float]]
           ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``family -> kind -> (mean score of scorer, mean oracle score, answers)`` of ``answers``, each
    ``(prompt, text, family, kind, oracle score)``; all scored in one call."""
    rewards = scorer.score([a[0] for a in answers], [a[1] for a in answers]) if answers else []
    rows: dict[tuple[str, str], list[tuple[float, float]]] = collections.defaultdict(list)
    for (_, _, family, kind, total), reward in zip(answers, rewards):
        rows[family, kind].append((reward, total))
    table: dict[str, dict[str, tuple[float, float, int]]] = collections.defaultdict(dict)
    for (family, kind), values in sorted(rows.items()):
        table[family][kind] = (statistics.fmean(r for r, _ in values), statistics.fmean(g for _, g in values),
                               len(values))
    return dict(table)


def rewards_by_style(world: World, scorer: Scorer, queries: Sequence[str], seed: int = 0
                     ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``family -> kind -> (mean score of scorer, mean oracle score, answers)`` of the corpus styles' answers.

    Every dialogue style answers every query the world can parse (``random.Random(seed)`` draws their
    choices); an answer's kind is its style, with ``+<key component>`` when it shows the family's key component
    (a careful answer to a clarify question that asks is ``careful+asks_clarification``).
    """
    rng = random.Random(seed)
    answers = []
    for prompt, query in _parsed(world, queries):
        component = KEY_COMPONENT.get(query.family, "correct")
        for style in STYLE_FAMILIES:
            text = answer(query, style, world, rng)
            judged = score(query, text, world)
            kind = style + (f"+{component}" if judged.components[component] == 1.0 else "")
            answers.append((prompt, text, query.family, kind, judged.total))
    return _table(scorer, answers)


REFUSAL_STYLES = ("careful", "terse")


def refusal_everywhere(world: World, scorer: Scorer, queries: Sequence[str], seed: int = 0
                       ) -> dict[str, dict[str, tuple[float, float, int]]]:
    """``family -> refusal style -> (mean score of scorer, mean oracle score, answers)`` of a refusal of harm
    as the answer.

    Each query the world can parse gets, in each of ``REFUSAL_STYLES``, the corpus's answer to a harmful request
    that ``random.Random(seed)`` draws, so the text refuses something the query did not ask for.
    """
    rng = random.Random(seed)
    answers = []
    for prompt, query in _parsed(world, queries):
        for style in REFUSAL_STYLES:
            text = answer(world.random_query(rng, "harmful"), style, world, rng)
            answers.append((prompt, text, query.family, style, score(query, text, world).total))
    return _table(scorer, answers)
