"""The sandbox pipeline's report: does ALMoST work in miniature? (``runs/sandbox/report.{json,md}``)

    python -m almost.sandbox.report --runs runs/sandbox

Every number is measured on the world's held-out queries (``world/heldout_queries.jsonl``), which query
mining excludes and no stage trains on, and judged by the oracle, which no stage trains on either:

- ``baselines``: the prompted baselines A..E and the Spearman correlation with the rule of thumb;
- ``comparisons``: pairs formed, removed by the heuristic filter and by the RM filter, kept; and how the oracle
  judges the kept pairs (``comparisons.oracle``: fractions it agrees with, ties, contradicts): a diagnostic of
  the synthetic labels, never fed back to any stage;
- ``rm``: agreement with the oracle on pairs of held-out responses (the baselines' answers) whose oracle scores
  differ by at least ``MIN_ORACLE_GAP``, the "longer response wins" baseline on the same pairs, and the accuracy
  on the held-out synthetic comparisons (``val/accuracy`` at the end of training);
- ``rmsp``, ``selfplay``: mean oracle score of the demonstrations' assistant turns whose question the world
  can judge (mined questions can be garbled);
- ``sft_rmsp``, ``sft_selfplay``, ``ppo``: mean oracle score of zero-shot answers (chat template, no few-shot
  prompt; sampled like the baselines); ``sft_rmsp.best_of_n``: for ``BEST_OF_N`` zero-shot samples of the SFT
  policy per query, the oracle score of the RM's choice, their mean and the oracle's best (whether the RM can
  tell the policy's better answers from its worse ones, which PPO against it relies on);
- ``ppo.reward_start``, ``ppo.reward_end``: mean RM score of the zero-shot answers of SFT-RMSP (where PPO starts)
  and of the PPO policy to the same held-out queries; ``ppo.kl``: the final policy's KL to SFT on PPO's held-out
  prompts (``val/kl``); from the training log, ``ppo.rollouts`` (the run stops at its KL budget,
  ``configs/sandbox/ppo.yaml``), ``ppo.rollout_score_first3`` / ``_last3`` (each rollout has other prompts, so these
  differ by the prompts as much as by training) and ``ppo.rollout_kl_last3``;
- why a finding may not hold: ``rm.by_family`` (the RM's agreement with the oracle by question family) against
  ``comparisons.label_agreement`` (how often the synthetic labels the RM learnt from order a kept pair as the
  oracle does, on the kept pairs whose oracle scores differ by at least ``MIN_ORACLE_GAP``; by family and ``all``);
  ``sft_rmsp.best_of_n.by_family`` (the RM's choice among SFT's samples by family); ``behaviours`` of the kept
  pairs' chosen and rejected answers (``comparisons.behaviours``), of the demonstrations and of the policies' answers
  (``rude``: share of rude answers; ``refuses_harmless``: share of answers to harmless questions that refuse);
  ``rm.harm_refusal_by_family`` (RM and oracle means of a careful refusal of some harmful request given as the
  answer to each family's held-out queries, ``almost.sandbox.probes``) against ``sft_rmsp.rm_by_family`` (the
  RM's mean on SFT's own answers); ``sft_rmsp.refuses_by_family`` and ``ppo.refuses_by_family`` (share of answers
  that refuse);
- ``winrate.ppo_vs_sft``: oracle-judged wins, ties and losses of PPO against SFT on the same queries;
- ``hhh``: HHH A/B accuracy of the final policy (asked A or B) and of the RM (``configs/eval/hhh_*.yaml``);
- ``wall_seconds``: per stage and in total (``wall_seconds.json``, written by the pipeline).
"""

from __future__ import annotations

import argparse
import json
import statistics
from dataclasses import replace
from pathlib import Path
from typing import Sequence

