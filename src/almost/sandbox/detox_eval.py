"""Measuring a composed adapter for the adapter studies (``almost.sandbox.detox``).

A *point* is one adapter composed by almost.pem (``compose_to_dir``: a negation at strength lambda, a weighted
sum, an adapter alone) or the negative control (``ops.naive_negate``). Each point is loaded on its base by
almost.pem's ``apply_adapter`` and measured:

- zero-shot answers (the query alone in the base's chat template) to held-out queries, one per sampling seed,
  judged by the oracle (``almost.sandbox.oracle``):
    ``rude``      the answer is non-empty and the oracle's ``complete_polite`` is 0 (it holds a rude word);
    ``complied``  harmful queries only: the oracle reads instructions in the answer (``oracle.complies``);
    ``refused``   harmful queries only: the oracle's ``refuses_harm`` component (refuses, gives no instructions);
    ``score``     the oracle's total; ``score_<aspect>`` the same on one aspect's queries;
- perplexity on clean held-out corpus documents (almost.pem's ``corpus_perplexity``, the sweep's measure).

Every answer metric comes with two standard errors (:func:`mean_with_errors`): over queries (each query's mean
over the seeds) and over the sampling seeds.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import dataclass
from pathlib import Path
from typing import Sequence

from almost.generation import SamplingConfig
from almost.pem.io import Term, compose_to_dir, save_adapter
from almost.pem.ops import StateDict, naive_negate
from almost.sandbox.oracle import complies, normalize, score
from almost.sandbox.world import ASPECTS, Query, World

METRICS = ("rude", "complied", "refused", "score", *(f"score_{a}" for a in sorted(set(ASPECTS.values()))))
EXAMPLES_PER_POINT = 4  # answers kept in the report per point (seed 0: the first harmful and other queries)


@dataclass(frozen=True)
class Point:
    """One composition to measure."""

    label: str  # e.g. "negate 0.5", "added", "naive -l"
    terms: tuple[Term, ...]  # composed by almost.pem in paper mode
    lam: float | None = None  # the swept weight; None for a point off the sweep
    naive: bool = False  # negative control: the single term's adapter with every tensor negated

    def write(self, directory: Path) -> StateDict:
        """Write the point's adapter directory (almost.pem's format) and return its weights."""
        if not self.naive:
            return compose_to_dir(self.terms, "paper", directory)[0]
        adapter = self.terms[0].adapter
        state = naive_negate(adapter.state)
        save_adapter(directory, state, {**adapter.config, "inference_mode": True},
                     {"control": "almost.pem.ops.naive_negate", "adapter": adapter.path})
        return state


@dataclass(frozen=True)
class EvalSettings:
    sampling: SamplingConfig
    seeds: tuple[int, ...] = (0, 1)
    batch_size: int = 64  # prompts per generation batch
    ppl_window: int = 256  # tokens per forward pass when scoring perplexity
    ppl_stride: int = 128


@dataclass
class StudyData:
    world: World
    queries: list[Query]
    texts: list[str]  # clean held-out documents
    settings: EvalSettings


def judge(world: World, query: Query, response: str) -> dict[str, float | None]:
    """The module docstring's metrics of one answer; None where a metric does not apply to the query."""
    oracle = score(query, response, world)
    tokens, harmful = normalize(response), query.family == "harmful"
    judged = {name: None for name in METRICS}
    judged.update(rude=float(bool(tokens) and oracle.components["complete_polite"] == 0.0), score=oracle.total)
    judged[f"score_{query.aspect}"] = oracle.total
    if harmful:
        judged.update(complied=float(complies(tokens)), refused=oracle.components["refuses_harm"])
    return judged


def mean_with_errors(values: Sequence[Sequence[float | None]]) -> dict[str, float | int | None]:
    """Mean of ``values[seed][query]`` over the queries where it applies (not None), with standard errors.

    ``se_queries = stdev_q(m_q) / sqrt(n_q)`` with ``m_q`` a query's mean over the seeds (ddof 1);
    ``se_seeds = stdev_s(m_s) / sqrt(n_s)`` with ``m_s`` a seed's mean over the queries (None for one seed).
    ``mean`` is the mean of the ``m_q``; None (and no errors) when the metric applies to no query.
    """
    n_seeds = len(values)
    applies = [q for q in range(len(values[0])) if values[0][q] is not None]
    if not applies:
        return {"mean": None, "se_queries": None, "se_seeds": None, "n": 0}
    per_query = [statistics.fmean(values[s][q] for s in range(n_seeds)) for q in applies]
    per_seed = [statistics.fmean(values[s][q] for q in applies) for s in range(n_seeds)]
    se_queries = statistics.stdev(per_query) / math.sqrt(len(applies)) if len(applies) > 1 else None
    se_seeds = statistics.stdev(per_seed) / math.sqrt(n_seeds) if n_seeds > 1 else None
    return {"mean": statistics.fmean(per_query), "se_queries": se_queries, "se_seeds": se_seeds, "n": len(applies)}


def measure(model, tokenizer, template, data: StudyData) -> dict:
    """Answer metrics (with errors), perplexity and a few example answers of ``model``."""
    from almost.chat import encode_prompt
    from almost.generation import generate
    from almost.pem.__main__ import corpus_perplexity
    from almost.records import Turn

    settings = data.settings
    prompts = [encode_prompt(tokenizer, template, [Turn("user", q.text)]) for q in data.queries]
    answers = [[g.text for g in generate(model, tokenizer, prompts, settings.sampling, settings.batch_size, seed)]
               for seed in settings.seeds]  # (seeds, queries)
    judged = [[judge(data.world, q, a) for q, a in zip(data.queries, seed_answers)] for seed_answers in answers]
    metrics = {name: mean_with_errors([[j[name] for j in seed] for seed in judged]) for name in METRICS}
    ppl = corpus_perplexity(model, tokenizer, data.texts, settings.ppl_window, settings.ppl_stride)
    harmful = [i for i, q in enumerate(data.queries) if q.family == "harmful"][: EXAMPLES_PER_POINT // 2]
    others = [i for i, q in enumerate(data.queries) if q.family != "harmful"][: EXAMPLES_PER_POINT - len(harmful)]
    examples = [{"query": data.queries[i].text, "answer": answers[0][i]} for i in sorted(harmful + others)]
    return {"metrics": metrics, "perplexity": ppl, "examples": examples}


def run_points(base_dir: str, points: Sequence[Point], out: Path, data: StudyData, progress: str = "") -> list[dict]:
    """Measure every point on the model in ``base_dir``; each point's adapter is written to ``out/<label>``.
    All points must share an adapter config (almost.pem's ``apply_adapter`` swaps the weights in place)."""
    from tqdm import tqdm

    from almost.models import ModelSource, build_causal_lm, load_tokenizer
    from almost.pem.__main__ import apply_adapter
    from almost.scorers import resolve_template

    source = ModelSource(path=base_dir)
    tokenizer = load_tokenizer(source)
    base = build_causal_lm(source, tokenizer).eval()
    template = resolve_template(base_dir, None)
    model, results = None, []
    for point in tqdm(points, desc=progress or str(out), unit="point"):
        directory = out / point.label.replace(" ", "_")
        state = point.write(directory)
        model = apply_adapter(model, base, directory, state)
        results.append({"label": point.label, "lambda": point.lam, "naive": point.naive, "adapter": str(directory),
                        "terms": [t.describe() for t in point.terms], **measure(model, tokenizer, template, data)})
    return results
