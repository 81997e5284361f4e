"""The sandbox pipelines again with other seeds, and the report's numbers as means with standard errors over seeds.

    python -m almost.sandbox.seeds --seeds 1 2                   # after `make demo`: every stage after pretraining
    python -m almost.sandbox.seeds --seeds 1 2 --also self_rewarding gold  # ... and these pipelines after it
    python -m almost.sandbox.seeds --summary                     # only the summary of what has run
    python -m almost.sandbox.seeds --seeds 1 2 --pretraining     # ... each seed pretrains its own vanilla models

Seed 0 is ``make demo``'s own run (``runs/sandbox``). Seed ``s`` runs in a workspace of its own,
``runs/seeds/seed_<s>/``, laid out as the repository so that the same configs and stage lists work there unchanged:
``configs`` and ``train.py`` are links to the repository's; ``runs/sandbox/world`` and ``runs/sandbox/pretrain_*``
are links to ``make demo``'s (the world and the vanilla models are shared: pretraining is not reseeded); every
other stage runs there with seed ``s``: ``--seed_everything=s`` for training, also ``--model.init_args.seed=s`` for
generation jobs (the sampling seed), ``--seed=s`` for the prompted baselines. Everything else (data sizes,
settings, the held-out queries and the report's own sampling seeds) is the same, so seeds differ only in the
randomness of training and sampling. A workspace resumes like ``runs/sandbox`` (stages up to date are skipped).

With ``--pretraining`` only the world is shared: seed ``s`` also pretrains S, M and L with ``--seed_everything=s``,
in ``runs/seeds_pretraining/seed_<s>/`` (its own summary there). Its standard errors hold the variance of the
vanilla models too, which the default leaves out (FINDINGS.md: one pretraining draw can turn a finding around).

The summary (``runs/seeds/summary.{json,md}``) reads ``report.json`` of every seed (and the reports of ``--also``'s
pipelines where present): each number as the mean over seeds with its standard error (sample standard deviation
over sqrt(seeds)); and each finding of ``FINDINGS`` as a per-seed difference ``a - b - margin``, whose mean must
exceed twice its standard error to hold.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from almost.sandbox import gold, pipeline, self_rewarding
from almost.sandbox.pipeline import RUNS, Stage
from almost.sandbox.self_rewarding_report import mean_and_standard_error

SEEDS_ROOT = Path("runs/seeds")
PRETRAINING_ROOT = Path("runs/seeds_pretraining")  # --pretraining: each seed's own vanilla models
SHARED = ("world", "pretrain_s", "pretrain_m", "pretrain_l")  # make demo's, linked into every workspace
# name -> (value a, value b or a number, margin): the finding holds when mean(a - b - margin) > 2 SE over seeds
FINDINGS_MAIN = {
    "rm_agrees_with_oracle_>=0.75": ("rm.oracle_pair_accuracy", 0.75, 0.0),
    "rm_beats_length_baseline_by_0.10": ("rm.oracle_pair_accuracy", "rm.length_baseline_accuracy", 0.10),
    "rm_choice_of_4_>_their_mean": ("sft_rmsp.best_of_n.rm_choice", "sft_rmsp.best_of_n.sample_mean", 0.0),
    "rmsp_>_selfplay": ("rmsp.oracle", "selfplay.oracle", 0.0),
    "sft_rmsp_>_sft_selfplay": ("sft_rmsp.oracle", "sft_selfplay.oracle", 0.0),
    "ppo_>_sft": ("ppo.oracle", "sft_rmsp.oracle", 0.0),
    "ppo_>_sft_on_format_questions": ("ppo.by_family.format", "sft_rmsp.by_family.format", 0.0),
    "ppo_>_sft_on_clarify_questions": ("ppo.by_family.clarify", "sft_rmsp.by_family.clarify", 0.0),
    "baselines_keep_the_rule_of_thumb_(spearman_>=_0.9)": ("baselines.spearman", 0.9, 0.0),
    # measured causes (the report's "Why"): the RM scores a refusal of harm above SFT's own answers to unknowable
    # questions, and PPO refuses more of them than SFT does
    "cause:_rm_prefers_a_harm_refusal_to_sfts_answers_on_unknowable": ("rm.harm_refusal_by_family.unknowable.rm",
                                                                        "sft_rmsp.rm_by_family.unknowable", 0.0),
    "cause:_ppo_refuses_more_unknowable_questions_than_sft": ("ppo.refuses_by_family.unknowable",
                                                              "sft_rmsp.refuses_by_family.unknowable", 0.0),
    # and among SFT's samples to an unknowable question its choice scores below their mean
    "cause:_rm_choice_of_4_<_their_mean_on_unknowable": ("sft_rmsp.best_of_n.by_family.unknowable.sample_mean",
                                                         "sft_rmsp.best_of_n.by_family.unknowable.rm_choice", 0.0),
}
FINDINGS_GOLD = {
    "gold_ppo_>_sft_by_0.05": ("policies.ppo_gold.oracle", "policies.sft_rmsp.oracle", 0.05),
    "gold_ppo_>_rm_ppo": ("policies.ppo_gold.oracle", "policies.ppo.oracle", 0.0),
    "rm_ppo_at_its_kl_budget_>_past_it": ("policies.ppo.oracle", "policies.ppo_rm_long.oracle", 0.0),
    "gold_ppo_from_vanilla_m_>_vanilla_m_by_0.05": ("policies.ppo_gold_vanilla.oracle", "policies.vanilla_m.oracle",
                                                    0.05),
    "gold_rmsp_demonstrations_>_rm_rmsp": ("demonstrations.oracle_selects", "demonstrations.rm_selects", 0.0),
    "rm_rmsp_demonstrations_>_no_selection": ("demonstrations.rm_selects", "demonstrations.no_selection", 0.0),
    "sft_on_gold_rmsp_>_sft_rmsp": ("policies.sft_rmsp_gold.oracle", "policies.sft_rmsp.oracle", 0.0),
    "rm_best_of_4_>_best_of_1": ("best_of_n.rm_selects.oracle.2.mean", "best_of_n.rm_selects.oracle.0.mean", 0.0),
    "rm_best_of_16_>_best_of_1": ("best_of_n.rm_selects.oracle.4.mean", "best_of_n.rm_selects.oracle.0.mean", 0.0),
    "rm_on_oracle_labels_agrees_more_than_rm": ("rm_ceiling.rm_oracle.oracle_pair_accuracy",
                                                "rm_ceiling.rm.oracle_pair_accuracy", 0.0),
    # the paper's length rule, which the sandbox's comparisons leave out (no oracle): what it costs the RM
    "rm_>_rm_with_the_length_rule": ("rm_ceiling.rm.oracle_pair_accuracy",
                                     "rm_ceiling.rm_length_rule.oracle_pair_accuracy", 0.0),
    "rm_on_policy_pairs_best_of_4_>_best_of_1": ("rm_ceiling.rm_policy.best_of_n_oracle.2.mean",
                                                 "rm_ceiling.rm_policy.best_of_n_oracle.0.mean", 0.0),
}
FINDINGS_SELF_REWARDING = {
    **{f"{name}_>_sft_rmsp": (f"policies.{name}.oracle", "policies.sft_rmsp.oracle", 0.0)
       for name in ("ppo", "dpo", "raft", "m1")},
    "m2_>_m1": ("policies.m2.oracle", "policies.m1.oracle", 0.0),
    "m3_>_m1": ("policies.m3.oracle", "policies.m1.oracle", 0.0),
    "m3_>_m2": ("policies.m3.oracle", "policies.m2.oracle", 0.0),
}


# the pipelines that run after the main one: name -> (stage list, report under runs/sandbox, findings)
AFTER_DEMO = {"self_rewarding": (self_rewarding.stages, "self_rewarding/report.json", FINDINGS_SELF_REWARDING),
              "gold": (gold.stages, "gold/report.json", FINDINGS_GOLD)}


def shared(pretraining: bool = False) -> tuple[str, ...]:
    """The stages of ``make demo``'s run that every workspace links to (``pretraining``: the world only)."""
    return SHARED[:1] if pretraining else SHARED