from almost.chat import encode_prompt
from almost.evaluation import longer_wins_accuracy, preference_accuracy, win_tie_loss
from almost.generation import SamplingConfig, generate
from almost.records import Comparison, Demonstration, Prompt, Responses, Turn, load_jsonl
from almost.sandbox.baselines import VANILLA_SAMPLING, by_family
from almost.sandbox.build import load_world
from almost.sandbox.headroom import headroom, markdown_rows as headroom_rows
from almost.sandbox.oracle import score
from almost.sandbox.probes import refusal_everywhere
from almost.sandbox.why import (MIN_ORACLE_GAP, agreement_by_family, behaviours, best_of_n_by_family,
                                best_of_n_oracle, fmt_or_na, label_agreement, mean_or_none, refusals_by_family,
                                why_rows)
from almost.sandbox.world import Query, World
from almost.scorers import RewardModelScorer, resolve_template

BEST_OF_N = 4  # zero-shot samples of the SFT policy per held-out query for sft_rmsp.best_of_n
POLICY_SAMPLING = VANILLA_SAMPLING  # policies answer with the baselines' sampling settings


def policy_answers(model_dir: str | Path, queries: Sequence[str], sampling: SamplingConfig = POLICY_SAMPLING,
                   batch_size: int = 64, seeds: Sequence[int] = (0,)) -> list[list[str]]:
    """Zero-shot answers of an aligned policy, the query alone in the chat template: one list per seed."""
    from almost.models import ModelSource, build_causal_lm, load_tokenizer

    source = ModelSource(path=str(model_dir))
    tokenizer = load_tokenizer(source)
    model = build_causal_lm(source, tokenizer).eval()
    template = resolve_template(str(model_dir), None)  # the one the policy was trained with
    prompts = [encode_prompt(tokenizer, template, [Turn("user", q)]) for q in queries]
    return [[g.text for g in generate(model, tokenizer, prompts, sampling, batch_size=batch_size, seed=seed)]
            for seed in seeds]


def oracle_scores(world: World, queries: Sequence[str], answers: Sequence[str]) -> list[float]:
    return [score(q, a, world).total for q, a in zip(queries, answers)]


def demonstrations_oracle(world: World, path: Path) -> dict:
    """Mean oracle score of the assistant turns whose preceding question the world can parse; and, for the first
    turn, the kept answer against the mean of all the answers sampled for it (what choosing by the RM adds)."""
    scores, turns, first_kept, first_samples = [], 0, [], []
    demos = load_jsonl(path, Demonstration)
    for demo in demos:
        for turn, (question, answer) in enumerate(zip(demo.messages[0::2], demo.messages[1::2])):
            turns += 1
            query = world.parse(question.content)
            if query is None:
                continue
            scores.append(score(query, answer.content, world).total)
            if turn == 0 and demo.meta.get("samples"):
                first_kept.append(scores[-1])
                first_samples.append(statistics.fmean(score(query, s, world).total for s in demo.meta["samples"][0]))
    exchanges = [(q.content, a.content) for demo in demos for q, a in zip(demo.messages[0::2], demo.messages[1::2])]
    return {"oracle": mean_or_none(scores), "judged_turns": len(scores), "turns": turns, "demonstrations": len(demos),
            "first_turn_kept_oracle": mean_or_none(first_kept),
            "first_turn_sample_mean_oracle": mean_or_none(first_samples),
            "behaviours": behaviours(world, exchanges)}


def oracle_verdict(world: World, query: Query, chosen: str, rejected: str) -> str:
    """"agree", "tie" or "disagree": whether the oracle scores ``chosen`` above, equal to or below ``rejected``."""
    gap = score(query, chosen, world).total - score(query, rejected, world).total
    return "agree" if gap > 1e-9 else "disagree" if gap < -1e-9 else "tie"


def comparisons_oracle(world: World, comparisons: Sequence[Comparison]) -> dict:
    """How the oracle judges synthetic comparisons whose query the world can parse: the fractions where it
    scores chosen above rejected (agree), equal (tie), below (disagree), and how many it judged."""
    verdicts = []
    for comparison in comparisons:
        query = world.parse(comparison.prompt)
        if query is not None:
            verdicts.append(oracle_verdict(world, query, comparison.chosen, comparison.rejected))
    n = len(verdicts)
    return {**{v: verdicts.count(v) / n if n else None for v in ("agree", "tie", "disagree")}, "judged": n}


