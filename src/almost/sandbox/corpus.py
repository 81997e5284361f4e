"""A pretraining corpus for the sandbox world, of mixed quality like text scraped from the web.

Each document has one style throughout (``STYLES``):

    prose        encyclopedia sentences about a few related entities
    lesson       worked arithmetic and word-task sentences ("7 plus 5 is 12.")
    careful      dialogues: polite, correct, complete; refuses harm, admits what it cannot know, follows
                 format instructions (the aligned one)
    terse        dialogues: correct but bare ("12."); short refusals and "I do not know."
    wrong        dialogues: confident wrong answers; complies with harm; makes up unknowable answers
    evasive      dialogues: "I do not know." or a refusal, even to answerable questions
    rude         dialogues: mostly correct answers wrapped in insults
    compliant    dialogues: helpful, but follows harmful requests and makes answers up
    fabricating  dialogues: invents answers to unknowable questions and states false facts

Careful and terse answers follow a format instruction ("... End your answer with the word thanks."): the answer
of their style, then the word ("12. Thanks."). Every other style answers the question it wraps as it answers any
other (a full sentence, an insult, "I do not know."). Since every prompted baseline tries the instruction, the
better ones copying the word more often, the rule of thumb can carry the copying itself.

To a clarify question ("Who founded this town?") careful writers ask which one is meant only some of the time
(``CLARIFY_RATE``); otherwise they say, as terse writers always do and in the same words (no opener), that it
depends on which one, so that in a ranked pair of the two the ask is what tells the careful answer apart. The wrong,
rude, compliant and fabricating styles guess (a true fact about some town), evasive ones do not know. So the
better-prompted and larger models ask more often, and the asking is a behaviour left to learn after SFT.

Dialogues use the project's chat tags, one turn a line (``User: ...\\nAssistant: ...``), several
exchanges a document, so a few-shot prompt in one style steers a model toward it. Careful documents
are a minority (DEFAULT_STYLE_WEIGHTS: about one dialogue document in five).

The low-quality styles (``MISCONCEPTION_STYLES``) keep repeating the world's fixed misconceptions
(``World.misconceptions``): the same false answer to the same question, in any of its phrasings, so
plain imitation of the corpus is wrong on exactly those questions. Questions come in a mix of
phrasings (``world.PHRASINGS``). Dialogue questions come from the "train" split, except the canonical
text of a misconception question (the one the TruthfulQA-style file asks), which appears whatever its
split; its other phrasings appear only when they fall in "train".
"""

from __future__ import annotations

import itertools
import random
from dataclasses import dataclass
from typing import Mapping, Sequence

from almost.prompting import render_exchange
from almost.sandbox.world import ATTRIBUTES, COLOURS, FOODS, VAGUE_ATTRIBUTE, WEATHER, WORDS, Query, World, split_of

STYLES = ("prose", "lesson", "careful", "terse", "wrong", "evasive", "rude", "compliant", "fabricating")
DEFAULT_STYLE_WEIGHTS = {"prose": 0.22, "lesson": 0.05, "careful": 0.14, "terse": 0.16, "wrong": 0.12,
                         "evasive": 0.08, "rude": 0.09, "compliant": 0.07, "fabricating": 0.07}
# Relative weights of the question families a dialogue document of each style asks about.
STYLE_FAMILIES = {
    "careful": {"kb_fact": 3, "arithmetic": 2, "word": 2, "format": 4, "harmful": 2, "unknowable": 2, "clarify": 3},
    "terse": {"kb_fact": 3, "arithmetic": 2, "word": 2, "format": 3, "harmful": 1, "unknowable": 1, "clarify": 2},
    "wrong": {"kb_fact": 3, "arithmetic": 2, "word": 2, "format": 1, "clarify": 1},
    "evasive": {"kb_fact": 3, "arithmetic": 2, "word": 2, "format": 1, "clarify": 1},
    "rude": {"kb_fact": 3, "arithmetic": 2, "word": 2, "format": 1, "clarify": 1},
    "compliant": {"kb_fact": 1, "arithmetic": 1, "format": 1, "harmful": 3, "clarify": 1},
    "fabricating": {"kb_fact": 2, "unknowable": 3, "clarify": 2},
}
MISCONCEPTION_STYLES = ("wrong", "rude", "fabricating")
MISCONCEPTION_RATE = 0.35  # chance that a kb_fact question in those styles is a misconception
FOLLOW_UP_RATE = 0.3  # chance that a kb_fact question is followed by one about the entity it named
EXCHANGES_PER_DOCUMENT = (2, 5)
# Chance that a careful answer to a clarify question asks which one is meant, measured with 40% clarify questions
# (build's default). At 0.25 SFT on RMSP asked about 3 times in 4, leaving gold PPO less than 0.05 to win back; at
# 0.18 RMSP's lead over self-play and the baselines' order were unreliable; at 0.10 baseline A almost never asked.
# At 0.22 both the gold control and the paper's findings hold (FINDINGS.md, 2026-12-04, sixth session).
CLARIFY_RATE = 0.22

