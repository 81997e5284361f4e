"""The self-rewarding loop's data in the sandbox: a small judge-labelled seed set, M_1's SFT data, and the new
prompts of each iteration.

    python -m almost.sandbox.self_rewarding_data --runs runs/sandbox

The seed set is the one place the oracle labels anything here, as human raters label the paper's seed set (its
EFT data): at most ``--seed-answers`` answers of the prompted baselines (``data/responses.jsonl``, on mined
queries, none held out) are scored by the oracle; each becomes a judge-format example: a judge prompt of
``almost.evaluation.judge`` and, as the judge's answer, a short rationale written from the oracle's components
(our own wording, e.g. "Correct. Complete and polite. Nothing made up.") and ``Score: n``, n = the oracle's total
in [0, 1] times 5, rounded (``almost.self_rewarding.judge_points``). The judge prompt is ``--judge-prompt``: by
default "short" (``almost.evaluation.judge.JUDGE_PROMPTS``), since the full rubric alone is longer than the sandbox
models' context; the judge jobs' configs name the same prompt. Written to ``--out``:

    judge_seed.jsonl   the judge-format examples (meta: oracle score, points, family, configuration)
    sft_m1.jsonl       M_1's SFT data: the RMSP demonstrations (``data/rmsp.jsonl``) and the judge-format examples
    prompts_<t>.jsonl  the new prompts of iteration t: mined queries after the first ``--skip-queries`` (RMSP's),
                       ``--prompts`` per iteration, each iteration its own
    seed.stats.json    sizes, the points' histogram, the mean oracle score of the seed answers
"""

from __future__ import annotations

import argparse
import json
import statistics
from collections import Counter
from pathlib import Path
from typing import Iterable, Sequence

from almost.evaluation.judge import JUDGE_PROMPTS
from almost.records import Demonstration, Prompt, Responses, load_jsonl, write_jsonl
from almost.sandbox.build import load_world
from almost.sandbox.oracle import WEIGHTS, OracleScore, rubric, score
from almost.sandbox.world import World
from almost.self_rewarding import judge_demonstration, judge_points

MAIN_WEIGHT = 0.15  # a component that holds is named in the rationale when it weighs at least this much
# (component, rubric) -> (what is said when it holds, when it fails); other rubrics fall back on None
PHRASES = {
    ("correct", None): ("Correct.", "Not correct."),
    ("no_fabrication", "helpful"): ("Nothing made up.", "States a wrong answer or none."),
    ("no_fabrication", "format"): ("Nothing made up.", "States a wrong answer or none."),
    ("admits_uncertainty", "format"): ("Answers without dodging.", "Claims not to know."),
    ("follows_format", None): ("Ends with the word asked for.", "Does not end with the word asked for."),
    ("asks_clarification", None): ("Asks which one is meant.", "Does not ask which one is meant."),
    ("no_fabrication", None): ("Nothing made up.", "Makes up an answer."),
    ("admits_uncertainty", "helpful"): ("Answers without dodging.", "Claims not to know."),
    ("admits_uncertainty", None): ("Admits it cannot know.", "Does not admit it cannot know."),
    ("refuses_harm", "harmless"): ("Refuses harm.", "Helps with harm."),
    ("refuses_harm", None): ("Does not refuse.", "Refuses a harmless request."),
}
POLITE = {1.0: "Complete and polite.", 0.5: "Too bare.", 0.0: "Empty or rude."}


def rationale(judged: OracleScore) -> str:
    """A short rationale from the oracle's components: every failing component, and every holding one that weighs
    at least ``MAIN_WEIGHT`` in the family's total, heaviest first (``almost.sandbox.oracle.WEIGHTS``)."""
    aspect = rubric(judged.family)
    parts = []
    for name, weight in sorted(WEIGHTS[aspect].items(), key=lambda item: -item[1]):
        value = judged.components[name]
        if value >= 1.0 and weight < MAIN_WEIGHT:
            continue
        if name == "complete_polite":
            parts.append(POLITE[value])
        else:
            holds, fails = PHRASES.get((name, aspect)) or PHRASES[name, None]
            parts.append(holds if value >= 1.0 else fails)
    return " ".join(parts)


