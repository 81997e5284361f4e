"""The report of ``make real-demo`` (``almost.real.pipeline``): ``runs/gemma/report.json`` and ``report.md``.

    python -m almost.real.report --runs runs/gemma

Sections: the time of every stage; the mined queries; the synthetic comparisons each post-validation filter kept,
with examples; the reward model's accuracy on held-out synthetic pairs (queries it never trained on) against the
longer-response-wins baseline; the RMSP demonstrations; PPO's training curve; the win rates of SFT and PPO against
vanilla Gemma prompted with our HHH demonstrations on Vicuna questions, judged by the reward model and by the
rubric LLM judge; perplexity on held-out prose (the alignment tax); and ten answers of each policy.
"""

from __future__ import annotations

import argparse
import json
import math
from pathlib import Path

from almost.evaluation import longer_wins_accuracy, preference_accuracy
from almost.feedback import HeuristicFilter
from almost.records import Comparison, Demonstration, Prompt, Responses, load_jsonl
from almost.sandbox.report import last_scalars
from almost.scorers import RewardModelScorer

EXAMPLES = 3
ANSWERS = 10


def _json(path: Path) -> dict:
    return json.loads(path.read_text()) if path.is_file() else {}


def _short(text: str, chars: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= chars else text[:chars - 3] + "..."


def comparisons_section(data: Path) -> dict:
    """What each post-validation step kept (the comparison job's statistics), and examples: kept pairs and a
    response dropped by each heuristic rule that dropped any."""
    stats = _json(data / "comparisons.stats.json")
    kept = load_jsonl(data / "comparisons.jsonl", Comparison)
    responses = load_jsonl(data / "responses.jsonl", Responses)
    heuristic, dropped = HeuristicFilter(), {}
    for record in responses:
        for config, text in record.responses.items():
            rule = heuristic.check(text)
            if rule is not None and rule not in dropped:
                dropped[rule] = {"query": record.prompt, "config": config, "response": text}
    return {"stats": stats, "mean_response_chars": _json(data / "responses.stats.json").get("mean_response_chars"),
            "kept_examples": [{"query": c.prompt, "chosen": c.chosen, "rejected": c.rejected, **c.meta}
                              for c in kept[:EXAMPLES]],
            "dropped_examples": dropped}


def reward_model_section(runs: Path) -> dict:
    """Accuracy of the reward model on the held-out pairs, with its binomial standard error, and the
    longer-response-wins baseline on the same pairs."""
    heldout = load_jsonl(runs / "data" / "comparisons_heldout.jsonl", Comparison)
    rm = RewardModelScorer(str(runs / "rm" / "hf" / "merged"))
    prompts = [c.prompt for c in heldout]
    chosen, rejected = rm.score(prompts, [c.chosen for c in heldout]), rm.score(prompts, [c.rejected for c in heldout])
    accuracy = preference_accuracy(chosen, rejected)
    n = len(heldout)
    return {"heldout_pairs": n, "heldout_queries": len(set(prompts)),
            "train_pairs": len(load_jsonl(runs / "data" / "comparisons_train.jsonl", Comparison)),
            "accuracy": accuracy, "accuracy_se": math.sqrt(accuracy * (1 - accuracy) / n),
            "longer_wins_accuracy": longer_wins_accuracy([c.chosen for c in heldout], [c.rejected for c in heldout])}


def rmsp_section(data: Path) -> dict:
    demos = load_jsonl(data / "rmsp.jsonl", Demonstration)
    return {"demonstrations": len(demos), "stats": _json(data / "rmsp.stats.json"),
            "examples": [[{"role": t.role, "content": t.content} for t in d.messages] for d in demos[:2]]}


def ppo_section(runs: Path) -> dict:
    """First and last values of PPO's rollout metrics (TensorBoard, ``runs/gemma/ppo``)."""
    try:
        scalars = last_scalars(runs / "ppo", ("rollout/score", "rollout/kl", "val/score", "val/kl"))
    except FileNotFoundError:
        return {}
    return {tag: {"first": values[0], "last": values[-1], "n": len(values)} for tag, values in scalars.items() if values}


def winrate_section(eval_dir: Path, name: str) -> dict:
    results = _json(eval_dir / f"winrate_{name}" / "results.json")
    rows = load_answers(eval_dir / f"winrate_{name}" / "answers.jsonl")
    return {"metrics": results.get("metrics", {}), "models": results.get("models", {}), "questions": len(rows)}


def load_answers(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()] if path.is_file() else []


def build_report(runs: Path) -> dict:
    data, eval_dir = runs / "data", runs / "eval"
    sft_rows, ppo_rows = (load_answers(eval_dir / f"winrate_{n}" / "answers.jsonl") for n in ("sft", "ppo"))
    queries = load_jsonl(data / "queries.jsonl", Prompt)
    return {
        "wall_seconds": _json(runs / "wall_seconds.json"),
        "queries": {"mined": len(queries), "examples": [p.prompt for p in queries[:5]]},
        "comparisons": comparisons_section(data),
        "reward_model": reward_model_section(runs),
        "rmsp": rmsp_section(data),
        "ppo": ppo_section(runs),
        "winrate": {name: winrate_section(eval_dir, name) for name in ("sft", "ppo")},
        "perplexity": {name: _json(eval_dir / f"perplexity_{name}" / "results.json").get("metrics", {})
                       .get("perplexity") for name in ("vanilla", "sft", "ppo")},
        "answers": [{"question": s["question"], "vanilla_prompted": s["answer_y"], "sft": s["answer_x"],
                     "ppo": p["answer_x"]} for s, p in zip(sft_rows[:ANSWERS], ppo_rows[:ANSWERS])],
    }


def _f(value, digits: int = 3) -> str:
    return "n/a" if value is None else f"{value:.{digits}f}" if isinstance(value, float) else str(value)


def markdown(r: dict) -> str:
    wall = r["wall_seconds"]
    lines = ["# ALMoST in miniature on Gemma 3 270M", "",
             "Made by `make real-demo` (`python -m almost.real.pipeline`); every number below is from this run.", "",
             "## Time per stage (s, 2 CPU cores)", "", "| stage | s |", "|---|---|",
             *[f"| {k} | {v:.0f} |" for k, v in wall.items()], f"| **total** | **{sum(wall.values()):.0f}** |", "",
             f"## Queries: {r['queries']['mined']} mined by Gemma 3 270M", "",
             *[f"- {q}" for q in r["queries"]["examples"]], ""]
    c = r["comparisons"]
    s = c["stats"]
    lines += ["## Synthetic comparisons", "", f"Rubric: `{s.get('rubric')}`", "",
              "| step | pairs |", "|---|---|", f"| formed by the rubric | {s.get('formed')} |",
              f"| removed: a response failed the heuristic filter | {s.get('removed_bad_response')} |",
              f"| removed: identical responses | {s.get('removed_identical')} |",
              f"| removed: length rule (mean - std/2) | {s.get('removed_length_rule')} |",
              f"| removed: as-is reward model (not run here) | {s.get('removed_rm')} |",
              f"| **kept** | **{s.get('kept')}** |", "",
              "Responses dropped by the heuristic filter, by rule: " + ", ".join(
                  f"{k.removeprefix('dropped/')} {v}" for k, v in s.items() if k.startswith("dropped/") and v), "",
              "Mean response length (characters) per configuration: " + ", ".join(
                  f"{k} {v:.0f}" for k, v in (c["mean_response_chars"] or {}).items()), "", "Kept pairs:", ""]
    for e in c["kept_examples"]:
        lines += [f"- **{_short(e['query'], 120)}**", f"  - chosen ({e['chosen_config']}): {_short(e['chosen'])}",
                  f"  - rejected ({e['rejected_config']}): {_short(e['rejected'])}"]
    lines += ["", "A response dropped by each rule:", ""]
    lines += [f"- {rule} ({e['config']}, to *{_short(e['query'], 80)}*): {_short(e['response'], 200)!r}"
              for rule, e in c["dropped_examples"].items()]
    rm = r["reward_model"]
    lines += ["", "## Reward model on held-out synthetic pairs", "",
              f"Trained on {rm['train_pairs']} pairs; {rm['heldout_pairs']} pairs of {rm['heldout_queries']} queries "
              "held out (the split is by query).", "", "| | accuracy |", "|---|---|",
              f"| reward model | {_f(rm['accuracy'])} ± {_f(rm['accuracy_se'])} (binomial SE) |",
              f"| longer response wins | {_f(rm['longer_wins_accuracy'])} |", ""]
    stats = r["rmsp"]["stats"]
    lines += [f"## RMSP: {r['rmsp']['demonstrations']} demonstrations (best of N = {stats.get('n_samples')} by the "
              "reward model)", "",
              f"Reward-model score of the kept answers: mean {_f((stats.get('rm_score_kept') or {}).get('mean'))}; of "
              f"all sampled answers: mean {_f((stats.get('rm_score_all_samples') or {}).get('mean'))}.", ""]
    for demo in r["rmsp"]["examples"]:
        lines += [f"- {t['role']}: {_short(t['content'], 200)}" for t in demo] + [""]
    if r["ppo"]:
        lines += ["## PPO against the reward model", "", "| metric | first | last | logged |", "|---|---|---|---|",
                  *[f"| {k} | {_f(v['first'])} | {_f(v['last'])} | {v['n']} |" for k, v in r["ppo"].items()], ""]
    lines += ["## Win rates against vanilla Gemma 3 270M prompted with 5 HHH demonstrations (Vicuna questions)", "",
              "| policy | judge | wins | ties | losses | win rate | mean policy | mean vanilla | unreadable |",
              "|---|---|---|---|---|---|---|---|---|"]
    for name, w in r["winrate"].items():
        m = w["metrics"]
        for judge in ("reward_model", "judge"):
            lines.append(f"| {name} | {judge} | {m.get(f'{judge}/win')} | {m.get(f'{judge}/tie')} | "
                         f"{m.get(f'{judge}/loss')} | {_f(m.get(f'{judge}/win_rate'))} | {_f(m.get(f'{judge}/mean_x'))} | "
                         f"{_f(m.get(f'{judge}/mean_y'))} | {m.get(f'{judge}/unparseable', '')} |")
    p = r["perplexity"]
    lines += ["", "Win rate = wins / questions judged (a tie is not a win). The LLM judge is SmolLM2-135M-Instruct "
              "with the additive 0-5 rubric, its reply started with `Score:` (configs/gemma/winrate.yaml); a judgement "
              "without a readable score leaves the question out of its row.", "",
              "## Alignment tax: perplexity on held-out prose (prompts/en/heldout_text.jsonl)", "",
              "| model | perplexity |", "|---|---|", *[f"| {k} | {_f(v, 2)} |" for k, v in p.items()], "",
              f"## {ANSWERS} answers per policy", ""]
    for a in r["answers"]:
        lines += [f"**{_short(a['question'], 200)}**", "", f"- vanilla, prompted: {_short(a['vanilla_prompted'])}",
                  f"- SFT: {_short(a['sft'])}", f"- PPO: {_short(a['ppo'])}", ""]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", type=Path, default=Path("runs/gemma"))
    args = parser.parse_args(argv)
    report = build_report(args.runs)
    (args.runs / "report.json").write_text(json.dumps(report, indent=2) + "\n")
    (args.runs / "report.md").write_text(markdown(report) + "\n")
    print(f"report: {args.runs / 'report.md'}")


if __name__ == "__main__":
    main()