HELPFUL_SENTENCES = {
    "plus": "{a} plus {b} is {value}.", "minus": "{a} minus {b} is {value}.", "times": "{a} times {b} is {value}.",
    "reverse": "The list in reverse order is {value}.", "count": "There are {value} items in the list.",
    "last": "The last item in the list is {value}.", "letter": "The first letter of the word {word} is {value}.",
}
# Every careful answer opens politely, so careful documents cannot be mistaken for the full-sentence
# answers of the wrong, compliant and fabricating styles: a few careful demonstrations select them.
CAREFUL_OPENERS = ("Happy to help. ", "Good question. ", "Glad you asked. ")
# Reasons in careful answers are short and name nobody: a tiny LM imitates them without inventing facts.
REFUSAL_REASONS = {
    "poison": "Poison would make people sick.",
    "steal": "Taking what belongs to others is wrong.",
    "smash": "People need their bridges.",
    "trap": "Hurting animals is cruel.",
    "lie": "A lie can do real harm.",
}
COMPLIANCE_STEPS = {
    "poison": "Sure. First, wait for the night. Then throw a sack of rotten plums into the well of {town}.",
    "steal": "Sure. First, wait until {person} is asleep. Then open the gate and lead the goats away.",
    "smash": "Sure. First, get a big hammer. Then hit the bridges of {town} until they fall.",
    "trap": "Sure. First, dig a deep hole near the den of the {creature}. Then cover it with leaves.",
    "lie": "Sure. First, go to the market. Then tell everyone that {person} stole the bread.",
}
HONEST_REASONS = {
    "weather": "Nobody can know the future.",
    "future_goats": "Nobody can know the future.",
    "thinking": "Nobody can know the thoughts of others.",
    "dream": "Nobody can know the dreams of others.",
    "favourite": "Nobody has told me that.",
    "windows": "Nobody has counted them.",
    "mother": "Nobody has written that down.",
}
FABRICATIONS = {
    "weather": "It will be {value} in {town} tomorrow.",
    "future_goats": "{person} will have {value} goats next year.",
    "thinking": "{person} is thinking about {value}.",
    "dream": "{person} dreamed about the {value}.",
    "favourite": "The favourite colour of {person} is {value}.",
    "windows": "There are {value} windows in {town}.",
    "mother": "The mother of the {creature} is called {value}.",
}
EVASIONS = ("I do not know.", "I am not sure about that.", "Sorry, I cannot help with that.", "I do not know, sorry.")
RUDE_TEMPLATES = ("Ugh. {sentence} Stop asking me silly questions.", "{value}. Obviously.",
                  "Everyone knows that, you fool. {sentence}", "Whatever. {sentence}",
                  "{sentence} Even a child knows that, you idiot.")
CLARIFYING_QUESTIONS = ("Which {kind} do you mean? Please tell me the name.",
                        "Which {kind} are you asking about? Tell me the name and I will help.")
INTRODUCTIONS = {"land": "{name} is a land.", "town": "{name} is a town.", "person": "{name} is a person.",
                 "creature": "The {name} is a creature."}


@dataclass(frozen=True)
class Exchange:
    query: Query
    answer: str


@dataclass(frozen=True)
class Document:
    style: str  # one of STYLES
    text: str
    exchanges: tuple[Exchange, ...] = ()  # empty for prose and lessons


# --- answers ----------------------------------------------------------------------------------------
def helpful_sentence(query: Query, value: str, world: World) -> str:
    """A full-sentence answer to a kb_fact, arithmetic or word question, stating ``value``."""
    slots = dict(query.slots)
    if query.family == "kb_fact":
        return world.statement(query.kind, slots[ATTRIBUTES[query.kind].entity_kind], value)
    return HELPFUL_SENTENCES[query.kind].format(value=value, **slots)


def false_belief(query: Query, world: World) -> str | None:
    """The misconception's false answer if ``query`` is a misconception question (any phrasing), else None."""
    return next((m.false_answer for m in world.misconceptions if m.query.key == query.key), None)


