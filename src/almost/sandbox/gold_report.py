"""The report of ``python -m almost.sandbox.gold``: ``runs/sandbox/gold/report.{json,md}`` and ``best_of_n.png``.

    python -m almost.sandbox.gold_report --runs runs/sandbox

On the world's held-out queries (no stage trains on them), judged by the oracle:

- ``best_of_n``: ``SAMPLES`` zero-shot answers of SFT-RMSP per query, scored by the reward model and by the oracle;
  for N = 1, 2, 4, ..., ``SAMPLES``: the expected oracle score and RM score of the answer the RM picks among N, and
  the oracle score of the answer the oracle picks, each against KL = log N - (N - 1) / N
  (``almost.evaluation.overoptimization``), with standard errors over queries;
- ``rm_ceiling``: the reward model against two trained on oracle labels (``gold/rm_oracle``: the same pairs;
  ``gold/rm_policy``: pairs of SFT-RMSP's own samples) and one trained on the synthetic comparisons post-validated
  with the paper's length rule (``gold/rm_length_rule``; the sandbox's method leaves it out): agreement with the
  oracle on the main report's held-out pairs, validation accuracy, and the oracle score of each one's choice
  among N SFT samples;
- ``policies``: SFT on RMSP and PPO, each with the reward model and with the gold reward (the oracle selecting
  RMSP's demonstrations; the oracle as PPO's reward), PPO against the reward model past its KL budget, and gold PPO
  from the vanilla M model beside its start:
  oracle score (``SEEDS`` sampling seeds, per-query means, SE over queries), RM score, and KL to the start
  (SFT-RMSP, or vanilla M);
- ``demonstrations``: the oracle score of RMSP's demonstrations with the RM selecting, with the oracle selecting,
  and of plain self-play (no selection);
- ``ppo_training``: ``rollout/score`` of the first and last rollouts of each PPO run (its own reward on its
  training prompts: does PPO climb what it is given?), and each run's curve from its validations (held-out mined
  prompts, every few rollouts): ``val/kl``, ``val/score`` (its reward) and ``val/oracle_score`` (the oracle as an
  instrument, ``PPOModule(eval_scorers=...)``).
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path

from almost.chat import encode_prompt
from almost.evaluation.overoptimization import best_of_n_curve
from almost.generation import generate
from almost.records import Prompt, Responses, Turn, load_jsonl
from almost.sandbox.build import load_world
from almost.sandbox.report import (POLICY_SAMPLING, demonstrations_oracle, last_scalars, oracle_scores,
                                   rm_oracle_agreement)
from almost.sandbox.self_rewarding_report import kl_estimate, load_lm, mean_and_standard_error
from almost.scorers import RewardModelScorer, resolve_template

SAMPLES = 16  # answers of SFT-RMSP per held-out query for the best-of-N curves
SEEDS = (0, 1)  # sampling seeds of the policies' answers
# name -> (stage directory under runs/, the model its KL is measured to)
POLICIES = {"sft_rmsp": ("sft_rmsp", "sft_rmsp"), "sft_rmsp_gold": ("gold/sft_rmsp", "sft_rmsp"),
            "ppo": ("ppo", "sft_rmsp"), "ppo_rm_long": ("gold/ppo_rm_long", "sft_rmsp"),
            "ppo_gold": ("gold/ppo", "sft_rmsp"),
            "vanilla_m": ("pretrain_m", "pretrain_m"), "ppo_gold_vanilla": ("gold/ppo_vanilla", "pretrain_m")}
CURVE = ("val/kl", "val/score", "val/oracle_score")  # PPO's validations, in order
# name -> (stage directory under runs/, its training pairs): the method's RM and its two gold ceilings
REWARD_MODELS = {"rm": ("rm", "data/comparisons.jsonl"),
                 "rm_oracle": ("gold/rm_oracle", "gold/data/comparisons_oracle.jsonl"),
                 "rm_policy": ("gold/rm_policy", "gold/data/policy_pairs.jsonl"),
                 "rm_length_rule": ("gold/rm_length_rule", "gold/data/comparisons_length_rule.jsonl")}
RM_NAMES = {"rm": "synthetic comparisons (the method's RM)", "rm_oracle": "the same pairs, ordered by the oracle",
            "rm_policy": "SFT-RMSP's own samples, ordered by the oracle",
            "rm_length_rule": "the synthetic comparisons with the paper's length rule (no oracle)"}
NAMES = {"sft_rmsp": "SFT on RMSP (RM selects)", "sft_rmsp_gold": "SFT on RMSP (oracle selects)",
         "ppo": "PPO from SFT (RM reward, KL budget)", "ppo_rm_long": "PPO from SFT (RM reward, no KL budget)",
         "ppo_gold": "PPO from SFT (oracle reward)",
         "vanilla_m": "vanilla M, zero-shot", "ppo_gold_vanilla": "PPO from vanilla M (oracle reward)"}


def sample_answers(directory: Path, queries: list[str], seeds):
    """The policy at ``directory`` (model, tokenizer), its encoded prompts, and its zero-shot answers per seed."""
    model, tokenizer = load_lm(directory)
    template = resolve_template(str(directory), None)
    prompts = [encode_prompt(tokenizer, template, [Turn("user", q)]) for q in queries]
    answers = {s: generate(model, tokenizer, prompts, POLICY_SAMPLING, batch_size=64, seed=s) for s in seeds}
    return model, tokenizer, prompts, answers


def sft_samples(runs: Path, world, queries: list[str], samples: int) -> tuple[list[list[str]], list[list[float]]]:
    """``samples`` zero-shot answers of SFT-RMSP per query and their oracle scores, each ``(queries, samples)``."""
    *_, answers = sample_answers(runs / "sft_rmsp" / "hf", queries, range(samples))
    texts = [[answers[s][i].text for s in range(samples)] for i in range(len(queries))]
    return texts, [oracle_scores(world, [q] * samples, row) for q, row in zip(queries, texts)]


def rm_scores(rm: RewardModelScorer, queries: list[str], texts: list[list[str]]) -> list[list[float]]:
    """The reward model's score of every answer of ``texts`` ``(queries, samples)``, in the same shape."""
    samples = len(texts[0])
    flat = rm.score([q for q in queries for _ in range(samples)], [a for row in texts for a in row])
    return [flat[i * samples:(i + 1) * samples] for i in range(len(queries))]


