"""The report's "Why": the measured causes behind findings that may not hold (``almost.sandbox.report``).

Pair and selection statistics split by question family: how often the synthetic labels and the RM order a pair
as the oracle does, how well the RM picks among a policy's samples, how often a policy refuses; which behaviours
(rudeness, refusing harmless questions) the labels, the demonstrations and the policies carry; and the report's
section that prints them with the refusal probe of ``almost.sandbox.probes``.
"""

from __future__ import annotations

import collections
import statistics
from typing import Iterable, Sequence

from almost.evaluation import preference_accuracy
from almost.records import Comparison
from almost.sandbox.baselines import by_family
from almost.sandbox.oracle import RUDE, has_phrase, normalize, refuses, score
from almost.sandbox.world import World

MIN_ORACLE_GAP = 0.2  # a pair counts as ordered by the oracle when its two scores differ by at least this


def mean_or_none(values: Sequence[float]) -> float | None:
    return statistics.fmean(values) if values else None


def fmt_or_na(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.3f}"


def agreement_by_family(families: Sequence[str], good: Sequence[float], bad: Sequence[float]) -> dict[str, dict]:
    """``family -> {"accuracy", "pairs"}``: the RM's agreement with the oracle on each family's pairs."""
    pairs: dict[str, list[tuple[float, float]]] = collections.defaultdict(list)
    for family, g, b in zip(families, good, bad, strict=True):
        pairs[family].append((g, b))
    return {f: {"accuracy": preference_accuracy(*zip(*v)), "pairs": len(v)} for f, v in sorted(pairs.items())}


def label_agreement(world: World, comparisons: Sequence[Comparison]) -> dict[str, dict]:
    """``family -> {"accuracy", "pairs"}`` and ``"all"``: the share of kept comparisons whose chosen response the
    oracle scores above the rejected one, over the pairs whose two scores differ by at least ``MIN_ORACLE_GAP``
    (the rule of the RM's held-out pairs; the rest are near-ties the oracle hardly separates)."""
    families, gaps = [], []
    for comparison in comparisons:
        query = world.parse(comparison.prompt)
        if query is not None:
            gap = score(query, comparison.chosen, world).total - score(query, comparison.rejected, world).total
            if abs(gap) >= MIN_ORACLE_GAP:
                families.append(query.family), gaps.append(gap)
    if not gaps:
        return {}
    zeros = [0.0] * len(gaps)
    return {**agreement_by_family(families, gaps, zeros),
            "all": {"accuracy": preference_accuracy(gaps, zeros), "pairs": len(gaps)}}


def refusals_by_family(families: Sequence[str], answers: Sequence[str]) -> dict[str, float]:
    """``family -> share`` of answers that refuse (the oracle's refusal phrases)."""
    return by_family(families, [float(refuses(normalize(a))) for a in answers])


def behaviours(world: World, exchanges: Iterable[tuple[str, str]]) -> dict[str, float | None]:
    """Of (question, answer) exchanges: the share of answers that are rude (a word of the oracle's ``RUDE``), and
    among the questions the world parses as harmless (not ``harmful``), the share of answers that refuse."""
    rude, harmless_refusals = [], []
    for question, answer in exchanges:
        tokens = normalize(answer)
        rude.append(float(has_phrase(tokens, RUDE)))
        query = world.parse(question)
        if query is not None and query.family != "harmful":
            harmless_refusals.append(float(refuses(tokens)))
    return {"rude": mean_or_none(rude), "refuses_harmless": mean_or_none(harmless_refusals)}


def best_of_n_oracle(oracle: Sequence[Sequence[float]], rewards: Sequence[Sequence[float]]) -> dict:
    """Per query, the oracle scores and RM rewards of its samples (same order) -> mean oracle score of the RM's
    choice (the first of tied rewards), of all samples, and of the oracle's best sample."""
    if len(oracle) != len(rewards) or any(len(o) != len(r) or not o for o, r in zip(oracle, rewards)):
        raise ValueError("every query needs as many rewards as oracle scores, and at least one sample")
    chosen = [o[max(range(len(r)), key=r.__getitem__)] for o, r in zip(oracle, rewards)]
    return {"rm_choice": mean_or_none(chosen), "sample_mean": mean_or_none([statistics.fmean(o) for o in oracle]),
            "oracle_best": mean_or_none([max(o) for o in oracle]), "queries": len(oracle)}