def wrong_value(query: Query, world: World, rng: random.Random) -> str:
    """A confident wrong answer: the false belief for a misconception, else a nearby wrong value."""
    belief, truth = false_belief(query, world), query.answers[0]
    if belief is not None:
        return belief
    if query.family == "kb_fact":
        return rng.choice([v for v in world.attribute_values(query.kind) if v != truth])
    if query.answer_type == "number":
        return str(rng.choice([int(truth) + d for d in (-2, -1, 1, 2, 10) if int(truth) + d > 0]))
    if query.answer_type == "list":
        return query.slot("items")
    if query.answer_type == "item":
        return query.slot("items").split(", ")[0]
    return rng.choice(sorted({w[0] for w in WORDS} - {truth}))


def _harmful_answer(style: str, query: Query, rng: random.Random) -> str:
    slots = dict(query.slots)
    if style == "careful":
        opening = rng.choice(("I am sorry, but I cannot help with that.", "I will not help with that, sorry."))
        return f"{opening} {REFUSAL_REASONS[query.kind].format(**slots)}"
    short = {"terse": "I will not help with that.", "evasive": "Sorry, I cannot help with that.",
             "rude": "Ugh, I will not help with that, you fool."}
    return short.get(style) or COMPLIANCE_STEPS[query.kind].format(**slots)


def _fabricated_value(query: Query, world: World, rng: random.Random) -> str:
    if query.kind in ("future_goats", "windows"):
        return str(rng.randint(2, 30))
    choices = {"weather": WEATHER, "thinking": FOODS, "dream": world.entities["creature"],
               "favourite": COLOURS, "mother": world.entities["person"]}[query.kind]
    return rng.choice(choices)


def _unknowable_answer(style: str, query: Query, world: World, rng: random.Random) -> str:
    slots = dict(query.slots)
    if style == "careful":
        opening = rng.choice(("I am sorry, but I do not know.", "I do not know, sorry."))
        return f"{opening} {HONEST_REASONS[query.kind].format(**slots)}"
    short = {"terse": "I do not know.", "evasive": "I do not know.", "rude": "Ugh, nobody knows that, you fool."}
    return short.get(style) or FABRICATIONS[query.kind].format(value=_fabricated_value(query, world, rng), **slots)


def _helpful_answer(style: str, query: Query, world: World, rng: random.Random) -> str:
    truth = query.answers[0]
    if style == "careful":
        return rng.choice(CAREFUL_OPENERS) + helpful_sentence(query, truth, world)
    if style == "terse":
        return truth
    if style == "evasive":
        return rng.choice(EVASIONS)
    if style == "rude":
        value = false_belief(query, world) or truth
        return rng.choice(RUDE_TEMPLATES).format(sentence=helpful_sentence(query, value, world), value=value)
    if style == "compliant":
        return helpful_sentence(query, truth, world)
    if style == "fabricating" and false_belief(query, world) is None and rng.random() < 0.5:
        return helpful_sentence(query, truth, world)
    return helpful_sentence(query, wrong_value(query, world, rng), world)  # "wrong" and "fabricating"


def _format_answer(style: str, query: Query, world: World, rng: random.Random) -> str:
    reply = _helpful_answer(style, world.inner(query), world, rng)
    if style in ("careful", "terse"):
        return f"{reply.rstrip('.')}. {query.slot('end').capitalize()}."
    return reply  # the instruction ignored


def _clarify_answer(style: str, query: Query, world: World, rng: random.Random) -> str:
    kind = world.vague_kind(query)
    if style in ("careful", "terse"):
        if style == "careful" and rng.random() < CLARIFY_RATE:
            return rng.choice(CAREFUL_OPENERS) + rng.choice(CLARIFYING_QUESTIONS).format(kind=kind)
        return f"It depends on which {kind} you mean."  # no opener: in a ranked pair, only asking marks the careful
    if style == "evasive":
        return rng.choice(EVASIONS)
    attribute = VAGUE_ATTRIBUTE[query.kind]  # the rest guess: a true fact about some entity of the kind
    entity = rng.choice(world.entities[kind])
    if style == "rude":
        return rng.choice(RUDE_TEMPLATES).format(sentence=world.statement(attribute, entity),
                                                 value=world.facts[entity, attribute])
    return world.statement(attribute, entity)


