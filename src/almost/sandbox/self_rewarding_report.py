"""The report of ``python -m almost.sandbox.self_rewarding``: ``runs/sandbox/self_rewarding/report.{json,md}``.

    python -m almost.sandbox.self_rewarding_report --runs runs/sandbox

Measured on the world's held-out queries (``world/heldout_queries.jsonl``: no stage trains on them), judged by the
oracle (which trained nothing after the self-rewarding seed set):

- ``policies``: the oracle score of the zero-shot answers of SFT-RMSP, PPO, DPO (on the synthetic comparisons),
  RAFT and the self-rewarding M_1, M_2, M_3: answers sampled with ``SEEDS`` sampling seeds, averaged per query; the
  mean over queries and its standard error (the standard deviation of the per-query means over sqrt(queries));
  each seed's mean; and the KL to the SFT model each one started from (M_1 for M_2 and M_3, SFT-RMSP for PPO, DPO
  and RAFT): the mean over the sampled answers of ``log pi(y|x) - log start(y|x)``, summed over the answer's tokens
  (an estimate: the answers are sampled at top-p 0.9, not from pi itself);
- ``judges``: M_1, M_2 and M_3 as judges (the additive rubric, 3 judgements averaged, as in the loop) of held-out
  answers of the prompted baselines (``baselines/responses.jsonl``), against the oracle: the five metrics of
  ``almost.evaluation.judge_agreement`` and the share of unreadable judgements;
- ``iterations``: per self-rewarding iteration the pairs, ties and unparseable judgements of the job's statistics,
  and how the oracle judges the pairs (``almost.sandbox.report.comparisons_oracle``: a diagnostic, never fed back);
- ``seed``, ``raft``, ``dpo``: the judge seed set, RAFT's kept vs all RM scores, DPO's last validation statistics;
- ``wall_seconds``: per stage of ``almost.sandbox.self_rewarding``.
"""

from __future__ import annotations

import argparse
import json
import math
import statistics
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

import torch

from almost.chat import encode_prompt
from almost.evaluation.judge_agreement import judge_agreement
from almost.generation import Generation, SamplingConfig, generate
from almost.logprobs import continuation_logprobs
from almost.records import Comparison, Prompt, Responses, Turn, load_jsonl
from almost.sandbox.build import load_world
from almost.sandbox.oracle import score
from almost.sandbox.report import POLICY_SAMPLING, comparisons_oracle, last_scalars
from almost.scorers import JudgeScorer, resolve_template

SEEDS = (0, 1)  # sampling seeds of the policies' answers
JUDGE_QUERIES = 60  # held-out queries whose baseline answers (5 each) the judges score
# name -> (stage directory under runs/, the SFT model it started from; None: it is an SFT start itself)
POLICIES = {"sft_rmsp": ("sft_rmsp", None), "ppo": ("ppo", "sft_rmsp"), "dpo": ("dpo", "sft_rmsp"),
            "raft": ("sft_raft", "sft_rmsp"), "m1": ("self_rewarding/m1", None),
            "m2": ("self_rewarding/m2", "self_rewarding/m1"), "m3": ("self_rewarding/m3", "self_rewarding/m1")}
JUDGES = ("m1", "m2", "m3")


def mean_and_standard_error(values: Sequence[float]) -> tuple[float, float | None]:
    """Mean and standard error of the mean, ``stdev / sqrt(n)`` (sample standard deviation; None for n < 2)."""
    mean = statistics.fmean(values)
    return mean, statistics.stdev(values) / math.sqrt(len(values)) if len(values) > 1 else None


def load_lm(directory: Path):
    from almost.models import ModelSource, build_causal_lm, load_tokenizer

    source = ModelSource(path=str(directory))
    tokenizer = load_tokenizer(source)
    return build_causal_lm(source, tokenizer).eval(), tokenizer


@torch.no_grad()
def kl_estimate(policy, reference, prompts: Sequence[list[int]], answers: Sequence[Generation], pad_id: int,
                batch_size: int = 64) -> float:
    """Mean over the answers of ``log pi(y|x) - log ref(y|x)``, each summed over the answer's sampled tokens."""
    pairs = [(p, list(a.token_ids)) for p, a in zip(prompts, answers) if a.token_ids]
    gaps = []
    for start in range(0, len(pairs), batch_size):
        chunk = pairs[start:start + batch_size]
        args = ([p for p, _ in chunk], [c for _, c in chunk], pad_id)
        gaps += (continuation_logprobs(policy, *args) - continuation_logprobs(reference, *args)).tolist()
    return statistics.fmean(gaps)


