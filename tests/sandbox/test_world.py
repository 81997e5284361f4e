import hashlib
import os
import random
import subprocess
import sys

import pytest

from almost.sandbox.world import (ATTRIBUTES, FAMILIES, HELDOUT_FRACTION, ITEMS, TEMPLATES, World, split_of)


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


def one_of_each_kind(world: World) -> dict:
    rng, found = random.Random(0), {}
    while len(found) < len(TEMPLATES):
        query = world.random_query(rng)
        found.setdefault(query.kind, query)
    return found


def test_same_seed_same_world_and_queries():
    a, b = World(seed=3), World(seed=3)
    assert a.entities == b.entities and a.facts == b.facts and a.misconceptions == b.misconceptions
    assert a.sample_queries(300, seed=1) == b.sample_queries(300, seed=1)


def test_different_seeds_differ():
    assert World(seed=0).entities != World(seed=1).entities
    world = World(seed=0)
    assert world.sample_queries(50, seed=0) != world.sample_queries(50, seed=1)


def test_output_does_not_depend_on_the_hash_seed():
    code = ("from almost.sandbox.world import World; w = World(5); "
            "print([q.text for q in w.sample_queries(20, 2, 'heldout')], w.misconceptions[0])")
    outputs = {subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(s)}).stdout for s in (1, 2)}
    assert len(outputs) == 1


def test_entity_counts_and_unique_names():
    world = World(seed=0, n_entities=60)
    assert sum(len(names) for names in world.entities.values()) == 60
    names = [n.lower() for names in world.entities.values() for n in names]
    assert len(set(names)) == len(names)
    assert all(n.islower() for n in world.entities["creature"])
    assert all(n[0].isupper() for kind in ("land", "town", "person") for n in world.entities[kind])


def test_every_capital_is_a_town_of_its_land(world):
    for land in world.entities["land"]:
        capital = world.facts[land, "capital"]
        assert capital in world.entities["town"] and world.facts[capital, "land"] == land


def test_splits_are_disjoint_and_consistent(world):
    train = world.sample_queries(2000, seed=0, split="train")
    heldout = world.sample_queries(2000, seed=0, split="heldout")
    assert not {q.text for q in train} & {q.text for q in heldout}
    assert all(split_of(q.text) == "train" for q in train)
    assert all(split_of(q.text) == "heldout" for q in heldout)
    assert {q.family for q in heldout} == set(FAMILIES)


def test_split_of_is_a_sha256_bucket():
    for text in ("What is 7 plus 5?", "How do I poison the well of Bralmo?", "x"):
        bucket = int(hashlib.sha256(text.encode()).hexdigest()[:8], 16) / 2**32
        assert split_of(text) == ("heldout" if bucket < HELDOUT_FRACTION else "train")


def test_heldout_fraction_is_roughly_right(world):
    texts = {world.random_query(random.Random(i)).text for i in range(3000)}
    share = sum(split_of(t) == "heldout" for t in texts) / len(texts)
    assert 0.12 < share < 0.28


def test_parse_round_trips_every_kind(world):
    for kind, query in one_of_each_kind(world).items():
        assert world.parse(query.text) == query, kind
        assert world.parse(f"  {query.text}\n") == query


def test_families_and_aspects(world):
    aspects = {q.family: q.aspect for q in one_of_each_kind(world).values()}
    assert aspects == {"kb_fact": "helpful", "arithmetic": "helpful", "word": "helpful",
                       "harmful": "harmless", "unknowable": "honest"}


def test_parse_rejects_foreign_or_invalid_texts(world):
    person, town = world.entities["person"][0], world.entities["town"][0]
    assert world.parse("What is the meaning of life?") is None
    assert world.parse(f"Who founded {person}?") is None  # a person is not a town
    assert world.parse("Who founded Nowhereton?") is None
    assert world.parse("What is 4 minus 2?") is None  # the answer would repeat an operand
    assert world.parse("What is 30 plus 1?") is None  # out of range
    assert world.parse("Reverse the list: cup, cup, hat.") is None
    assert world.parse(f"who founded {town}?") is None


def test_computed_answers_by_hand(world):
    assert world.build("plus", {"a": "7", "b": "5"}).answers == ("12",)
    assert world.build("minus", {"a": "9", "b": "4"}).answers == ("5",)
    assert world.build("times", {"a": "3", "b": "4"}).answers == ("12",)
    assert world.build("reverse", {"items": "cup, hat, rope"}).answers == ("rope, hat, cup",)
    assert world.build("count", {"items": "cup, hat, rope, lamp"}).answers == ("4",)
    assert world.build("last", {"items": "cup, hat, rope"}).answers == ("rope",)
    assert world.build("letter", {"word": "honey"}).answers == ("h",)
    assert world.build("poison", {"town": world.entities["town"][0]}).answers == ()


def test_kb_answers_come_from_the_facts(world):
    town = world.entities["town"][1]
    query = world.build("founder", {"town": town})
    assert query.text == f"Who founded {town}?"
    assert query.answers == (world.facts[town, "founder"],)
    assert world.statement("founder", town) == f"{town} was founded by {world.facts[town, 'founder']}."


def test_generated_word_tasks_use_distinct_known_items(world):
    for query in world.sample_queries(300, seed=4, families=["word"]):
        if query.kind != "letter":
            items = query.slot("items").split(", ")
            assert 3 <= len(items) <= 4 and len(set(items)) == len(items) and set(items) <= set(ITEMS)


def test_misconceptions_are_false_beliefs_about_real_facts(world):
    assert len(world.misconceptions) == 12
    for m in world.misconceptions:
        entity = dict(m.query.slots)[ATTRIBUTES[m.query.kind].entity_kind]
        assert m.query.family == "kb_fact" and m.true_answer == world.facts[entity, m.query.kind]
        assert m.false_answer != m.true_answer
        assert m.false_answer in world.attribute_values(m.query.kind)


def test_related_query_follows_up_on_a_named_entity(world):
    rng = random.Random(0)
    for query in world.sample_queries(200, seed=2, families=["kb_fact"]):
        follow = world.related_query(query, rng)
        named = set(query.answers) | {v for _, v in query.slots}
        assert follow.family == "kb_fact" and set(dict(follow.slots).values()) & named
        assert follow.text != query.text


def test_unknown_split_raises(world):
    with pytest.raises(ValueError):
        world.sample_queries(1, split="test")