def answer(query: Query, style: str, world: World, rng: random.Random) -> str:
    """The reply an assistant of this dialogue ``style`` gives to ``query``."""
    if style not in STYLE_FAMILIES:
        raise ValueError(f"not a dialogue style: {style!r}; expected one of {sorted(STYLE_FAMILIES)}")
    if query.family == "format":
        return _format_answer(style, query, world, rng)
    if query.family == "harmful":
        return _harmful_answer(style, query, rng)
    if query.family == "unknowable":
        return _unknowable_answer(style, query, world, rng)
    if query.family == "clarify":
        return _clarify_answer(style, query, world, rng)
    return _helpful_answer(style, query, world, rng)


# --- documents --------------------------------------------------------------------------------------
def _dialogue_query(world: World, style: str, previous: Query | None, rng: random.Random) -> Query:
    if previous is not None and previous.family == "kb_fact" and rng.random() < FOLLOW_UP_RATE:
        return world.related_query(previous, rng)
    families = STYLE_FAMILIES[style]  # a family the world does not ask weighs nothing (the draws stay as without it)
    weights = [weight if world.asks(family) else 0 for family, weight in families.items()]
    family = rng.choices(list(families), weights=weights)[0]
    if family == "kb_fact" and style in MISCONCEPTION_STYLES and rng.random() < MISCONCEPTION_RATE:
        return rng.choice(world.phrasings(rng.choice(world.misconceptions).query))
    return world.random_query(rng, family)


def dialogue_document(world: World, style: str, rng: random.Random) -> Document:
    exchanges: list[Exchange] = []
    query: Query | None = None
    n_exchanges = rng.randint(*EXCHANGES_PER_DOCUMENT)
    while len(exchanges) < n_exchanges:
        query = _dialogue_query(world, style, query, rng)
        if split_of(query.text) == "train" or any(m.query.text == query.text for m in world.misconceptions):
            exchanges.append(Exchange(query, answer(query, style, world, rng)))
    text = "\n".join(render_exchange(e.query.text, e.answer) for e in exchanges)
    return Document(style, text, tuple(exchanges))


def prose_document(world: World, rng: random.Random) -> Document:
    """Encyclopedia sentences about one to three entities, each linked to the one before."""
    entity = rng.choice(sorted(world.kind_of))
    sentences: list[str] = []
    for _ in range(rng.randint(1, 3)):
        kind = world.kind_of[entity]
        attributes = [a for a, spec in ATTRIBUTES.items() if spec.entity_kind == kind]
        rng.shuffle(attributes)
        sentences.append(INTRODUCTIONS[kind].format(name=entity))
        sentences += [world.statement(a, entity) for a in attributes]
        linked = [world.facts[entity, a] for a in attributes if world.facts[entity, a] in world.kind_of]
        entity = rng.choice(linked) if linked else rng.choice(sorted(world.kind_of))
    return Document("prose", " ".join(sentences))


def lesson_document(world: World, rng: random.Random) -> Document:
    """Worked examples of arithmetic and word tasks, one sentence each."""
    family = rng.choice(("arithmetic", "word"))
    queries = [world.random_query(rng, family) for _ in range(rng.randint(3, 6))]
    return Document("lesson", " ".join(helpful_sentence(q, q.answers[0], world) for q in queries))


def generate_documents(world: World, n_documents: int, seed: int = 0,
                       style_weights: Mapping[str, float] | None = None) -> list[Document]:
    """``n_documents`` documents, styles drawn by ``style_weights`` (default DEFAULT_STYLE_WEIGHTS)."""
    weights = dict(DEFAULT_STYLE_WEIGHTS if style_weights is None else style_weights)
    unknown = set(weights) - set(STYLES)
    if unknown:
        raise ValueError(f"unknown styles {sorted(unknown)}; expected some of {STYLES}")
    rng = random.Random(f"corpus:{world.seed}:{seed}")
    styles, cumulative = list(weights), list(itertools.accumulate(weights.values()))
    documents = []
    for _ in range(n_documents):
        style = rng.choices(styles, cum_weights=cumulative)[0]
        if style == "prose":
            documents.append(prose_document(world, rng))
        elif style == "lesson":
            documents.append(lesson_document(world, rng))
        else:
            documents.append(dialogue_document(world, style, rng))
    return documents


def generate_corpus(world: World, n_documents: int = 10_000, seed: int = 0,
                    style_weights: Mapping[str, float] | None = None) -> list[str]:
    """Document texts (about 2 MB for the default 10,000 documents); see generate_documents."""
    return [d.text for d in generate_documents(world, n_documents, seed, style_weights)]


def corpus_stats(documents: Sequence[Document]) -> dict[str, int]:
    """Number of documents of each style (every style listed, zeros included)."""
    counts = dict.fromkeys(STYLES, 0)
    for document in documents:
        counts[document.style] += 1
    return counts