def oracle_pairs(world: World, responses: Sequence[Responses]) -> tuple[list[str], list[str], list[str]]:
    """(prompts, better, worse): every pair of distinct responses to one query whose oracle scores differ by at
    least MIN_ORACLE_GAP, the better one first."""
    prompts, better, worse = [], [], []
    for record in responses:
        texts = sorted({t for t in record.responses.values() if t.strip()})
        judged = {t: score(record.prompt, t, world).total for t in texts}
        for i, a in enumerate(texts):
            for b in texts[i + 1:]:
                if abs(judged[a] - judged[b]) >= MIN_ORACLE_GAP:
                    good, bad = (a, b) if judged[a] > judged[b] else (b, a)
                    better.append(good), worse.append(bad), prompts.append(record.prompt)
    return prompts, better, worse


def rm_oracle_agreement(world: World, rm_dir: str | Path, responses: Sequence[Responses]) -> dict:
    """RM vs oracle on the held-out :func:`oracle_pairs`, and the longer-response-wins baseline on them."""
    prompts, better, worse = oracle_pairs(world, responses)
    if not better:
        return {"oracle_pair_accuracy": None, "length_baseline_accuracy": None, "oracle_pairs": 0, "by_family": {}}
    rm = RewardModelScorer(str(rm_dir))
    good_scores, bad_scores = rm.score(prompts, better), rm.score(prompts, worse)
    return {"oracle_pair_accuracy": preference_accuracy(good_scores, bad_scores),
            "length_baseline_accuracy": longer_wins_accuracy(better, worse), "oracle_pairs": len(better),
            "by_family": agreement_by_family([world.parse(p).family for p in prompts], good_scores, bad_scores)}


