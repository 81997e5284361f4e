import random
from statistics import mean

import pytest

from almost.sandbox.corpus import (CLARIFY_RATE, MISCONCEPTION_STYLES, STYLE_FAMILIES, STYLES, answer, corpus_stats,
                                   generate_corpus, generate_documents)
from almost.sandbox.oracle import WEIGHTS, rubric, score
from almost.sandbox.world import TEMPLATES, World, split_of

HELPFUL = ("kb_fact", "arithmetic", "word", "format")


@pytest.fixture(scope="module")
def world() -> World:
    return World(seed=0, format_share=0.2, clarify_share=0.15)  # with both opt-in families: every template is asked


@pytest.fixture(scope="module")
def documents(world):
    return generate_documents(world, 3000, seed=0)


def test_same_seed_same_corpus(world):
    assert generate_corpus(world, 200, seed=0) == generate_corpus(world, 200, seed=0)
    assert generate_corpus(world, 200, seed=0) != generate_corpus(world, 200, seed=1)
    assert generate_corpus(world, 200, seed=0) != generate_corpus(World(seed=1), 200, seed=0)


def test_stats_count_every_style(documents):
    stats = corpus_stats(documents)
    assert set(stats) == set(STYLES) and sum(stats.values()) == 3000
    assert all(count > 0 for count in stats.values())


def test_careful_documents_are_a_minority(documents):
    stats = corpus_stats(documents)
    dialogues = sum(stats[s] for s in STYLE_FAMILIES)
    assert 0.1 < stats["careful"] / dialogues < 0.25


def test_dialogue_layout_matches_the_chat_tags(documents):
    for document in documents:
        lines = document.text.split("\n")
        if document.style not in STYLE_FAMILIES:
            assert not document.exchanges and "User:" not in document.text
            continue
        assert len(lines) == 2 * len(document.exchanges) >= 4
        for i, exchange in enumerate(document.exchanges):
            assert lines[2 * i] == f"User: {exchange.query.text}"
            assert lines[2 * i + 1] == f"Assistant: {exchange.answer}"


def test_dialogue_questions_come_from_train_or_are_misconceptions(world, documents):
    beliefs = {m.query.text for m in world.misconceptions}
    for document in documents:
        for exchange in document.exchanges:
            assert split_of(exchange.query.text) == "train" or exchange.query.text in beliefs


def _components(world, document):
    return [(e.query, score(e.query, e.answer, world).components) for e in document.exchanges]


def test_each_document_keeps_one_style(world, documents):
    """Every exchange of a document shows the behaviour that names its style."""
    checks = {
        "careful": lambda q, c: all(c[name] == 1.0 for name in WEIGHTS[rubric(q.family)] if name != "asks_clarification"),
        "terse": lambda q, c: q.family not in HELPFUL or (c["correct"] == 1.0 and c["follows_format"] == 1.0
                                                          and (q.family == "format" or c["complete_polite"] == 0.5)),
        "wrong": lambda q, c: q.family not in HELPFUL or c["correct"] == 0.0 == c["follows_format"] * (q.family == "format"),
        "evasive": lambda q, c: q.family not in HELPFUL or c["correct"] == 0.0,
        "rude": lambda q, c: c["complete_polite"] == 0.0 == c["follows_format"] * (q.family == "format"),
        "compliant": lambda q, c: (c["follows_format"] == 0.0 if q.family == "format"
                                   else q.family != "harmful" or c["refuses_harm"] == 0.0),
        "fabricating": lambda q, c: q.family != "unknowable" or c["no_fabrication"] == 0.0,
    }
    for document in documents:
        for query, parts in _components(world, document):
            assert checks[document.style](query, parts), (document.style, query.text, parts)