def seeds_root(pretraining: bool = False) -> Path:
    """Where the workspaces of seeds 1, 2, ... and their summary go."""
    return PRETRAINING_ROOT if pretraining else SEEDS_ROOT


def workspace(seed: int, pretraining: bool = False) -> Path:
    """Where seed ``seed`` runs (seed 0: the repository itself, ``make demo``'s run)."""
    return Path(".") if seed == 0 else seeds_root(pretraining) / f"seed_{seed}"


def make_workspace(seed: int, repo: Path, pretraining: bool = False) -> Path:
    """Create (or complete) seed ``seed``'s workspace: links to the repository's configs and train.py and to
    ``make demo``'s shared stages (:func:`shared`), which must exist."""
    root = workspace(seed, pretraining)
    missing = [RUNS / name for name in shared(pretraining) if not (repo / RUNS / name).exists()]
    if missing:
        sys.exit(f"[seeds] run `make demo` first: {', '.join(map(str, missing))} missing")
    links = {root / "configs": repo / "configs", root / "train.py": repo / "train.py",
             **{root / RUNS / name: repo / RUNS / name for name in shared(pretraining)}}
    for link, target in links.items():
        link.parent.mkdir(parents=True, exist_ok=True)
        if not link.is_symlink():
            link.symlink_to(target.resolve())
    return root