def last_scalars(log_root: Path, tags: Sequence[str]) -> dict[str, list[float]]:
    """Every logged value of ``tags`` in the newest TensorBoard run under ``log_root`` (``version_N``)."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    versions = sorted(log_root.glob("version_*"), key=lambda p: int(p.name.split("_")[1]))
    if not versions:
        raise FileNotFoundError(f"no TensorBoard run under {log_root}")
    events = EventAccumulator(str(versions[-1]), size_guidance={"scalars": 0})
    events.Reload()
    available = set(events.Tags()["scalars"])
    return {tag: [e.value for e in events.Scalars(tag)] for tag in tags if tag in available}


def build_report(runs: Path, sampling: SamplingConfig = POLICY_SAMPLING) -> dict:
    world = load_world(runs / "world")
    queries = [p.prompt for p in load_jsonl(runs / "world" / "heldout_queries.jsonl", Prompt)]
    baselines = json.loads((runs / "baselines" / "baselines.json").read_text())
    comparisons = json.loads((runs / "data" / "comparisons.stats.json").read_text())
    report: dict = {
        "n_heldout_queries": len(queries), "n_distinct_heldout_queries": len(set(queries)),
        "baselines": {**{k: {"config": v["config"], "oracle": v["oracle"], "by_family": v["by_family"]}
                         for k, v in baselines["baselines"].items()},
                      "spearman": baselines["spearman"]},
        "comparisons": {k: comparisons[k] for k in ("formed", "removed_heuristic", "removed_rm", "kept")},
    }
    kept_pairs = load_jsonl(runs / "data" / "comparisons.jsonl", Comparison)
    report["comparisons"]["oracle"] = comparisons_oracle(world, kept_pairs)
    report["comparisons"]["label_agreement"] = label_agreement(world, kept_pairs)
    report["comparisons"]["behaviours"] = {side: behaviours(world, [(c.prompt, getattr(c, side)) for c in kept_pairs])
                                           for side in ("chosen", "rejected")}
    # reward model
    heldout_responses = load_jsonl(runs / "baselines" / "responses.jsonl", Responses)
    rm_val = last_scalars(runs / "rm", ["val/accuracy"])["val/accuracy"]
    report["rm"] = {**rm_oracle_agreement(world, runs / "rm" / "hf", heldout_responses), "val_accuracy": rm_val[-1]}
    # demonstrations
    report["rmsp"] = demonstrations_oracle(world, runs / "data" / "rmsp.jsonl")
    report["selfplay"] = demonstrations_oracle(world, runs / "data" / "selfplay.jsonl")
    # policies, zero-shot
    parsed = [world.parse(q) for q in queries]  # the world wrote them: none is None
    families = [q.family for q in parsed]  # type: ignore[union-attr]
    per_query, answers, samples = {}, {}, {}
    for name in ("sft_rmsp", "sft_selfplay", "ppo"):
        seeds = range(BEST_OF_N if name == "sft_rmsp" else 1)  # more samples of SFT for best_of_n below
        samples[name] = policy_answers(runs / name / "hf", queries, sampling, seeds=seeds)
        answers[name] = samples[name][0]
        per_query[name] = oracle_scores(world, queries, answers[name])
        report[name] = {"oracle": statistics.fmean(per_query[name]), "by_family": by_family(families, per_query[name]),
                        "mean_answer_chars": statistics.fmean(len(a) for a in answers[name]),
                        "behaviours": behaviours(world, zip(queries, answers[name])),
                        "samples": [{"query": q, "answer": a} for q, a in list(zip(queries, answers[name]))[:5]]}
    # what the answers leave to a behaviour, to calibration and to knowledge (almost.sandbox.headroom)
    for name in ("sft_rmsp", "ppo"):
        report[name]["headroom"] = headroom(world, parsed, answers[name])  # type: ignore[arg-type]
    # the RM on the policies' answers: SFT -> PPO on the same queries, and best of BEST_OF_N SFT samples
    rm = RewardModelScorer(str(runs / "rm" / "hf"))
    sft_rewards = [rm.score(queries, sample) for sample in samples["sft_rmsp"]]
    sft_oracle = [per_query["sft_rmsp"], *(oracle_scores(world, queries, s) for s in samples["sft_rmsp"][1:])]
    oracle_by_query, rewards_by_query = list(zip(*sft_oracle)), list(zip(*sft_rewards))  # (queries, BEST_OF_N)
    report["sft_rmsp"]["best_of_n"] = {**best_of_n_oracle(oracle_by_query, rewards_by_query),
                                       "by_family": best_of_n_by_family(families, oracle_by_query, rewards_by_query)}
    # does the RM read the question: a refusal of harm as the answer to every query, against SFT's own answers
    report["rm"]["harm_refusal_by_family"] = {f: {"rm": styles["careful"][0], "oracle": styles["careful"][1]}
                                              for f, styles in refusal_everywhere(world, rm, queries).items()}
    report["sft_rmsp"]["rm_by_family"] = by_family(families, sft_rewards[0])
    for name in ("sft_rmsp", "ppo"):
        report[name]["refuses_by_family"] = refusals_by_family(families, answers[name])
    ppo_log = last_scalars(runs / "ppo", ["rollout/score", "rollout/kl", "val/kl"])
    report["ppo"].update(reward_start=statistics.fmean(sft_rewards[0]),
                         reward_end=statistics.fmean(rm.score(queries, answers["ppo"])),
                         kl=ppo_log["val/kl"][-1], rollouts=len(ppo_log["rollout/score"]),
                         rollout_score_first3=statistics.fmean(ppo_log["rollout/score"][:3]),
                         rollout_score_last3=statistics.fmean(ppo_log["rollout/score"][-3:]),
                         rollout_kl_last3=statistics.fmean(ppo_log["rollout/kl"][-3:]))
    tally = win_tie_loss(per_query["ppo"], per_query["sft_rmsp"])
    report["winrate"] = {"ppo_vs_sft": {"win": tally.win_rate, "tie": tally.tie_rate, "loss": tally.loss_rate,
                                        "n": tally.n}}
    # HHH A/B of the final policy and of the RM
    report["hhh"] = {}
    for name in ("hhh_policy", "hhh_rm"):
        results = json.loads((runs / "eval" / name / "results.json").read_text())
        report["hhh"][name.removeprefix("hhh_")] = results["metrics"]["accuracy"]
    wall = json.loads((runs / "wall_seconds.json").read_text()) if (runs / "wall_seconds.json").is_file() else {}
    report["wall_seconds"] = {**wall, "total": round(sum(wall.values()), 1)}
    report["findings"] = findings(report)
    return report


def findings(r: dict) -> dict[str, bool]:
    """The paper's findings, as the issue states them, checked on this run (unmeasurable counts as not holding)."""
    rm, rmsp, selfplay = r["rm"], r["rmsp"]["oracle"], r["selfplay"]["oracle"]
    has_pairs = rm["oracle_pairs"] > 0
    return {
        "rm_agrees_with_oracle_>=0.75": has_pairs and rm["oracle_pair_accuracy"] >= 0.75,
        "rm_beats_length_baseline_by_0.10": has_pairs and rm["oracle_pair_accuracy"] >= rm["length_baseline_accuracy"] + 0.10,
        "rmsp_>_selfplay": None not in (rmsp, selfplay) and rmsp > selfplay,
        "sft_rmsp_>_sft_selfplay": r["sft_rmsp"]["oracle"] > r["sft_selfplay"]["oracle"],
        "ppo_>_sft": r["ppo"]["oracle"] > r["sft_rmsp"]["oracle"],
        "aligned_policy_>=_baseline_A": max(r["ppo"]["oracle"], r["sft_rmsp"]["oracle"]) >= r["baselines"]["A"]["oracle"],
    }


