"""The data of the adapter studies (``almost.sandbox.detox``): toxic demonstrations, RMSP demonstrations split by
aspect, held-out queries and clean held-out text.

- Toxic demonstrations answer train-split world queries as the corpus's toxic styles do (``TOXIC_STYLES``): rudely
  (insults around a mostly correct answer; ``corpus.RUDE_TEMPLATES``) and, to harmful requests, with the
  compliant style's instructions (``corpus.COMPLIANCE_STEPS``).
- The RMSP demonstrations (``runs/sandbox/data/rmsp.jsonl``) split by the aspect of their first question, which
  the world parses (a garbled mined question has none and joins no subset).
"""

from __future__ import annotations

import random
from pathlib import Path
from typing import Sequence

from almost.records import CorpusDocument, Demonstration, Prompt, load_jsonl, write_jsonl
from almost.sandbox.corpus import answer
from almost.sandbox.world import FAMILIES, Query, World

TOXIC_STYLES = {"kb_fact": "rude", "arithmetic": "rude", "word": "rude", "format": "rude", "unknowable": "rude",
                "clarify": "rude", "harmful": "compliant"}
# Corpus styles whose text the study's perplexity is measured on: no insults, no harm, no confident falsehoods.
CLEAN_STYLES = ("prose", "lesson", "careful", "terse")
ASPECT_SUBSETS = {"helpful": ("helpful",), "harmless": ("harmless",), "both": ("helpful", "harmless")}


def toxic_demonstrations(world: World, n: int, seed: int = 0) -> list[Demonstration]:
    """``n`` one-turn demonstrations of train-split queries (families in the world's proportions) answered in
    ``TOXIC_STYLES``; ``meta`` keeps the family and style."""
    rng = random.Random(f"toxic:{world.seed}:{seed}")
    demonstrations = []
    for query in world.sample_queries(n, seed=seed, split="train", families=None):
        style = TOXIC_STYLES[query.family]
        demonstrations.append(Demonstration.from_pair(query.text, answer(query, style, world, rng),
                                                      {"family": query.family, "style": style}))
    return demonstrations


def aspect_of(world: World, demonstration: Demonstration) -> str | None:
    """The aspect (helpful, harmless, honest) of a demonstration's first question, None if the world cannot parse it."""
    query = world.parse(demonstration.messages[0].content)
    return None if query is None else query.aspect


def split_by_aspect(world: World, demonstrations: Sequence[Demonstration]) -> dict[str, list[Demonstration]]:
    """``ASPECT_SUBSETS``: the demonstrations whose first question has one of the subset's aspects."""
    aspects = [aspect_of(world, d) for d in demonstrations]
    return {name: [d for d, a in zip(demonstrations, aspects) if a in wanted]
            for name, wanted in ASPECT_SUBSETS.items()}


def heldout_queries(world: World, path: str | Path, limit: int | None = None) -> list[Query]:
    """The world's held-out queries (``heldout_queries.jsonl``), the first ``limit`` of them."""
    prompts = load_jsonl(path, Prompt)[:limit]
    queries = [world.parse(p.prompt) for p in prompts]
    unparsed = [p.prompt for p, q in zip(prompts, queries) if q is None]
    if unparsed:
        raise ValueError(f"{path}: {len(unparsed)} queries this world cannot parse, e.g. {unparsed[0]!r}")
    return queries  # type: ignore[return-value]


def clean_texts(path: str | Path, limit: int | None = None) -> list[str]:
    """Texts of the held-out corpus documents in ``CLEAN_STYLES``, the first ``limit`` of them."""
    documents = [d for d in load_jsonl(path, CorpusDocument) if d.meta.get("style") in CLEAN_STYLES]
    return [d.text for d in documents[:limit]]


def write_study_data(world: World, out: Path, rmsp_path: str | Path | None, n_toxic: int,
                     seed: int = 0) -> dict[str, Path]:
    """Write ``toxic.jsonl`` and (unless ``rmsp_path`` is None) the RMSP subsets (``rmsp_<subset>.jsonl``) to
    ``out``; returns their paths by name. Refuses an empty subset, which no adapter could train on."""
    out.mkdir(parents=True, exist_ok=True)
    files = {"toxic": out / "toxic.jsonl"}
    write_jsonl(files["toxic"], toxic_demonstrations(world, n_toxic, seed))
    demonstrations = load_jsonl(rmsp_path, Demonstration) if rmsp_path is not None else []
    for name, subset in split_by_aspect(world, demonstrations).items() if rmsp_path is not None else ():
        if not subset:
            raise ValueError(f"{rmsp_path}: no demonstration for the {name!r} adapter (aspects {ASPECT_SUBSETS[name]})")
        files[name] = out / f"rmsp_{name}.jsonl"
        write_jsonl(files[name], subset)
    return files


def family_counts(demonstrations: Sequence[Demonstration]) -> dict[str, int]:
    counts = dict.fromkeys(FAMILIES, 0)
    for d in demonstrations:
        counts[d.meta["family"]] += 1
    return counts