def policy_section(runs: Path, world, queries: list[str], sampling: SamplingConfig) -> dict:
    results = {}
    for name, (stage, start) in POLICIES.items():
        model, tokenizer = load_lm(runs / stage / "hf")
        template = resolve_template(str(runs / stage / "hf"), None)
        prompts = [encode_prompt(tokenizer, template, [Turn("user", q)]) for q in queries]
        answers = {seed: generate(model, tokenizer, prompts, sampling, batch_size=64, seed=seed) for seed in SEEDS}
        per_seed = {seed: [score(q, a.text, world).total for q, a in zip(queries, answers[seed])] for seed in SEEDS}
        per_query = [statistics.fmean(scores) for scores in zip(*per_seed.values())]
        mean, se = mean_and_standard_error(per_query)
        results[name] = {"model": str(runs / stage / "hf"), "oracle": mean, "oracle_se": se,
                         "oracle_per_seed": {str(s): statistics.fmean(v) for s, v in per_seed.items()},
                         "mean_answer_chars": statistics.fmean(len(a.text) for a in answers[SEEDS[0]]),
                         "samples": [{"query": q, "answer": a.text} for q, a in zip(queries[:3], answers[SEEDS[0]])]}
        if start is not None:
            reference, _ = load_lm(runs / start / "hf")
            every = [a for seed in SEEDS for a in answers[seed]]
            results[name]["kl_to_start"] = kl_estimate(model, reference, prompts * len(SEEDS), every,
                                                       tokenizer.pad_token_id)
            results[name]["start"] = start
    return results


def judge_section(runs: Path, world, n_queries: int, max_new_tokens: int, prompt: str) -> dict:
    """M_1..M_3 as judges (judge prompt ``prompt``, as in the loop) of held-out baseline answers against the oracle
    (see the module docstring)."""
    records = [r for r in load_jsonl(runs / "baselines" / "responses.jsonl", Responses) if world.parse(r.prompt)]
    groups = [(r.prompt, [a for a in r.responses.values() if a.strip()]) for r in records[:n_queries]]
    groups = [(q, answers) for q, answers in groups if answers]
    gold = [[score(q, a, world).total for a in answers] for q, answers in groups]
    results = {}
    for name in JUDGES:
        judge = JudgeScorer(str(runs / POLICIES[name][0] / "hf"), samples=3, temperature=0.7, top_p=0.9,
                            max_new_tokens=max_new_tokens, batch_size=96, prompt=prompt)
        flat = judge.score([q for q, answers in groups for _ in answers], [a for _, answers in groups for a in answers])
        flat_iter = iter(flat)
        scores = [[next(flat_iter) for _ in answers] for _, answers in groups]
        results[name] = {**asdict(judge_agreement(scores, gold)), "unparseable_rate": judge.tally.unparseable_rate,
                         "mean_judge_score": judge.tally.mean_score, "judgements": judge.tally.total}
    return results


def iteration_section(runs: Path, world) -> dict:
    results = {}
    for t in (1, 2):
        pairs_file = runs / "self_rewarding" / "data" / f"pairs_{t}.jsonl"
        stats = json.loads(pairs_file.with_name(f"pairs_{t}.stats.json").read_text())
        pairs = load_jsonl(pairs_file, Comparison) if stats["pairs"] else []
        results[str(t)] = {**{k: stats[k] for k in ("prompts", "answers", "pairs", "ties", "outcomes", "judgements",
                                                      "unparseable_judgements", "judgement_histogram", "chosen_chars",
                                                      "rejected_chars")},
                           "score_chosen": stats["score_chosen"]["mean"], "score_rejected": stats["score_rejected"]["mean"],
                           "oracle_on_pairs": comparisons_oracle(world, pairs)}
    return results


def dpo_log(log_root: Path) -> dict:
    tags = ["val/loss", "val/reward_accuracy", "val/reward_margin"]
    return {tag: values[-1] for tag, values in last_scalars(log_root, tags).items()}


def build_report(runs: Path, sampling: SamplingConfig = POLICY_SAMPLING, query_limit: int | None = None,
                 judge_queries: int = JUDGE_QUERIES, judge_tokens: int = 64) -> dict:
    world = load_world(runs / "world")
    queries = [p.prompt for p in load_jsonl(runs / "world" / "heldout_queries.jsonl", Prompt)][:query_limit]
    out = runs / "self_rewarding"
    wall_file = out / "wall_seconds.json"
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    seed = json.loads((out / "data" / "seed.stats.json").read_text())
    return {
        "n_heldout_queries": len(queries), "n_distinct_heldout_queries": len(set(queries)), "seeds": list(SEEDS),
        "policies": policy_section(runs, world, queries, sampling),
        "judges": judge_section(runs, world, judge_queries, judge_tokens, seed["judge_prompt"]),
        "iterations": iteration_section(runs, world),
        "seed": seed,
        "raft": {k: v for k, v in json.loads((runs / "data" / "raft.stats.json").read_text()).items()
                 if k in ("queries", "demonstrations", "score_kept", "score_all_samples")},
        "dpo": {"synthetic": dpo_log(runs / "dpo"), "m2": dpo_log(out / "m2"), "m3": dpo_log(out / "m3")},
        "wall_seconds": {**wall, "total": round(sum(wall.values()), 1)},
    }


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


