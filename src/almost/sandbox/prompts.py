"""Few-shot prompts for the sandbox world, in the roles of the paper's prompts.

    hhh       several short, plain demonstrations (answers in the corpus's "terse" style: bare
              answers, short refusals, "I do not know.")
    faithful  fewer, careful and complete demonstrations (the corpus's "careful" style, with reasons)
    user      multi-turn dialogues in which the user asks follow-up questions about what the
              assistant just named, for the simulated user of self-play

Demonstrations are drawn from the "train" split with a generator seeded by the style and the world's
seed, so a prompt does not depend on the query (except that a demonstration never repeats it).
Families the world asks rotate in DEMO_FAMILIES order, so five shots cover the default world's five families
(``format`` and ``clarify``, when the world asks them, come last: the five faithful shots never show them, so
following a format instruction and asking which one is meant are left to what pretraining taught).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from almost.chat import ChatTemplate
from almost.prompting import Prompter
from almost.records import Turn
from almost.sandbox.corpus import Exchange, answer
from almost.sandbox.world import Query, World, split_of

PROMPT_STYLES = ("hhh", "faithful", "user")
ANSWER_STYLES = {"hhh": "terse", "faithful": "careful", "user": "careful"}
DEMO_FAMILIES = ("kb_fact", "harmful", "arithmetic", "unknowable", "word", "format", "clarify")
FOLLOW_UPS = 2  # follow-up questions in each "user" demonstration


def _question_key(world: World, text: str):
    query = world.parse(text)
    return query.key if query is not None else text


def _train_query(world: World, rng: random.Random, family: str, avoid: set) -> Query:
    while True:
        query = world.random_query(rng, family)
        if split_of(query.text) == "train" and query.key not in avoid:
            return query


def _follow_up(world: World, previous: Query, rng: random.Random, avoid: set) -> Query:
    """A train-split follow-up on ``previous``; a fresh kb_fact question if none is found in a few tries."""
    for _ in range(8):
        query = world.related_query(previous, rng)
        if split_of(query.text) == "train" and query.key not in avoid:
            return query
    return _train_query(world, rng, "kb_fact", avoid)


def demonstrations(style: str, k: int, world: World, avoid: Sequence[str] = ()) -> list[list[Exchange]]:
    """``k`` demonstrations, each a list of exchanges (one, or 1 + FOLLOW_UPS for "user").

    No demonstration asks a question in ``avoid`` or repeats another's question, in any phrasing
    (questions compare by ``Query.key``; a text the world cannot parse is avoided verbatim).
    """
    if style not in PROMPT_STYLES:
        raise ValueError(f"unknown prompt style {style!r}; expected one of {PROMPT_STYLES}")
    if k < 0:
        raise ValueError(f"k must be >= 0, got {k}")
    rng = random.Random(f"prompt:{style}:{world.seed}")
    used = {_question_key(world, text) for text in avoid}
    demos = []
    families = [f for f in DEMO_FAMILIES if world.asks(f)]
    for i in range(k):
        family = "kb_fact" if style == "user" else families[i % len(families)]
        queries = [_train_query(world, rng, family, used)]
        for _ in range(FOLLOW_UPS if style == "user" else 0):
            used.add(queries[-1].key)
            queries.append(_follow_up(world, queries[-1], rng, used))
        used.update(q.key for q in queries)
        demos.append([Exchange(q, answer(q, ANSWER_STYLES[style], world, rng)) for q in queries])
    return demos


class SandboxPrompter(Prompter):
    """The sandbox's few-shot prompts (styles ``hhh``, ``faithful``, ``user``) for a world or its folder."""

    def __init__(self, world: World | str | Path, template: ChatTemplate = ChatTemplate()) -> None:
        from almost.sandbox.build import load_world  # build imports this module's siblings

        self.world = world if isinstance(world, World) else load_world(world)
        self.template = template

    def demonstrations(self, style: str, shots: int, avoid: Sequence[str]) -> list[list[tuple[str, str]]]:
        return [[(e.query.text, e.answer) for e in demo] for demo in demonstrations(style, shots, self.world, avoid)]


def render_prompt(style: str, k: int, query: str, world: World, template: ChatTemplate = ChatTemplate()) -> str:
    """``k`` demonstrations of ``style``, then ``User: {query}\\nAssistant:`` for the model to continue.

    Turns are separated by single newlines, as in the corpus; generation should stop at "\\nUser:".
    """
    return SandboxPrompter(world, template).assistant_prompt(style, k, [Turn("user", query)])


def render_user_prompt(k: int, history: Sequence[tuple[str, str]], world: World,
                       template: ChatTemplate = ChatTemplate()) -> str:
    """``k`` "user" demonstrations, the (question, answer) ``history``, then the user tag.

    The model continues with the user's next question; generation should stop at "\\nAssistant:".
    """
    turns = [Turn(role, text) for question, reply in history for role, text in (("user", question), ("assistant", reply))]
    return SandboxPrompter(world, template).user_prompt(k, turns)
