"""Few-shot prompts for the sandbox world, in the roles of the paper's prompts.

    hhh       several short, plain demonstrations (answers in the corpus's "terse" style: bare
              answers, short refusals, "I do not know.")
    faithful  fewer, careful and complete demonstrations (the corpus's "careful" style, with reasons)
    user      multi-turn dialogues in which the user asks follow-up questions about what the
              assistant just named, for the simulated user of self-play

Demonstrations are drawn from the "train" split with a generator seeded by the style and the world's
seed, so a prompt does not depend on the query (except that a demonstration never repeats it).
Families rotate in DEMO_FAMILIES order, so five shots cover all five families.
"""

from __future__ import annotations

import random
from typing import Sequence

from almost.chat import ChatTemplate
from almost.sandbox.corpus import Exchange, answer, render_exchange
from almost.sandbox.world import Query, World, split_of

PROMPT_STYLES = ("hhh", "faithful", "user")
ANSWER_STYLES = {"hhh": "terse", "faithful": "careful", "user": "careful"}
DEFAULT_SHOTS = {"hhh": 8, "faithful": 3, "user": 2}
DEMO_FAMILIES = ("kb_fact", "harmful", "arithmetic", "unknowable", "word")
FOLLOW_UPS = 2  # follow-up questions in each "user" demonstration


def _train_query(world: World, rng: random.Random, family: str, avoid: set[str]) -> Query:
    while True:
        query = world.random_query(rng, family)
        if split_of(query.text) == "train" and query.text not in avoid:
            return query


def _follow_up(world: World, previous: Query, rng: random.Random, avoid: set[str]) -> Query:
    """A train-split follow-up on ``previous``; a fresh kb_fact question if none is found in a few tries."""
    for _ in range(8):
        query = world.related_query(previous, rng)
        if split_of(query.text) == "train" and query.text not in avoid:
            return query
    return _train_query(world, rng, "kb_fact", avoid)


def demonstrations(style: str, k: int, world: World, avoid: Sequence[str] = ()) -> list[list[Exchange]]:
    """``k`` demonstrations, each a list of exchanges (one, or 1 + FOLLOW_UPS for "user").

    No demonstration asks a question in ``avoid`` or repeats another's question.
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rng = random.Random(f"prompt:{style}:{world.seed}")
    used = set(avoid)
    demos = []
    for i in range(k):
        family = "kb_fact" if style == "user" else DEMO_FAMILIES[i % len(DEMO_FAMILIES)]
        queries = [_train_query(world, rng, family, used)]
        for _ in range(FOLLOW_UPS if style == "user" else 0):
            used.add(queries[-1].text)
            queries.append(_follow_up(world, queries[-1], rng, used))
        used.update(q.text for q in queries)
        demos.append([Exchange(q, answer(q, ANSWER_STYLES[style], world, rng)) for q in queries])
    return demos


def _render_demos(demos: list[list[Exchange]], template: ChatTemplate) -> list[str]:
    return [render_exchange(e.query.text, e.answer, template) for demo in demos for e in demo]


def render_prompt(style: str, k: int, query: str, world: World, template: ChatTemplate = ChatTemplate()) -> str:
    """``k`` demonstrations of ``style``, then ``User: {query}\\nAssistant:`` for the model to continue.

    Turns are separated by single newlines, as in the corpus; generation should stop at "\\nUser:".
    """
    lines = _render_demos(demonstrations(style, k, world, avoid=[query]), template)
    return "\n".join(lines + [template.user_segment(query)])


def render_user_prompt(k: int, history: Sequence[tuple[str, str]], world: World,
                       template: ChatTemplate = ChatTemplate()) -> str:
    """``k`` "user" demonstrations, the (question, answer) ``history``, then the user tag.

    The model continues with the user's next question; generation should stop at "\\nAssistant:".
    """
    lines = _render_demos(demonstrations("user", k, world, avoid=[q for q, _ in history]), template)
    lines += [render_exchange(question, reply, template) for question, reply in history]
    return "\n".join(lines + [template.user_tag])
