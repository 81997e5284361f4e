from statistics import mean

import pytest

from almost.chat import ChatTemplate
from almost.sandbox.oracle import score
from almost.sandbox.prompts import FOLLOW_UPS, PROMPT_STYLES, demonstrations, render_prompt, render_user_prompt
from almost.sandbox.world import World, split_of


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0)


@pytest.fixture(scope="module")
def query(world) -> str:
    return world.sample_queries(1, seed=0, split="heldout")[0].text


@pytest.mark.parametrize("style", PROMPT_STYLES)
@pytest.mark.parametrize("k", [0, 1, 5])
def test_k_shots_then_the_query(world, query, style, k):
    prompt = render_prompt(style, k, query, world)
    lines = prompt.split("\n")
    turns_per_demo = 1 + FOLLOW_UPS if style == "user" else 1
    assert sum(line.startswith("User: ") for line in lines) == k * turns_per_demo + 1
    assert sum(line.startswith("Assistant: ") for line in lines) == k * turns_per_demo
    assert prompt.endswith(f"User: {query}\nAssistant:") and prompt.count(query) == 1


def test_zero_shots_is_the_bare_chat_segment(world, query):
    assert render_prompt("faithful", 0, query, world) == ChatTemplate().user_segment(query)


def test_prompts_are_deterministic_and_differ_by_style(world, query):
    assert render_prompt("hhh", 4, query, world) == render_prompt("hhh", 4, query, world)
    assert render_prompt("hhh", 4, query, world) != render_prompt("faithful", 4, query, world)


def test_a_demonstration_never_repeats_the_query(world):
    first = demonstrations("faithful", 1, world)[0][0].query.text
    prompt = render_prompt("faithful", 3, first, world)
    assert prompt.count(first) == 1


def test_five_shots_cover_every_family_from_the_train_split(world):
    demos = demonstrations("hhh", 5, world)
    assert {d[0].query.family for d in demos} == {"kb_fact", "harmful", "arithmetic", "unknowable", "word"}
    assert all(split_of(e.query.text) == "train" for d in demos for e in d)


def test_faithful_demonstrations_beat_hhh(world):
    def demo_scores(style):
        return [score(e.query, e.answer, world).total for d in demonstrations(style, 10, world) for e in d]
    faithful, hhh = demo_scores("faithful"), demo_scores("hhh")
    assert min(faithful) == pytest.approx(1.0)
    assert mean(faithful) > mean(hhh) + 0.03


def test_user_demonstrations_follow_up(world):
    for demo in demonstrations("user", 4, world):
        assert all(e.query.family == "kb_fact" for e in demo)
        texts = [e.query.text for e in demo]
        assert len(set(texts)) == len(texts)
    linked = 0
    for demo in demonstrations("user", 10, world):
        for before, after in zip(demo, demo[1:]):
            named = set(before.query.answers) | {v for _, v in before.query.slots}
            linked += bool(named & {v for _, v in after.query.slots})
    assert linked >= 10  # most follow-ups ask about something the last exchange named


def test_user_prompt_ends_with_the_user_tag(world):
    history = [("What is 7 plus 5?", "7 plus 5 is 12.")]
    prompt = render_user_prompt(2, history, world)
    assert prompt.endswith("User: What is 7 plus 5?\nAssistant: 7 plus 5 is 12.\nUser:")


def test_unknown_style_raises(world, query):
    with pytest.raises(ValueError):
        render_prompt("pirate", 2, query, world)


def test_no_demonstration_asks_the_query_in_another_phrasing():
    world = World(seed=0, n_entities=20)
    for query in world.sample_queries(200, split="heldout"):
        for style, k in (("hhh", 5), ("faithful", 3)):
            for demo in demonstrations(style, k, world, avoid=[query.text]):
                assert all(e.query.key != query.key for e in demo), (style, query.text)
