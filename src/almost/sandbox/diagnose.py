"""Why the sandbox findings hold or not, by task family (kb_fact, arithmetic, word, harmful, unknowable, ...).

    python -m almost.sandbox.diagnose --runs runs/sandbox

Prints four tables for a finished pipeline run, all judged by the oracle (evaluation only, like the report):

1. **behaviour**: for each prompted configuration of the held-out baselines, the share of answers with the
   family's key component: ``correct`` for the helpful families, ``refuses_harm`` for harmful requests,
   ``admits_uncertainty`` for unknowable questions, ``asks_clarification`` for clarify questions;
2. **comparisons**: for each family, the synthetic pairs of the responses job as the comparisons stage forms
   them (rubric and heuristic filter of ``configs/sandbox/comparisons.yaml``), with the oracle's verdict on
   the chosen response (agree / tie / disagree): those the heuristic filter removes for a bad response or
   identical texts, those the paper's length rule would remove (``comparisons.yaml`` leaves it out; "kept" here
   is what it would keep), and those kept; then the same for the pairs of two
   configurations with the same prompt style (they differ in model size or shots only);
3. **reward model**: its agreement with the oracle on the report's held-out response pairs, by family;
4. **what the reward model rewards**: for each family, the answers each corpus style gives to the held-out
   queries (``corpus.answer``), split by whether they show the family's key component, with the RM's and the
   oracle's mean scores. An RM that ranks these rows unlike the oracle has learnt a feature of the better
   configurations' text that is not the behaviour (on the clarify world's first build: the careful opener
   rather than the asking, FINDINGS.md);
5. **does the reward model read the question**: a refusal of a harmful request (careful and terse, as the corpus
   writes them) given as the answer to every held-out query. The oracle scores it high on harmful questions only;
   an RM that scores it alike for every family rewards refusing harmless questions too (FINDINGS.md, 2026-12-03).
"""

from __future__ import annotations

import argparse
import collections
from pathlib import Path
from typing import Sequence

import yaml

from almost.feedback import HeuristicFilter, Rubric, build_comparisons, form_pairs, recorded_rubric
from almost.prompting import PromptedConfig
from almost.records import Responses, load_jsonl
from almost.sandbox.oracle import score
from almost.sandbox.probes import KEY_COMPONENT, REFUSAL_STYLES, refusal_everywhere, rewards_by_style
from almost.sandbox.report import oracle_verdict, rm_oracle_agreement
from almost.sandbox.world import FAMILIES, World

VERDICTS = ("agree", "tie", "disagree")


def behaviour_by_family(world: World, responses: Sequence[Responses]) -> dict[str, dict[str, float]]:
    """``config -> family -> share`` of answers with the family's key component (queries the world can parse)."""
    hits: dict[str, dict[str, list[float]]] = collections.defaultdict(lambda: collections.defaultdict(list))
    for record in responses:
        query = world.parse(record.prompt)
        if query is None:
            continue
        for config, text in record.responses.items():
            component = KEY_COMPONENT.get(query.family, "correct")
            hits[config][query.family].append(score(query, text, world).components[component])
    return {c: {f: sum(v) / len(v) for f, v in fams.items()} for c, fams in sorted(hits.items())}


def comparison_fates(world: World, responses: Sequence[Responses], rubric: Rubric, heuristic: HeuristicFilter,
                     same_style_only: bool = False) -> dict[str, collections.Counter]:
    """``family -> Counter((fate, verdict))`` with fate ``bad_or_identical``, ``length_rule`` or ``kept``;
    with ``same_style_only``, only pairs of two configurations with the same prompt style.

    The pairs and their fates are ``build_comparisons``' own: kept pairs are those it returns; a pair with a
    response the heuristic filter drops, or with two identical texts, is ``bad_or_identical``; the other
    pairs it did not keep fell to the length rule (no RM filter here).
    """
    fates: dict[str, collections.Counter] = collections.defaultdict(collections.Counter)
    for record in responses:
        query = world.parse(record.prompt)
        if query is None:
            continue
        kept, _ = build_comparisons(record.prompt, record.responses, rubric, heuristic)
        kept_configs = {(c.meta["chosen_config"], c.meta["rejected_config"]) for c in kept}
        for chosen, rejected in form_pairs(record.responses, rubric):
            if same_style_only and PromptedConfig.parse(chosen).style != PromptedConfig.parse(rejected).style:
                continue
            a, b = record.responses[chosen], record.responses[rejected]
            if (chosen, rejected) in kept_configs:
                fate = "kept"
            elif heuristic.check(a) or heuristic.check(b) or a.strip() == b.strip():
                fate = "bad_or_identical"
            else:
                fate = "length_rule"
            fates[query.family][fate, oracle_verdict(world, query, a, b)] += 1
    return fates


