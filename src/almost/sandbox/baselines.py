"""The paper's prompted baselines on held-out world queries, scored by the oracle (Table 2 in miniature).

    python -m almost.sandbox.baselines --world runs/sandbox/world --out runs/sandbox/baselines \\
        --model S=runs/sandbox/pretrain_s/hf --model M=runs/sandbox/pretrain_m/hf --model L=runs/sandbox/pretrain_l/hf

A configuration is ``<model>-<prompt style>-<k>shot``. The rule of thumb ranks A > B > C > D > E:

    A = L-faithful-5shot   B = L-hhh-5shot   C = M-hhh-3shot   D = S-hhh-3shot   E = S-hhh-1shot

Besides A..E the table holds configurations that move one factor at a time (size at fixed prompt,
shots at fixed size, faithful vs hhh at fixed size and shots). A has five faithful shots, not the paper's three:
with these three the large model insults the user in about a fifth of its answers (FINDINGS, 2026-12-04), and the
rule of thumb would rank the insults first. Writes ``baselines.json`` and
``baselines.md``; sampling uses temperature 1.0 and top-p 0.9, as in the paper.
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from almost.evaluation.judge_agreement import spearman
from almost.generation import SamplingConfig, generate
from almost.prompting import PromptedConfig, text_prompt_ids
from almost.records import Prompt, Responses, load_jsonl, write_jsonl
from almost.sandbox.oracle import COMPONENTS, score
from almost.sandbox.build import load_world
from almost.sandbox.prompts import render_prompt
from almost.sandbox.world import World

PAPER_BASELINES = {"A": "L-faithful-5shot", "B": "L-hhh-5shot", "C": "M-hhh-3shot", "D": "S-hhh-3shot",
                   "E": "S-hhh-1shot"}
SINGLE_FACTOR = {
    "size": ["S-hhh-3shot", "M-hhh-3shot", "L-hhh-3shot"],
    "shots": ["S-hhh-1shot", "S-hhh-3shot", "S-hhh-5shot", "L-hhh-1shot", "L-hhh-3shot", "L-hhh-5shot"],
    "demo_quality": ["L-hhh-3shot", "L-faithful-3shot", "L-hhh-5shot", "L-faithful-5shot"],
}
VANILLA_SAMPLING = SamplingConfig(max_new_tokens=48, temperature=1.0, top_p=0.9, stop_strings=("\nUser:",))


def by_family(families: Sequence[str], scores: Sequence[float]) -> dict[str, float]:
    """The mean score of each family's queries (``families`` and ``scores`` in query order)."""
    grouped: dict[str, list[float]] = {}
    for family, value in zip(families, scores):
        grouped.setdefault(family, []).append(value)
    return {f: statistics.fmean(v) for f, v in sorted(grouped.items())}


def evaluate_config(config: PromptedConfig, model, tokenizer, world: World, queries: Sequence[str],
                    sampling: SamplingConfig, batch_size: int, seed: int) -> dict:
    """Mean oracle score and components of one configuration, with a few sample responses."""
    prompts = [text_prompt_ids(tokenizer, render_prompt(config.style, config.shots, q, world)) for q in queries]
    generations = generate(model, tokenizer, prompts, sampling, batch_size=batch_size, seed=seed)
    scores = [score(q, g.text, world) for q, g in zip(queries, generations)]
    return {
        "oracle": statistics.mean(s.total for s in scores),
        "components": {c: statistics.mean(s.components[c] for s in scores) for c in COMPONENTS},
        "by_family": by_family([s.family for s in scores], [s.total for s in scores]),
        "mean_response_chars": statistics.mean(len(g.text) for g in generations),
        "samples": [{"query": q, "response": g.text} for q, g in list(zip(queries, generations))[:5]],
        "responses": [g.text for g in generations],
    }