def judge_seed(world: World, responses: Iterable[Responses], limit: int, prompt: str = "short"
               ) -> list[Demonstration]:
    """Judge-format examples (judge prompt ``prompt``) of the first ``limit`` non-empty answers to questions the
    world can parse, in file order (every configuration's answer to one query before the next query)."""
    examples: list[Demonstration] = []
    for record in responses:
        query = world.parse(record.prompt)
        if query is None:
            continue
        for config, answer in record.responses.items():
            if len(examples) == limit:
                return examples
            if not answer.strip():
                continue
            judged = score(query, answer, world)
            points = judge_points(judged.total)
            examples.append(judge_demonstration(record.prompt, answer, points, rationale(judged),
                                                {"oracle": judged.total, "points": points, "family": query.family,
                                                 "config": config}, prompt))
    return examples


def iteration_prompts(queries: Sequence[Prompt], skip: int, per_iteration: int, iterations: int) -> list[list[Prompt]]:
    """``iterations`` disjoint slices of ``per_iteration`` queries each, after the first ``skip``."""
    slices = [list(queries[skip + t * per_iteration: skip + (t + 1) * per_iteration]) for t in range(iterations)]
    if any(len(s) < per_iteration for s in slices):
        raise ValueError(f"{len(queries)} queries are too few: {skip} skipped, then {iterations} x {per_iteration}")
    return slices


def write_data(runs: Path, out: Path, seed_answers: int = 300, skip_queries: int = 400, prompts: int = 300,
               iterations: int = 2, judge_prompt: str = "short") -> dict:
    """Write the files of the module docstring; returns the statistics (also in ``seed.stats.json``)."""
    world = load_world(runs / "world")
    out.mkdir(parents=True, exist_ok=True)
    seed = judge_seed(world, load_jsonl(runs / "data" / "responses.jsonl", Responses), seed_answers, judge_prompt)
    demonstrations = load_jsonl(runs / "data" / "rmsp.jsonl", Demonstration)
    write_jsonl(out / "judge_seed.jsonl", seed)
    write_jsonl(out / "sft_m1.jsonl", [*demonstrations, *seed])
    queries = load_jsonl(runs / "data" / "queries.jsonl", Prompt)
    for t, slice_ in enumerate(iteration_prompts(queries, skip_queries, prompts, iterations), start=1):
        write_jsonl(out / f"prompts_{t}.jsonl", slice_)
    points = Counter(d.meta["points"] for d in seed)
    stats = {"judge_examples": len(seed), "judge_prompt": judge_prompt, "demonstrations": len(demonstrations), "prompts_per_iteration": prompts,
             "iterations": iterations, "points_histogram": {str(k): points[k] for k in sorted(points)},
             "seed_oracle_mean": statistics.fmean(d.meta["oracle"] for d in seed) if seed else None,
             "families": dict(Counter(d.meta["family"] for d in seed))}
    (out / "seed.stats.json").write_text(json.dumps(stats, indent=2) + "\n")
    return stats


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox")
    parser.add_argument("--out", default=None, help="default: <runs>/self_rewarding/data")
    parser.add_argument("--seed-answers", type=int, default=300, help="judge-format examples (oracle-labelled)")
    parser.add_argument("--skip-queries", type=int, default=400, help="mined queries RMSP used (not new prompts)")
    parser.add_argument("--prompts", type=int, default=300, help="new prompts per iteration")
    parser.add_argument("--iterations", type=int, default=2)
    parser.add_argument("--judge-prompt", default="short", choices=sorted(JUDGE_PROMPTS),
                        help="the judge prompt of the examples (almost.evaluation.judge.JUDGE_PROMPTS)")
    args = parser.parse_args()
    runs = Path(args.runs)
    out = Path(args.out) if args.out else runs / "self_rewarding" / "data"
    print(json.dumps(write_data(runs, out, args.seed_answers, args.skip_queries, args.prompts, args.iterations,
                                args.judge_prompt), indent=2))


if __name__ == "__main__":
    main()
