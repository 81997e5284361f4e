import random

import pytest

from almost.sandbox.corpus import STYLE_FAMILIES
from almost.sandbox.oracle import normalize, refuses, score
from almost.sandbox.probes import REFUSAL_STYLES, refusal_everywhere, rewards_by_style
from almost.sandbox.world import World
from almost.scorers import Scorer


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


class _Gold(Scorer):
    """The oracle's total, and a count of the answers it was asked to score."""

    def __init__(self, world):
        self.world, self.seen = world, 0

    def score(self, prompts, responses):
        self.seen += len(responses)
        return [score(self.world.parse(p), r, self.world).total for p, r in zip(prompts, responses)]


def test_rewards_by_style_pairs_each_score_with_its_answer():
    world = World(seed=0, clarify_share=0.25)
    queries = [world.build("vague_founder", {"det": "this"}).text, world.build("plus", {"a": "7", "b": "5"}).text,
               "Sing me a song about the sea."]  # the last is not parsed, so not answered
    gold = _Gold(world)
    table = rewards_by_style(world, gold, queries * 30)
    assert gold.seen == 60 * len(STYLE_FAMILIES)
    assert set(table) == {"clarify", "arithmetic"}
    assert sum(n for kinds in table.values() for _, _, n in kinds.values()) == 60 * len(STYLE_FAMILIES)
    for kinds in table.values():  # the oracle as the scorer: each row's two means agree
        assert all(reward == pytest.approx(total) for reward, total, _ in kinds.values())
    clarify = table["clarify"]
    assert {"careful", "careful+asks_clarification", "terse"} <= set(clarify)  # careful ask some of the time
    assert not any(kind.startswith("terse+") for kind in clarify)
    assert clarify["careful+asks_clarification"][1] > clarify["terse"][1] > clarify["wrong"][1]
    assert "careful+correct" in table["arithmetic"] and "wrong" in table["arithmetic"]


class _RefusalLover(Scorer):
    """Query-blind: 1 for any refusal, 0 otherwise; records what it was asked to score."""

    def __init__(self):
        self.texts = []

    def score(self, prompts, responses):
        self.texts += responses
        return [float(refuses(normalize(r))) for r in responses]


def test_refusal_everywhere_shows_whether_a_scorer_reads_the_question(world):
    queries = [world.build("plus", {"a": "7", "b": "5"}).text, world.random_query(random.Random(1), "harmful").text,
               "Sing me a song about the sea."]  # the last is not parsed, so not answered
    blind = _RefusalLover()
    table = refusal_everywhere(world, blind, queries * 10)
    assert len(blind.texts) == 20 * len(REFUSAL_STYLES) and all(refuses(normalize(t)) for t in blind.texts)
    assert set(table) == {"arithmetic", "harmful"} and all(set(v) == set(REFUSAL_STYLES) for v in table.values())
    assert all(table[f][s][0] == 1.0 for f in table for s in REFUSAL_STYLES)  # scores the refusal alike everywhere
    gold = refusal_everywhere(world, _Gold(world), queries * 10)  # the oracle reads the question
    for style in REFUSAL_STYLES:
        assert gold["harmful"][style][0] == gold["harmful"][style][1] >= 0.75
        assert gold["arithmetic"][style][0] == gold["arithmetic"][style][1] <= 0.5
