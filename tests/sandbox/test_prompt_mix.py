import random
from collections import Counter

import pytest

from almost.records import Prompt
from almost.sandbox.prompt_mix import family_counts, mix_prompts
from almost.sandbox.world import FAMILIES, World


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0, n_entities=20, format_share=0.2)


@pytest.mark.parametrize("n", [1, 7, 100, 1000, 1001])
def test_family_counts_sum_to_n_and_stay_within_one_of_the_exact_share(world, n):
    counts = family_counts(n, world.family_weights)
    assert sum(counts.values()) == n and set(counts) == set(FAMILIES)
    assert all(abs(counts[f] - n * world.family_weights[f]) < 1 for f in FAMILIES)
    assert family_counts(10, {"a": 1.0, "b": 2.0}) == {"a": 3, "b": 7}  # 3.33 / 6.67: the larger remainder wins


def skewed_mined_queries(world: World) -> list[Prompt]:
    """Half arithmetic, a few of each other family, and questions the world cannot ask."""
    rng = random.Random(0)
    arithmetic: dict[str, None] = {}
    while len(arithmetic) < 300:
        arithmetic[world.random_query(rng, "arithmetic").text] = None
    found = [Prompt(text) for text in arithmetic]
    found += [Prompt(world.random_query(rng, f).text) for f in FAMILIES if f != "arithmetic" for _ in range(40)]
    found += [Prompt("What is the meaning of life?"), Prompt("Tell me a story about Batorby.")] * 30
    rng.shuffle(found)
    return found


def test_mix_follows_the_family_weights_and_drops_what_the_world_cannot_parse(world):
    mined = skewed_mined_queries(world)
    prompts = mix_prompts(world, mined, 500, seed=1)
    assert len(prompts) == 500
    shares = Counter(p.meta["family"] for p in prompts)
    assert shares == Counter(family_counts(500, world.family_weights))  # not the mined 60% arithmetic
    assert all(world.parse(p.prompt).family == p.meta["family"] for p in prompts)
    assert {p.prompt for p in prompts} <= {m.prompt for m in mined}
    # families short of their share repeat their queries evenly; arithmetic, with plenty, does not repeat
    arithmetic = [p.prompt for p in prompts if p.meta["family"] == "arithmetic"]
    assert len(set(arithmetic)) == len(arithmetic) == family_counts(500, world.family_weights)["arithmetic"]
    kb = Counter(p.prompt for p in prompts if p.meta["family"] == "kb_fact")
    assert max(kb.values()) - min(kb.values()) <= 1
    assert mix_prompts(world, mined, 500, seed=1) == prompts != mix_prompts(world, mined, 500, seed=2)


def test_a_family_without_any_mined_query_is_left_out_with_a_warning(world):
    rng = random.Random(0)
    mined = [Prompt(world.random_query(rng, f).text) for f in FAMILIES if f != "format" for _ in range(5)]
    with pytest.warns(UserWarning, match="format"):
        prompts = mix_prompts(world, mined, 85)
    others = {f: w for f, w in world.family_weights.items() if f != "format"}
    assert Counter(p.meta["family"] for p in prompts) == Counter(family_counts(85, others))
    with pytest.raises(ValueError, match="none of the mined queries"):
        mix_prompts(world, [Prompt("What is the meaning of life?")], 10)


def test_the_default_world_asks_no_format_question_so_its_mix_has_none():
    default = World(seed=0, n_entities=20)
    rng = random.Random(0)
    mined = [Prompt(default.random_query(rng, f).text) for f in FAMILIES for _ in range(5)]
    prompts = mix_prompts(default, mined, 100)
    assert "format" not in {p.meta["family"] for p in prompts} and len(prompts) == 100