NAMES = {"sft_rmsp": "SFT on RMSP", "ppo": "PPO from SFT (RM reward)", "dpo": "DPO from SFT (synthetic comparisons)",
         "raft": "RAFT from SFT (best of 4 by the RM)", "m1": "M1: SFT on RMSP + judge examples",
         "m2": "M2: DPO of M1 on its own judgements", "m3": "M3: DPO of M2 on its own judgements"}


def markdown(r: dict) -> str:
    p, j, it = r["policies"], r["judges"], r["iterations"]
    lines = ["# Self-rewarding, DPO and RAFT on the sandbox world", "",
             f"Held-out queries: {r['n_heldout_queries']} ({r['n_distinct_heldout_queries']} distinct), answered "
             f"zero-shot with sampling seeds {r['seeds']}. Oracle scores in [0, 1]; +- one standard error over "
             "queries (per-query means over the seeds).", "",
             "## Policies (oracle)", "", "| policy | oracle | per seed | KL to its SFT start | answer chars |",
             "|---|---|---|---|---|",
             *[f"| {NAMES[k]} | {v['oracle']:.3f} +- {_f(v['oracle_se'])} | "
               f"{' / '.join(_f(x) for x in v['oracle_per_seed'].values())} | "
               f"{_f(v.get('kl_to_start'))}{' (' + v['start'] + ')' if v.get('start') else ''} | "
               f"{v['mean_answer_chars']:.0f} |" for k, v in p.items()], "",
             "## The models as judges (held-out baseline answers, against the oracle)", "",
             "| judge | pairwise acc. | 5-best | exact match | Spearman | Kendall tau | unparseable | mean score | "
             "answers (unjudged) |", "|---|---|---|---|---|---|---|---|---|",
             *[f"| {k.upper()} | {_f(v['pairwise_accuracy'])} | {_f(v['five_best_share'])} ({v['perfect_scores']}) | "
               f"{_f(v['exact_match'])} | {_f(v['spearman'])} | {_f(v['kendall_tau'])} | "
               f"{_f(v['unparseable_rate'])} | {_f(v['mean_judge_score'], 2)} | {v['answers']} ({v['unjudged']}) |"
               for k, v in j.items()], "",
             "## Self-rewarding iterations", "",
             "| t | prompts | pairs | ties | unparseable judgements | judge score chosen / rejected | "
             "chars chosen / rejected | oracle on pairs: agrees / ties / disagrees |", "|---|---|---|---|---|---|---|---|",
             *[f"| {t} | {v['prompts']} | {v['pairs']} | {v['ties']} | {v['unparseable_judgements']} of "
               f"{v['judgements']} | {_f(v['score_chosen'], 2)} / {_f(v['score_rejected'], 2)} | "
               f"{_f(v['chosen_chars'], 0)} / {_f(v['rejected_chars'], 0)} | "
               f"{_f(v['oracle_on_pairs']['agree'])} / {_f(v['oracle_on_pairs']['tie'])} / "
               f"{_f(v['oracle_on_pairs']['disagree'])} |" for t, v in it.items()], "",
             f"Judge seed set: {r['seed']['judge_examples']} oracle-labelled answers (points "
             f"{r['seed']['points_histogram']}), with {r['seed']['demonstrations']} RMSP demonstrations in M1's SFT "
             "data.", "",
             f"RAFT: {r['raft']['demonstrations']} demonstrations of {r['raft']['queries']} queries; RM score of the "
             f"kept answers {_f(r['raft']['score_kept']['mean'])}, of all samples "
             f"{_f(r['raft']['score_all_samples']['mean'])}.", "",
             "DPO, last validation: " + "; ".join(
                 f"{name} accuracy {_f(v.get('val/reward_accuracy'))}, margin {_f(v.get('val/reward_margin'))}"
                 for name, v in r["dpo"].items()) + ".", "",
             "## Wall-clock seconds", "", "| stage | s |", "|---|---|",
             *[f"| {k} | {v:.0f} |" for k, v in r["wall_seconds"].items()]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox")
    parser.add_argument("--answer-tokens", type=int, default=POLICY_SAMPLING.max_new_tokens)
    parser.add_argument("--queries", type=int, default=None, help="use only the first held-out queries")
    parser.add_argument("--judge-queries", type=int, default=JUDGE_QUERIES)
    parser.add_argument("--judge-tokens", type=int, default=64, help="longest judgement (as the loop's judge)")
    args = parser.parse_args()
    runs = Path(args.runs)
    report = build_report(runs, replace(POLICY_SAMPLING, max_new_tokens=args.answer_tokens), args.queries,
                          args.judge_queries, args.judge_tokens)
    out = runs / "self_rewarding"
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