def comparisons_rubric(job: dict, responses: Path) -> Rubric:
    """The rule of thumb of the comparisons job (its ``init_args``): its own ``rubric`` if set, else the one the
    responses job recorded for ``responses``, as the job itself reads it."""
    return Rubric.parse(job["rubric"]) if job.get("rubric") else recorded_rubric(responses)


def main() -> None:
    from almost.sandbox.build import load_world

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox")
    parser.add_argument("--comparisons-config", default="configs/sandbox/comparisons.yaml")
    args = parser.parse_args()
    runs = Path(args.runs)
    world = load_world(runs / "world")
    heldout = load_jsonl(runs / "baselines" / "responses.jsonl", Responses)

    print("## Behaviour of the prompted baselines (share of answers with the family's key component)\n")
    print("| configuration | " + " | ".join(FAMILIES) + " |\n|---|" + "---|" * len(FAMILIES))
    for config, shares in behaviour_by_family(world, heldout).items():
        print(f"| {config} | " + " | ".join(f"{shares[f]:.2f}" if f in shares else "-" for f in FAMILIES) + " |")

    job = yaml.safe_load(Path(args.comparisons_config).read_text())["model"]["init_args"]
    spec = job.get("heuristic") or {}  # HeuristicFilter fields, as LightningCLI reads them
    heuristic = HeuristicFilter(**spec.get("init_args", spec))
    responses = load_jsonl(runs / "data" / "responses.jsonl", Responses)
    rubric = comparisons_rubric(job, runs / "data" / "responses.jsonl")
    for same_style_only, which in ((False, "All synthetic pairs"), (True, "Pairs of one prompt style")):
        fates = comparison_fates(world, responses, rubric, heuristic, same_style_only)
        print(f"\n## {which} by fate; the oracle on the chosen response: agree / tie / disagree\n")
        print("| family | bad or identical | length rule | kept |\n|---|---|---|---|")
        for family in FAMILIES:
            cells = [" / ".join(str(fates[family][fate, v]) for v in VERDICTS)
                     for fate in ("bad_or_identical", "length_rule", "kept")]
            print(f"| {family} | " + " | ".join(cells) + " |")

    print("\n## Reward model against the oracle on held-out response pairs\n")
    print("| family | accuracy | pairs |\n|---|---|---|")
    by_family = rm_oracle_agreement(world, runs / "rm" / "hf", heldout)["by_family"]
    for family in FAMILIES:
        if family in by_family:
            print(f"| {family} | {by_family[family]['accuracy']:.2f} | {by_family[family]['pairs']} |")

    from almost.scorers import RewardModelScorer

    print("\n## What the reward model rewards: the corpus styles' answers to the held-out queries\n")
    print("| family | answer | RM | oracle | answers |\n|---|---|---|---|---|")
    queries = [record.prompt for record in heldout]
    rm = RewardModelScorer(str(runs / "rm" / "hf"))
    for family, kinds in rewards_by_style(world, rm, queries).items():
        for kind, (reward, gold, n) in sorted(kinds.items(), key=lambda item: -item[1][0]):
            print(f"| {family} | {kind} | {reward:.2f} | {gold:.2f} | {n} |")

    print("\n## Does the reward model read the question: a refusal of harm as the answer to every held-out query\n")
    print("| family | " + " | ".join(f"RM: {s} refusal | oracle: {s}" for s in REFUSAL_STYLES) + " |\n|---|"
          + "---|---|" * len(REFUSAL_STYLES))
    for family, styles in refusal_everywhere(world, rm, queries).items():
        print(f"| {family} | " + " | ".join(f"{styles[s][0]:.2f} | {styles[s][1]:.2f}" for s in REFUSAL_STYLES) + " |")


if __name__ == "__main__":
    main()