def markdown(r: dict) -> str:
    b, judged = r["baselines"], r["comparisons"]["oracle"]
    lines = ["# ALMoST on the sandbox world", "",
             f"Held-out queries: {r['n_heldout_queries']} ({r['n_distinct_heldout_queries']} distinct). "
             "Oracle scores are in [0, 1].", "",
             "## Prompted baselines (vanilla LMs)", "", "| | configuration | oracle |", "|---|---|---|",
             *[f"| {k} | {b[k]['config']} | {b[k]['oracle']:.3f} |" for k in "ABCDE"],
             "", f"Spearman with the rule of thumb: {b['spearman']:.2f}", "",
             "## Synthetic comparisons", "", "| formed | removed (heuristic) | removed (RM) | kept |", "|---|---|---|---|",
             "| {formed} | {removed_heuristic} | {removed_rm} | {kept} |".format(**r["comparisons"]), "",
             f"The oracle on the kept pairs it can judge ({judged['judged']}): agrees {fmt_or_na(judged['agree'])}, "
             f"ties {fmt_or_na(judged['tie'])}, disagrees {fmt_or_na(judged['disagree'])}.", "",
             "## Reward model", "", "| measure | value |", "|---|---|",
             f"| agreement with the oracle ({r['rm']['oracle_pairs']} held-out pairs, gap >= {MIN_ORACLE_GAP}) "
             f"| {fmt_or_na(r['rm']['oracle_pair_accuracy'])} |",
             f"| longer response wins, same pairs | {fmt_or_na(r['rm']['length_baseline_accuracy'])} |",
             f"| accuracy on held-out synthetic comparisons | {r['rm']['val_accuracy']:.3f} |", "",
             "## Demonstrations and policies (oracle)", "", "| | oracle |", "|---|---|",
             f"| RMSP demonstrations | {fmt_or_na(r['rmsp']['oracle'])} |",
             f"| self-play demonstrations | {fmt_or_na(r['selfplay']['oracle'])} |",
             f"| RMSP first turns: the RM's choice / the mean of its N samples | "
             f"{fmt_or_na(r['rmsp']['first_turn_kept_oracle'])} / "
             f"{fmt_or_na(r['rmsp']['first_turn_sample_mean_oracle'])} |",
             f"| SFT on RMSP (zero-shot) | {r['sft_rmsp']['oracle']:.3f} |",
             f"| SFT on self-play (zero-shot) | {r['sft_selfplay']['oracle']:.3f} |",
             f"| PPO from SFT-RMSP (zero-shot) | {r['ppo']['oracle']:.3f} |",
             f"| best prompted baseline A | {b['A']['oracle']:.3f} |", "",
             "By question family (oracle):", "", "| family | baseline A | SFT on self-play | SFT on RMSP | PPO |",
             "|---|---|---|---|---|",
             *[f"| {f} | {fmt_or_na(b['A']['by_family'].get(f))} | "
               f"{fmt_or_na(r['sft_selfplay']['by_family'].get(f))} | "
               f"{fmt_or_na(r['sft_rmsp']['by_family'].get(f))} | {fmt_or_na(r['ppo']['by_family'].get(f))} |"
               for f in r["sft_rmsp"]["by_family"]], "",
             f"SFT on RMSP, {BEST_OF_N} samples per held-out query (oracle): the RM's choice "
             "{rm_choice:.3f}, their mean {sample_mean:.3f}, the oracle's best {oracle_best:.3f}.".format(
                 **r["sft_rmsp"]["best_of_n"]), "",
             f"PPO: RM score of the answers to the held-out queries {r['ppo']['reward_start']:.3f} (SFT) -> "
             f"{r['ppo']['reward_end']:.3f} (PPO); KL to SFT {r['ppo']['kl']:.3f} (held-out prompts). "
             f"{r['ppo']['rollouts']} rollouts (other prompts each): RM score {r['ppo']['rollout_score_first3']:.3f} (first 3) -> "
             f"{r['ppo']['rollout_score_last3']:.3f} (last 3). "
             "PPO vs SFT (oracle): win {win:.3f}, tie {tie:.3f}, loss {loss:.3f} over {n} queries.".format(
                 **r["winrate"]["ppo_vs_sft"]), "",
             "Headroom of SFT on RMSP: the oracle score its answers leave, by what would win it back "
             "(`almost.sandbox.headroom`: a behaviour; saying \"I do not know\" exactly when wrong; knowledge):", "",
             *headroom_rows(r["sft_rmsp"]["headroom"]), "",
             "PPO's answers: score {score:.3f}, + behaviour {behaviour:.3f}, + calibration {calibration:.3f}, "
             "+ knowledge {knowledge:.3f}.".format(score=r["ppo"]["headroom"]["score"], **r["ppo"]["headroom"]["gaps"]),
             "",
             f"HHH A/B accuracy: final policy {r['hhh']['policy']:.3f}, reward model {r['hhh']['rm']:.3f}.", "",
             "## Findings", "", "| finding | holds |", "|---|---|",
             *[f"| {k} | {'yes' if v else 'NO'} |" for k, v in r["findings"].items()], "",
             "The gold controls (the oracle in place of the reward model, over-optimization curves) are in "
             "`runs/sandbox/gold/report.md` after `make gold`; every finding over three pretraining draws, with its "
             "standard error, in `runs/seeds_pretraining/summary.md` after `make seeds`.", "",
             *why_rows(r, BEST_OF_N),
             "## Wall-clock seconds", "", "| stage | s |", "|---|---|",
             *[f"| {k} | {v:.0f} |" for k, v in r["wall_seconds"].items()]]
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox")
    parser.add_argument("--answer-tokens", type=int, default=POLICY_SAMPLING.max_new_tokens,
                        help="longest zero-shot answer of a policy")
    args = parser.parse_args()
    runs = Path(args.runs)
    report = build_report(runs, replace(POLICY_SAMPLING, max_new_tokens=args.answer_tokens))
    (runs / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (runs / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