def sample_counts(samples: int) -> list[int]:
    return [n for n in (1, 2, 4, 8, 16, 32, 64) if n <= samples]


def best_of_n_section(queries: list[str], texts: list[list[str]], gold: list[list[float]],
                      rm: RewardModelScorer) -> dict:
    rewards, samples = rm_scores(rm, queries, texts), len(texts[0])
    ns = sample_counts(samples)
    return {"samples": samples, "queries": len(queries),
            "rm_selects": {"oracle": best_of_n_curve(rewards, gold, ns),
                           "rm": best_of_n_curve(rewards, rewards, ns)},
            "oracle_selects": {"oracle": best_of_n_curve(gold, gold, ns), "rm": best_of_n_curve(gold, rewards, ns)}}


def rm_ceiling_section(runs: Path, world, queries: list[str], texts: list[list[str]], gold: list[list[float]]) -> dict:
    """Each reward model of ``REWARD_MODELS``: its training pairs, validation accuracy, agreement with the oracle on
    the held-out pairs of the main report (the baselines' answers), and the oracle score of its choice among N of
    SFT-RMSP's samples (best-of-N, as in ``best_of_n``)."""
    heldout = load_jsonl(runs / "baselines" / "responses.jsonl", Responses)
    results = {}
    for name, (stage, pairs) in REWARD_MODELS.items():
        directory = runs / stage / "hf"
        rewards = rm_scores(RewardModelScorer(str(directory)), queries, texts)
        with open(runs / pairs, encoding="utf-8") as f:
            n_pairs = sum(1 for line in f if line.strip())
        results[name] = {**rm_oracle_agreement(world, directory, heldout), "training_pairs": n_pairs,
                         "val_accuracy": last_scalars(runs / stage, ["val/accuracy"])["val/accuracy"][-1],
                         "best_of_n_oracle": best_of_n_curve(rewards, gold, sample_counts(len(texts[0])))}
    return results


