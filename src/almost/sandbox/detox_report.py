"""``detox.json`` and ``detox.md``: the adapter studies' tables (``almost.sandbox.detox``)."""

from __future__ import annotations

import json
from pathlib import Path

BASE_NAMES = {"sft": "the SFT-RMSP policy", "m": "vanilla M (zero-shot, chat template)"}
KIND_NAMES = {"lora": "LoRA", "ia3": "(IA)3"}


def cell(metric: dict, percent: bool = False) -> str:
    """``mean ± se_queries (se_seeds)``, as percentages when ``percent``; ``-`` when the metric applied nowhere."""
    if metric["mean"] is None:
        return "-"
    scale, digits = (100.0, 1) if percent else (1.0, 3)

    def fmt(value: float | None) -> str:
        return "n/a" if value is None else f"{scale * value:.{digits}f}"

    return f"{fmt(metric['mean'])} ± {fmt(metric['se_queries'])} ({fmt(metric['se_seeds'])})"


def negation_table(group: dict) -> list[str]:
    lines = ["| point | lambda | rude % | harmful complied % | oracle score | perplexity | ppl increase | picked |",
             "|---|---|---|---|---|---|---|---|"]
    for p in group["points"]:
        m = p["metrics"]
        lam = "" if p["lambda"] is None else f"{p['lambda']:g}"
        picked = "yes" if p["lambda"] is not None and p["lambda"] == group["picked_lambda"] else ""
        lines.append(f"| {p['label']} | {lam} | {cell(m['rude'], True)} | {cell(m['complied'], True)} | "
                     f"{cell(m['score'])} | {p['perplexity']:.3f} | {p['ppl_increase']:+.3f} | {picked} |")
    return lines


def addition_table(study: dict) -> list[str]:
    lines = ["| point | lambda (helpful) | helpful score | harmless score | honest score | all queries | rude % | "
             "harmful complied % | perplexity |", "|---|---|---|---|---|---|---|---|---|"]
    for p in study["points"]:
        m = p["metrics"]
        lam = "" if p["lambda"] is None else f"{p['lambda']:g}"
        lines.append(f"| {p['label']} | {lam} | {cell(m['score_helpful'])} | {cell(m['score_harmless'])} | "
                     f"{cell(m['score_honest'])} | {cell(m['score'])} | {cell(m['rude'], True)} | "
                     f"{cell(m['complied'], True)} | {p['perplexity']:.3f} |")
    return lines


def markdown(report: dict) -> str:
    settings, data = report["settings"], report["data"]
    lines = ["# Adapter arithmetic on the sandbox world", "",
             f"`{report['command']}` ({report['wall_seconds']:.0f} s).", "",
             f"{data['queries']} held-out queries ({data['harmful_queries']} harmful), answered zero-shot in the chat "
             f"template with sampling seeds {', '.join(map(str, settings['seeds']))} (temperature "
             f"{settings['sampling']['temperature']:g}, top-p {settings['sampling']['top_p']:g}, up to "
             f"{settings['sampling']['max_new_tokens']} tokens), judged by the oracle. Perplexity: "
             f"{data['ppl_documents']} held-out corpus documents in the clean styles "
             f"({', '.join(settings['clean_styles'])}). Cells: mean ± standard error over queries (standard error "
             "over the sampling seeds). *rude*: the oracle finds a rude word (`complete_polite` 0 on a non-empty "
             "answer); *harmful complied*: share of harmful requests whose answer gives instructions "
             "(`oracle.complies`).", "",
             f"Demonstrations: {json.dumps(data['demonstrations'])}.", ""]
    if report["negation"]:
        lines += ["## Negating a toxic adapter", "",
                  "The toxic adapter is trained on rude answers and compliance with harmful requests and negated "
                  "from the model named with strength lambda by `almost.pem` (LoRA `{A, -lambda B}`; (IA)3 "
                  "`l -> 1 - lambda (l - 1)`). *added*: the toxic adapter itself (+1); *naive -l*: the negative "
                  "control, (IA)3 negated as `-l` (`almost.pem.ops.naive_negate`), beside *negate 1* (`2 - l`). "
                  f"*picked*: the largest lambda whose perplexity rises by at most {settings['max_ppl_increase']:g} "
                  "over lambda 0 (the paper's rule).", ""]
        for name, group in report["negation"].items():
            lines += [f"### {KIND_NAMES[group['kind']]} trained on {BASE_NAMES[group['adapter_base']]}, negated "
                      f"from {BASE_NAMES[group['base']]} (`{name}`)", "",
                      f"Picked lambda: {group['picked_lambda']:g}.", "", *negation_table(group), ""]
    if report["addition"]:
        lines += ["## Adding a helpful and a harmless adapter", "",
                  "LoRA adapters trained from vanilla M on the RMSP demonstrations of helpful queries and of "
                  "harmful queries (harmless aspect) separately, merged as `lambda helpful + (1 - lambda) harmless` "
                  "(almost.pem, paper mode: element-wise on A and B), against one adapter trained on both subsets "
                  "(*both*) and M without an adapter. Best lambda by the oracle score on all held-out queries "
                  f"(chosen on the test queries, so optimistic): {report['addition']['best_lambda_by_score']:g}.", "",
                  *addition_table(report["addition"]), ""]
    lines += ["## Adapters", "", "| adapter | directory | training seconds |", "|---|---|---|"]
    for name, info in report["adapters"].items():
        seconds = "kept" if info["kept"] else f"{info['seconds']:.0f}"
        lines.append(f"| {name} | `{info['path']}` | {seconds} |")
    return "\n".join(lines) + "\n"


def write_report(out: Path, report: dict) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "detox.json").write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    (out / "detox.md").write_text(markdown(report), encoding="utf-8")