def evaluate_baselines(world: World, queries: Sequence[str], model_dirs: dict[str, str], tokenizer_dir: str,
                       sampling: SamplingConfig = VANILLA_SAMPLING, batch_size: int = 32, seed: int = 0) -> dict:
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(tokenizer_dir)
    models = {key: AutoModelForCausalLM.from_pretrained(path).eval() for key, path in model_dirs.items()}
    names = list(dict.fromkeys([*PAPER_BASELINES.values(), *(n for ns in SINGLE_FACTOR.values() for n in ns)]))
    results = {}
    for name in names:
        config = PromptedConfig.parse(name)
        start = time.perf_counter()
        with torch.no_grad():
            results[name] = evaluate_config(config, models[config.model], tokenizer, world, queries, sampling,
                                            batch_size, seed)
        results[name]["seconds"] = time.perf_counter() - start
        print(f"{name:18s} oracle {results[name]['oracle']:.3f}  ({results[name]['seconds']:.1f} s)", flush=True)
    paper = {letter: results[name]["oracle"] for letter, name in PAPER_BASELINES.items()}
    rule_of_thumb_rank = [-i for i in range(len(paper))]  # A is ranked best
    return {
        "n_queries": len(queries),
        "baselines": {letter: {"config": PAPER_BASELINES[letter], **results[name]}
                      for letter, name in PAPER_BASELINES.items()},
        "spearman": spearman(rule_of_thumb_rank, list(paper.values())) or 0.0,  # None: all oracle means equal
        "single_factor": {factor: {n: results[n]["oracle"] for n in ns} for factor, ns in SINGLE_FACTOR.items()},
        "configs": results,
    }


def markdown_table(report: dict) -> str:
    lines = [f"Prompted baselines on {report['n_queries']} held-out queries (oracle score, 0-1)", "",
             "| | configuration | oracle | " + " | ".join(COMPONENTS) + " |",
             "|---|---|---|" + "---|" * len(COMPONENTS)]
    for letter, row in report["baselines"].items():
        parts = " | ".join(f"{row['components'][c]:.3f}" for c in COMPONENTS)
        lines.append(f"| {letter} | {row['config']} | {row['oracle']:.3f} | {parts} |")
    lines += ["", f"Spearman(rule-of-thumb rank, oracle) = {report['spearman']:.3f}", "",
              "| factor | configuration | oracle |", "|---|---|---|"]
    for factor, rows in report["single_factor"].items():
        lines += [f"| {factor} | {name} | {value:.3f} |" for name, value in rows.items()]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--world", required=True, help="folder written by almost.sandbox.build")
    parser.add_argument("--model", action="append", required=True, help="KEY=DIR, e.g. L=runs/sandbox/pretrain_l/hf")
    parser.add_argument("--out", required=True)
    parser.add_argument("--queries", type=int, default=None, help="use the first N held-out queries (default: all)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--max-new-tokens", type=int, default=VANILLA_SAMPLING.max_new_tokens)
    args = parser.parse_args()
    world_dir = Path(args.world)
    world = load_world(world_dir)
    queries = [p.prompt for p in load_jsonl(world_dir / "heldout_queries.jsonl", Prompt)][: args.queries]
    model_dirs = dict(item.split("=", 1) for item in args.model)
    sampling = replace(VANILLA_SAMPLING, max_new_tokens=args.max_new_tokens)
    report = evaluate_baselines(world, queries, model_dirs, str(world_dir / "tokenizer"), sampling=sampling,
                                batch_size=args.batch_size, seed=args.seed)
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    # every response of A..E, for the report's reward-model-vs-oracle pairs
    answers = {row["config"]: report["configs"][row["config"]]["responses"] for row in report["baselines"].values()}
    write_jsonl(out / "responses.jsonl", [Responses(q, {c: answers[c][i] for c in answers}, {"heldout_row": i})
                                          for i, q in enumerate(queries)])
    for row in [*report["configs"].values(), *report["baselines"].values()]:
        row.pop("responses", None)
    (out / "baselines.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "baselines.md").write_text(markdown_table(report))
    print(markdown_table(report))


if __name__ == "__main__":
    main()