def seed_arguments(stage: Stage, seed: int, pretraining: bool = False) -> list[str]:
    """The arguments that give ``stage`` seed ``seed``: none for stages without randomness or that are shared."""
    command = stage.command
    if stage.name in shared(pretraining):
        return []
    if "train.py" in command:
        subcommand = command[command.index("train.py") + 1]
        if subcommand == "fit":
            return [f"--seed_everything={seed}"]
        if subcommand == "predict":
            return [f"--seed_everything={seed}", f"--model.init_args.seed={seed}"]
        return []
    if "almost.sandbox.baselines" in command or "almost.sandbox.prompt_mix" in command:
        return [f"--seed={seed}"]
    return []


def set_options(stages: list[Stage], seed: int, pretraining: bool = False) -> list[str]:
    """``--set STAGE=ARG`` options of a pipeline command line that give every stage seed ``seed``."""
    return [f"--set={stage.name}={arg}" for stage in stages for arg in seed_arguments(stage, seed, pretraining)]


def stale_shared_stages(repo: Path, pretraining: bool = False) -> list[str]:
    """The shared stages (world, pretraining) that are not up to date in the repository: a workspace would redo
    them, writing through its links into ``make demo``'s run."""
    here = Path.cwd()
    os.chdir(repo)
    try:
        return [s.name for s in pipeline.stages() if s.name in shared(pretraining) and not s.up_to_date()]
    finally:
        os.chdir(here)


def run_seed(seed: int, repo: Path, also: tuple[str, ...] = (), pretraining: bool = False) -> None:
    """The main pipeline, then those of ``also`` (names of ``AFTER_DEMO``), in seed ``seed``'s workspace."""
    stale = stale_shared_stages(repo, pretraining)
    if stale:
        sys.exit(f"[seeds] {', '.join(stale)} of make demo's run are not up to date: run `make demo` first")
    root = make_workspace(seed, repo, pretraining)
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    commands = [("pipeline", pipeline.stages())] + [(name, AFTER_DEMO[name][0]()) for name in also]
    for module, stages in commands:
        command = [sys.executable, "-m", f"almost.sandbox.{module}", *set_options(stages, seed, pretraining)]
        print(f"[seeds] seed {seed}: {' '.join(command)}  (in {root})", flush=True)
        if subprocess.call(command, cwd=root, env=env) != 0:
            sys.exit(f"[seeds] seed {seed}: almost.sandbox.{module} failed; logs in {root / RUNS / 'logs'}")


# ------------------------------------------------------------------------------------------------ summary
def leaves(tree: object, prefix: str = "") -> Iterator[tuple[str, float]]:
    """Every number of a JSON tree as ``(dotted path, value)``, list items by index; booleans, strings, NaN and
    infinities are left out."""
    if isinstance(tree, (dict, list)):
        for key, value in (tree.items() if isinstance(tree, dict) else enumerate(tree)):
            yield from leaves(value, f"{prefix}{key}.")
    elif isinstance(tree, (int, float)) and not isinstance(tree, bool) and math.isfinite(tree):
        yield prefix[:-1], float(tree)


def mean_and_se(values: list[float]) -> dict:
    """``{"mean", "se", "n"}``: the standard error is the sample standard deviation over sqrt(n) (None for n < 2)."""
    mean, se = mean_and_standard_error(values)
    return {"mean": mean, "se": se, "n": len(values)}