def policy_section(runs: Path, world, queries: list[str], rm: RewardModelScorer) -> dict:
    references = {start: load_lm(runs / start / "hf")[0] for _, start in POLICIES.values()}
    results = {}
    for name, (stage, start) in POLICIES.items():
        model, tokenizer, prompts, answers = sample_answers(runs / stage / "hf", queries, SEEDS)
        per_seed = {s: oracle_scores(world, queries, [a.text for a in answers[s]]) for s in SEEDS}
        mean, se = mean_and_standard_error([statistics.fmean(x) for x in zip(*per_seed.values())])
        every = [a for s in SEEDS for a in answers[s]]
        results[name] = {"model": str(runs / stage / "hf"), "oracle": mean, "oracle_se": se,
                         "rm": statistics.fmean(rm.score(queries, [a.text for a in answers[SEEDS[0]]])),
                         "kl_to_start": kl_estimate(model, references[start], prompts * len(SEEDS), every,
                                                    tokenizer.pad_token_id), "start": start,
                         "mean_answer_chars": statistics.fmean(len(a.text) for a in answers[SEEDS[0]])}
    return results


def ppo_training(runs: Path) -> dict:
    results = {}
    for name, stage in (("ppo", "ppo"), ("ppo_rm_long", "gold/ppo_rm_long"), ("ppo_gold", "gold/ppo"),
                        ("ppo_gold_vanilla", "gold/ppo_vanilla")):
        logged = last_scalars(runs / stage, ["rollout/score", *CURVE])
        scores = logged["rollout/score"]
        results[name] = {"rollout_score_first3": statistics.fmean(scores[:3]),
                         "rollout_score_last3": statistics.fmean(scores[-3:]), "rollouts": len(scores),
                         "curve": {tag.removeprefix("val/"): logged.get(tag, []) for tag in CURVE}}
    return results


def build_report(runs: Path, query_limit: int | None = None, samples: int = SAMPLES) -> dict:
    world = load_world(runs / "world")
    queries = [p.prompt for p in load_jsonl(runs / "world" / "heldout_queries.jsonl", Prompt)][:query_limit]
    rm = RewardModelScorer(str(runs / "rm" / "hf"))
    wall_file = runs / "gold" / "wall_seconds.json"
    wall = json.loads(wall_file.read_text()) if wall_file.is_file() else {}
    texts, gold = sft_samples(runs, world, queries, samples)
    return {
        "n_heldout_queries": len(queries), "seeds": list(SEEDS),
        "best_of_n": best_of_n_section(queries, texts, gold, rm),
        "rm_ceiling": rm_ceiling_section(runs, world, queries, texts, gold),
        "policies": policy_section(runs, world, queries, rm),
        "demonstrations": {name: demonstrations_oracle(world, path)["oracle"] for name, path in (
            ("rm_selects", runs / "data" / "rmsp.jsonl"), ("oracle_selects", runs / "gold" / "data" / "rmsp.jsonl"),
            ("no_selection", runs / "data" / "selfplay.jsonl"))},
        "ppo_training": ppo_training(runs),
        "wall_seconds": {**wall, "total": round(sum(wall.values()), 1)},
    }