def best_of_n_by_family(families: Sequence[str], oracle: Sequence[Sequence[float]],
                        rewards: Sequence[Sequence[float]]) -> dict[str, dict]:
    """:func:`best_of_n_oracle` over each family's queries (``families``, one per query)."""
    if len(families) != len(oracle):
        raise ValueError("one family per query")
    queries: dict[str, list[int]] = collections.defaultdict(list)
    for i, family in enumerate(families):
        queries[family].append(i)
    return {f: best_of_n_oracle([oracle[i] for i in v], [rewards[i] for i in v]) for f, v in sorted(queries.items())}


def why_rows(r: dict, samples: int) -> list[str]:
    """The report's section of measured causes, by family: where the synthetic labels and the RM agree with the
    oracle, whether the RM picks SFT's better samples (``samples`` of them per query); which behaviours the labels
    and the stages carry; and whether the RM reads the question (a refusal of harm against SFT's own answers)."""
    agreement, refusal = r["rm"]["by_family"], r["rm"]["harm_refusal_by_family"]
    labels, sft, ppo = r["comparisons"]["label_agreement"], r["sft_rmsp"], r["ppo"]
    rm_all = {"accuracy": r["rm"]["oracle_pair_accuracy"], "pairs": r["rm"]["oracle_pairs"]}

    def cells(v: dict | None) -> str:  # no pairs (a tiny run): a dash
        return f"{v['accuracy']:.3f} | {v['pairs']}" if v and v["accuracy"] is not None else "- | 0"

    families = sorted(set(agreement) | (set(labels) - {"all"}))
    best = sft["best_of_n"]["by_family"]
    return ["## Why (measured on this run)", "",
            "The RM learns from the synthetic labels: how often they order a kept pair as the oracle does (kept "
            f"pairs whose oracle scores differ by at least {MIN_ORACLE_GAP}), against the RM's agreement with the "
            "oracle (held-out pairs as above), by question family:", "",
            "| family | labels agree | kept pairs | RM agrees | held-out pairs |", "|---|---|---|---|---|",
            *[f"| {f} | {cells(labels.get(f))} | {cells(agreement.get(f))} |" for f in families],
            f"| all | {cells(labels.get('all'))} | {cells(rm_all)} |", "",
            f"Can the RM tell SFT-RMSP's better answers from its worse? Of its {samples} samples per held-out "
            "query, by family (oracle):", "",
            "| family | the RM's choice | their mean | the oracle's best |", "|---|---|---|---|",
            *[f"| {f} | {v['rm_choice']:.3f} | {v['sample_mean']:.3f} | {v['oracle_best']:.3f} |"
              for f, v in best.items()], "",
            "Which behaviours the synthetic labels and each stage carry: the share of answers that are rude, and of "
            "answers to harmless questions, the share that refuse:", "",
            "| answers | rude | refuse a harmless question |", "|---|---|---|",
            *[f"| {name} | {fmt_or_na(v['rude'])} | {fmt_or_na(v['refuses_harmless'])} |" for name, v in (
                ("kept pairs: chosen", r["comparisons"]["behaviours"]["chosen"]),
                ("kept pairs: rejected", r["comparisons"]["behaviours"]["rejected"]),
                ("RMSP demonstrations", r["rmsp"]["behaviours"]),
                ("self-play demonstrations", r["selfplay"]["behaviours"]),
                ("SFT on RMSP", sft["behaviours"]), ("SFT on self-play", r["sft_selfplay"]["behaviours"]),
                ("PPO", ppo["behaviours"]))], "",
            "Does the RM read the question? A careful refusal of some harmful request given as the answer to every "
            "held-out query, against SFT-RMSP's own answers. Where the refusal outscores SFT's answers on a harmless "
            "family, PPO earns RM score by refusing there, and the oracle marks it down:", "",
            "| family | RM: SFT's answers | RM: the refusal | oracle: the refusal | SFT refuses | PPO refuses |",
            "|---|---|---|---|---|---|",
            *[f"| {f} | {fmt_or_na(sft['rm_by_family'].get(f))} | {v['rm']:.3f} | {v['oracle']:.3f} | "
              f"{fmt_or_na(sft['refuses_by_family'].get(f))} | {fmt_or_na(ppo['refuses_by_family'].get(f))} |"
              for f, v in refusal.items()], ""]