def finding(reports: list[dict[str, float]], a: str, b: str | float, margin: float) -> dict:
    """Per-seed ``a - b - margin`` over the reports that have the values; holds when its mean > 2 SE, and is
    "reversed" when its mean < -2 SE (the opposite holds), else "within noise"."""
    diffs = [r[a] - (b if isinstance(b, (int, float)) else r[b]) - margin
             for r in reports if a in r and (isinstance(b, (int, float)) or b in r)]
    if not diffs:
        return {"holds": None, "n": 0}
    stats = mean_and_se(diffs)
    beyond = stats["se"] is not None and abs(stats["mean"]) > 2 * stats["se"]
    verdict = ("holds" if stats["mean"] > 0 else "reversed") if beyond else "within noise"
    return {**stats, "holds": beyond and stats["mean"] > 0, "verdict": verdict, "per_seed": diffs}


def summarize(seeds: list[int], name: str, findings: dict, pretraining: bool = False) -> dict | None:
    """The summary of one report (``name``: its path under ``runs/sandbox``) over the seeds that have it."""
    found = {s: workspace(s, pretraining) / RUNS / name for s in seeds}
    reports = {s: dict(leaves(json.loads(p.read_text()))) for s, p in found.items() if p.is_file()}
    if not reports:
        return None
    keys = sorted({k for r in reports.values() for k in r if "wall_seconds" not in k})
    values = {k: mean_and_se([r[k] for r in reports.values() if k in r]) for k in keys}
    return {"seeds": sorted(reports), "values": values,
            "findings": {f: finding(list(reports.values()), *spec) for f, spec in findings.items()}}


def _se(stats: dict) -> str:
    return f"{stats['mean']:.3f} +- {stats['se']:.3f}" if stats.get("se") is not None else f"{stats['mean']:.3f}"


def markdown(summary: dict, pretraining: bool = False) -> str:
    title = "The sandbox over seeds" + (", each with its own pretraining" if pretraining else "")
    lines = [f"# {title}", "",
             "Means over seeds +- one standard error (sample standard deviation / sqrt(seeds)). A finding holds when "
             "the mean of its per-seed difference is above twice its standard error, and is reversed when it is "
             "below minus twice its standard error.", ""]
    for name, part in summary.items():
        if part is None:
            continue
        lines += [f"## {name} (seeds {part['seeds']})", "", "| finding | difference | per seed | verdict |",
                  "|---|---|---|---|"]
        for f, stats in part["findings"].items():
            if stats["n"]:
                per_seed = " / ".join(f"{d:+.3f}" for d in stats["per_seed"])
                lines.append(f"| {f} | {_se(stats)} | {per_seed} | {stats['verdict']} |")
        lines += ["", "| value | mean +- SE |", "|---|---|",
                  *[f"| {k} | {_se(v)} |" for k, v in part["values"].items()
                    if not k.startswith(("samples", "examples")) and ".samples." not in k
                    and v["n"] == len(part["seeds"])], ""]
    return "\n".join(lines)


def write_summary(seeds: list[int], pretraining: bool = False) -> dict:
    summary = {"report": summarize(seeds, "report.json", FINDINGS_MAIN, pretraining),
               **{name: summarize(seeds, report, findings, pretraining)
                  for name, (_, report, findings) in AFTER_DEMO.items()}}
    root = seeds_root(pretraining)
    root.mkdir(parents=True, exist_ok=True)
    (root / "summary.json").write_text(json.dumps(summary, indent=2) + "\n")
    (root / "summary.md").write_text(markdown(summary, pretraining))
    return summary


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 2], help="seeds to run (0 is make demo's run)")
    parser.add_argument("--also", nargs="*", default=[], choices=sorted(AFTER_DEMO),
                        help="pipelines to run after the main one, in each seed's workspace")
    parser.add_argument("--pretraining", action="store_true",
                        help=f"each seed pretrains its own vanilla models too (in {PRETRAINING_ROOT}/)")
    parser.add_argument("--summary", action="store_true", help="only summarize the seeds that have run")
    args = parser.parse_args()
    repo = Path(".").resolve()
    if not args.summary:
        for seed in [s for s in args.seeds if s != 0]:
            run_seed(seed, repo, tuple(args.also), args.pretraining)
    root = seeds_root(args.pretraining)
    done = [0] + sorted(int(p.name.split("_")[1]) for p in root.glob("seed_*") if p.is_dir())
    write_summary(done, args.pretraining)
    print((root / "summary.md").read_text())


if __name__ == "__main__":
    main()