def plot(report: dict, path: Path) -> None:
    """Against KL: the held-out oracle score (left) and RM score (middle) of best-of-N on SFT-RMSP and of the PPO
    runs; right, each PPO run's validations (held-out mined prompts: another mix, so another scale)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    bon, pol = report["best_of_n"], report["policies"]
    fig, (gold_ax, rm_ax, ppo_ax) = plt.subplots(1, 3, figsize=(15, 4))
    for ax, measure, label in ((gold_ax, "oracle", "held-out oracle score"), (rm_ax, "rm", "RM score")):
        for selector, style in (("rm_selects", "o-"), ("oracle_selects", "s--")):
            rows = bon[selector][measure]
            ax.errorbar([r["kl"] for r in rows], [r["mean"] for r in rows], yerr=[r["se"] or 0 for r in rows],
                        fmt=style, capsize=2, label=f"best-of-N, {selector.replace('_', ' ')}")
        for name, marker in (("ppo", "^"), ("ppo_rm_long", "<"), ("ppo_gold", "v")):
            ax.plot([pol[name]["kl_to_start"]], [pol[name][measure]], marker, markersize=9, label=NAMES[name])
        ax.set(xlabel="KL to SFT-RMSP (nats)", ylabel=label)
    for name, style in (("ppo_rm_long", "<-"), ("ppo", "^-"), ("ppo_gold", "v-"), ("ppo_gold_vanilla", "D-")):
        curve = report["ppo_training"][name]["curve"]
        if curve["oracle_score"] and len(curve["oracle_score"]) == len(curve["kl"]):
            ppo_ax.plot(curve["kl"], curve["oracle_score"], style, label=NAMES[name])
    ppo_ax.set(xlabel="KL to its start (nats)", ylabel="oracle score, PPO validations")
    for ax in (gold_ax, rm_ax, ppo_ax):
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=100)
    plt.close(fig)


def _f(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}"


def _choice(curve: list[dict], n: int) -> str:
    row = next((row for row in curve if row["n"] == n), None)
    return "n/a" if row is None else f"{row['mean']:.3f} +- {_f(row['se'])}"


def markdown(r: dict) -> str:
    bon, pol, demo, ppo = r["best_of_n"], r["policies"], r["demonstrations"], r["ppo_training"]
    rows = zip(bon["rm_selects"]["oracle"], bon["rm_selects"]["rm"], bon["oracle_selects"]["oracle"])
    return "\n".join([
        "# Gold controls on the sandbox world", "",
        f"Held-out queries: {r['n_heldout_queries']}. The oracle is the scorer of the gold rows only (an instrument);"
        " +- one standard error over queries.", "",
        f"## Best-of-N on SFT-RMSP ({bon['samples']} samples per query)", "", "![best-of-N](best_of_n.png)", "",
        "| N | KL | RM selects: oracle | RM selects: RM score | oracle selects: oracle |", "|---|---|---|---|---|",
        *[f"| {a['n']} | {a['kl']:.3f} | {a['mean']:.3f} +- {_f(a['se'])} | {b['mean']:.3f} +- {_f(b['se'])} | "
          f"{c['mean']:.3f} +- {_f(c['se'])} |" for a, b, c in rows], "",
        "## The reward model's ceiling: trained on oracle labels, and with the paper's length rule", "",
        "| reward model trained on | pairs | val accuracy | agreement with the oracle (held-out) | longer wins | "
        "its choice of 4 SFT samples (oracle) | of 16 |", "|---|---|---|---|---|---|---|",
        *[f"| {RM_NAMES[k]} | {v['training_pairs']} | {_f(v['val_accuracy'])} | {_f(v['oracle_pair_accuracy'])} "
          f"({v['oracle_pairs']} pairs) | {_f(v['length_baseline_accuracy'])} | "
          f"{_choice(v['best_of_n_oracle'], 4)} | {_choice(v['best_of_n_oracle'], 16)} |"
          for k, v in r["rm_ceiling"].items()], "",
        "## Policies: the reward model against the gold reward", "",
        "| policy | oracle | RM score | KL to its start | answer chars |", "|---|---|---|---|---|",
        *[f"| {NAMES[k]} | {v['oracle']:.3f} +- {_f(v['oracle_se'])} | {v['rm']:.3f} | {v['kl_to_start']:.3f} "
          f"({v['start']}) | {v['mean_answer_chars']:.0f} |" for k, v in pol.items()], "",
        f"RMSP demonstrations (oracle): RM selects {_f(demo['rm_selects'])}, oracle selects "
        f"{_f(demo['oracle_selects'])}, no selection (self-play) {_f(demo['no_selection'])}.", "",
        "PPO's own reward on its training rollouts (first 3 -> last 3): " + "; ".join(
            f"{NAMES[k]} {v['rollout_score_first3']:.3f} -> {v['rollout_score_last3']:.3f}" for k, v in ppo.items())
        + ".", "",
        "PPO during training (validations on held-out mined prompts):", "",
        "| run | val/kl | val/score (its reward) | val/oracle_score |", "|---|---|---|---|",
        *[f"| {NAMES[k]} | {' / '.join(f'{x:.3f}' for x in v['curve']['kl'])} | "
          f"{' / '.join(f'{x:.3f}' for x in v['curve']['score'])} | "
          f"{' / '.join(f'{x:.3f}' for x in v['curve']['oracle_score'])} |" for k, v in ppo.items()], "",
        "## Wall-clock seconds", "", "| stage | s |", "|---|---|",
        *[f"| {k} | {v:.0f} |" for k, v in r["wall_seconds"].items()], ""])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox")
    parser.add_argument("--queries", type=int, default=None, help="use only the first held-out queries")
    parser.add_argument("--samples", type=int, default=SAMPLES, help="SFT answers per query for best-of-N")
    args = parser.parse_args()
    runs = Path(args.runs)
    report = build_report(runs, args.queries, args.samples)
    out = runs / "gold"
    out.mkdir(parents=True, exist_ok=True)
    plot(report, out / "best_of_n.png")
    (out / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (out / "report.md").write_text(markdown(report))
    print(markdown(report))


if __name__ == "__main__":
    main()