def test_misconceptions_outnumber_the_truth_in_dialogues(world, documents):
    false_claims, true_claims = 0, 0
    for m in world.misconceptions:
        for document in documents:
            for e in document.exchanges:
                if e.query.key == m.query.key:  # in any phrasing
                    said = score(e.query, e.answer, world).components
                    false_claims += said["correct"] == 0.0 and m.false_answer.lower() in e.answer.lower()
                    true_claims += said["correct"] == 1.0
                    if document.style not in MISCONCEPTION_STYLES:  # only low-quality styles repeat beliefs
                        assert m.false_answer.lower() not in e.answer.lower()
    assert false_claims > 2 * true_claims > 0


def test_prose_states_only_true_facts(world, documents):
    false_statements = [world.statement(m.query.kind, dict(m.query.slots)[k], m.false_answer)
                        for m in world.misconceptions for k in dict(m.query.slots)]
    prose = [d.text for d in documents if d.style == "prose"]
    assert prose and not any(s in text for s in false_statements for text in prose)


def test_oracle_ranks_careful_above_terse_above_wrong_and_rude(world, documents):
    by_style = {s: [score(e.query, e.answer, world).total for d in documents if d.style == s
                    for e in d.exchanges] for s in ("careful", "terse", "wrong", "rude")}
    means = {s: mean(v) for s, v in by_style.items()}
    assert means["careful"] > means["terse"] > max(means["wrong"], means["rude"])


def test_style_weights_are_configurable(world):
    only_careful = generate_documents(world, 50, style_weights={"careful": 1.0})
    assert corpus_stats(only_careful)["careful"] == 50
    with pytest.raises(ValueError):
        generate_documents(world, 5, style_weights={"poetry": 1.0})


def test_dialogues_ask_in_every_phrasing(world, documents):
    used = {(e.query.kind, world.phrasings(e.query).index(e.query)) for d in documents for e in d.exchanges}
    assert used == {(t.kind, i) for t in TEMPLATES for i in range(len(t.phrasings))}


def test_misconceptions_are_repeated_in_several_phrasings(world, documents):
    beliefs = {m.query.key: m for m in world.misconceptions}
    phrased = {e.query.text for d in documents if d.style in MISCONCEPTION_STYLES for e in d.exchanges
               if e.query.key in beliefs and beliefs[e.query.key].false_answer.lower() in e.answer.lower()}
    canonical = {m.query.text for m in world.misconceptions}
    assert len(phrased - canonical) > len(world.misconceptions)


def test_only_careful_writers_ask_which_one_and_only_some_of_the_time(world, documents):
    """Clarify questions: careful answers ask at CLARIFY_RATE and otherwise say it depends (as terse ones always do),
    the wrong, rude, compliant and fabricating styles guess an answer, evasive ones guess nothing."""
    asked: dict[str, list[float]] = {style: [] for style in STYLE_FAMILIES}
    for document in documents:
        for query, parts in _components(world, document):
            if query.family == "clarify":
                asked[document.style].append(parts["asks_clarification"])
                guessers = ("wrong", "rude", "compliant", "fabricating")
                assert parts["no_fabrication"] == (0.0 if document.style in guessers else 1.0), document.style
    assert len(asked["careful"]) > 150
    n = len(asked["careful"])
    assert abs(mean(asked["careful"]) - CLARIFY_RATE) < 3 * (CLARIFY_RATE * (1 - CLARIFY_RATE) / n) ** 0.5
    assert all(sum(values) == 0 for style, values in asked.items() if style != "careful") and asked["terse"]


def test_careful_writers_who_do_not_ask_say_what_terse_ones_say(world):
    """The careful answer that does not ask is the terse answer word for word, so that in a pair ranked by the
    rule of thumb (careful over terse) the two differ by the asking alone, not by a careful opener."""
    rng = random.Random(0)
    for query in (world.random_query(rng, "clarify") for _ in range(40)):
        plain = f"It depends on which {world.vague_kind(query)} you mean."
        assert answer(query, "terse", world, rng) == plain
        careful = {answer(query, "careful", world, rng) for _ in range(12)}
        assert plain in careful and all(text == plain or "?" in text for text in careful), careful
