"""Adapter arithmetic on the sandbox world (Zhang et al. 2023, https://arxiv.org/abs/2306.14870): detoxify a policy
by negating a toxic adapter, and add a helpful and a harmless adapter. One command, after ``make demo``::

    python -m almost.sandbox.detox --runs runs/sandbox --out runs/sandbox/detox

1. data (``out/data``): toxic demonstrations (rude answers, compliance with harmful requests; ``detox_data``) and
   the RMSP demonstrations split by aspect (``rmsp_helpful``, ``rmsp_harmless``, ``rmsp_both``).
2. adapters (``out/adapters/<name>``, each ``train.py fit``): ``toxic_<kind>_<base>`` for kind LoRA
   (``configs/sandbox/toxic_adapter.yaml``) and (IA)3 (``toxic_adapter_ia3.yaml``) on each of ``--adapter-bases``:
   the SFT-RMSP policy (``sft``, default) and the vanilla M model (``m``); ``rmsp_<subset>``, LoRA on M
   (``rmsp_adapter.yaml``). An adapter already trained is kept (``--force``: trained again).
3. negation (``out/negation/<adapter>_from_<base>``): each toxic adapter negated from each of ``--negate-from``
   (default the SFT policy and, deliberately weaker, vanilla M answering zero-shot in the chat template) at each
   lambda of ``--sweep`` (almost.pem, paper mode), the adapter added (+1), and for (IA)3 the negative control
   ``-l`` (``almost.pem.ops.naive_negate``); the lambda the paper's rule picks (almost.pem's ``pick_lambda``: the
   largest whose clean perplexity rises by at most ``--max-ppl-increase`` over lambda 0).
4. addition (``out/addition``): ``lambda helpful + (1 - lambda) harmless`` (paper mode) at each lambda, against
   ``rmsp_both`` alone and M without an adapter.
5. ``detox.json`` and ``detox.md`` in ``out`` (``detox_report``); measures in ``detox_eval``.
"""

from __future__ import annotations

import argparse
import itertools
import subprocess
import sys
import time
from dataclasses import asdict, replace
from pathlib import Path
from typing import Sequence

from almost.pem.__main__ import parse_sweep, pick_lambda
from almost.pem.io import Adapter, Term, load_adapter
from almost.sandbox.baselines import VANILLA_SAMPLING
from almost.sandbox.build import load_world
from almost.sandbox.detox_data import CLEAN_STYLES, clean_texts, heldout_queries, write_study_data
from almost.sandbox.detox_eval import EvalSettings, Point, StudyData, run_points
from almost.sandbox.detox_report import write_report

BASES = {"sft": "sft_rmsp/hf", "m": "pretrain_m/hf"}  # under --runs
TOXIC_CONFIGS = {"lora": "toxic_adapter.yaml", "ia3": "toxic_adapter_ia3.yaml"}
RMSP_CONFIG = "rmsp_adapter.yaml"
CONFIGS = Path("configs/sandbox")  # relative to the working directory, like train.py (run from the repository)


def train_adapter(name: str, config: str, source: Path, data: Path, out: Path, extra: Sequence[str],
                  force: bool) -> dict:
    """``train.py fit`` of one adapter into ``out/adapters/<name>``, its log in ``out/logs/<name>.log``; kept when
    it exists, unless ``force``."""
    export, logs = out / "adapters" / name, out / "logs"
    if (export / "adapter_model.safetensors").is_file() and not force:
        return {"path": str(export), "seconds": None, "kept": True}
    logs.mkdir(parents=True, exist_ok=True)
    command = [sys.executable, "train.py", "fit", "--config", str(CONFIGS / config),
               f"--model.init_args.source.path={source}", f"--model.init_args.export_dir={export}",
               f"--data.init_args.path={data}", f"--trainer.logger.init_args.save_dir={logs}",
               f"--trainer.logger.init_args.name={name}", "--trainer.enable_progress_bar=false", *extra]
    start, log = time.time(), logs / f"{name}.log"
    with open(log, "w", encoding="utf-8") as handle:
        result = subprocess.run(command, stdout=handle, stderr=subprocess.STDOUT)
    if result.returncode != 0:
        raise SystemExit(f"training adapter {name!r} failed (exit {result.returncode}); see {log}")
    return {"path": str(export), "seconds": round(time.time() - start, 1), "kept": False}


def negation_points(adapter: Adapter, lambdas: Sequence[float], control: bool) -> list[Point]:
    """The adapter added, negated at each lambda, and (``control``) naively negated."""
    points = [Point("added", (Term(adapter, 1.0),))]
    points += [Point(f"negate {lam:g}", (Term(adapter, lam, negate=True),), lam=lam) for lam in lambdas]
    if control:
        points.append(Point("naive -l", (Term(adapter, 1.0),), naive=True))
    return points


def addition_points(helpful: Adapter, harmless: Adapter, both: Adapter, lambdas: Sequence[float]) -> list[Point]:
    """No adapter (helpful at weight 0: the identity), ``lambda helpful + (1 - lambda) harmless``, and ``both``."""
    points = [Point("no adapter", (Term(helpful, 0.0),))]
    points += [Point(f"add {lam:g}", (Term(helpful, lam), Term(harmless, round(1 - lam, 10))), lam=lam)
               for lam in lambdas]
    return points + [Point("both", (Term(both, 1.0),))]


def negation_summary(results: list[dict], max_increase: float) -> dict:
    """Perplexity increases over lambda 0 and the lambda almost.pem's rule picks."""
    sweep = [r for r in results if r["lambda"] is not None]
    reference = next(r["perplexity"] for r in sweep if r["lambda"] == 0.0)
    for r in results:
        r["ppl_increase"] = r["perplexity"] - reference
    picked = pick_lambda([r["lambda"] for r in sweep], [r["perplexity"] for r in sweep], max_increase)
    return {"reference_perplexity": reference, "picked_lambda": picked, "points": results}


def addition_summary(results: list[dict]) -> dict:
    sweep = [r for r in results if r["lambda"] is not None]
    best = max(sweep, key=lambda r: r["metrics"]["score"]["mean"])
    return {"best_lambda_by_score": best["lambda"], "points": results}


def train_all(args: argparse.Namespace, runs: Path, out: Path, files: dict[str, Path]) -> dict[str, dict]:
    """The toxic adapters on each of ``--adapter-bases`` and, for the addition study, the RMSP adapters on M."""
    trained = {}
    for base, kind in itertools.product(args.adapter_bases, args.kinds):
        name = f"toxic_{kind}_{base}"
        trained[name] = train_adapter(name, TOXIC_CONFIGS[kind], runs / BASES[base], files["toxic"], out,
                                      args.train_arg, args.force)
    for subset in ("helpful", "harmless", "both") if args.addition else ():
        trained[f"rmsp_{subset}"] = train_adapter(f"rmsp_{subset}", RMSP_CONFIG, runs / BASES["m"], files[subset],
                                                  out, args.train_arg, args.force)
    return trained


def negation_study(args: argparse.Namespace, runs: Path, out: Path, trained: dict[str, dict], data: StudyData,
                   lambdas: Sequence[float]) -> dict[str, dict]:
    """Every toxic adapter negated from every model of ``--negate-from``, one group of points each."""
    groups = {}
    for adapter_base, kind, base in itertools.product(args.adapter_bases, args.kinds, args.negate_from):
        name = f"toxic_{kind}_{adapter_base}"
        points = negation_points(load_adapter(trained[name]["path"], name), lambdas, control=kind == "ia3")
        group = f"{name}_from_{base}"
        results = run_points(str(runs / BASES[base]), points, out / "negation" / group, data, group)
        groups[group] = {"adapter": name, "adapter_base": adapter_base, "base": base, "kind": kind,
                         **negation_summary(results, args.max_ppl_increase)}
    return groups


def addition_study(runs: Path, out: Path, trained: dict[str, dict], data: StudyData,
                   lambdas: Sequence[float]) -> dict:
    helpful, harmless, both = (load_adapter(trained[f"rmsp_{s}"]["path"], s) for s in ("helpful", "harmless", "both"))
    points = addition_points(helpful, harmless, both, lambdas)
    return addition_summary(run_points(str(runs / BASES["m"]), points, out / "addition", data, "addition"))


def run(args: argparse.Namespace) -> dict:
    runs, out, start = Path(args.runs), Path(args.out), time.time()
    world = load_world(runs / "world")
    # 1. data: toxic demonstrations, RMSP subsets
    rmsp = runs / "data" / "rmsp.jsonl" if args.addition else None
    files = write_study_data(world, out / "data", rmsp, args.n_toxic, args.seed)
    # 2. adapters
    trained = train_all(args, runs, out, files)
    # 3. measure the compositions on held-out queries and clean held-out text
    settings = EvalSettings(replace(VANILLA_SAMPLING, max_new_tokens=args.answer_tokens), tuple(args.seeds),
                            args.batch_size)
    queries = heldout_queries(world, runs / "world" / "heldout_queries.jsonl", args.queries or None)
    data = StudyData(world, queries, clean_texts(runs / "world" / "corpus_heldout.jsonl", args.ppl_docs), settings)
    lambdas = sorted({0.0, *parse_sweep(args.sweep)})
    negation = negation_study(args, runs, out, trained, data, lambdas)
    addition = addition_study(runs, out, trained, data, lambdas) if args.addition else None
    # 4. report
    report = {"command": " ".join(["python -m almost.sandbox.detox", *args.argv]),
              "settings": {**{k: v for k, v in vars(args).items() if k != "argv"}, "lambdas": lambdas,
                           "sampling": asdict(settings.sampling), "clean_styles": list(CLEAN_STYLES)},
              "data": {"queries": len(queries), "harmful_queries": sum(q.family == "harmful" for q in queries),
                       "ppl_documents": len(data.texts),
                       "demonstrations": {k: len(v.read_text(encoding="utf-8").splitlines()) for k, v in files.items()}},
              "adapters": trained, "negation": negation, "addition": addition,
              "wall_seconds": round(time.time() - start, 1)}
    write_report(out, report)
    return report


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m almost.sandbox.detox", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--runs", default="runs/sandbox", help="the finished sandbox run (make demo)")
    parser.add_argument("--out", default="runs/sandbox/detox")
    parser.add_argument("--n-toxic", type=int, default=1000, help="toxic demonstrations to train on")
    parser.add_argument("--adapter-bases", nargs="+", choices=sorted(BASES), default=["sft"],
                        help="the models the toxic adapters are trained on")
    parser.add_argument("--negate-from", nargs="+", choices=sorted(BASES), default=["sft", "m"],
                        help="the models each toxic adapter is negated from")
    parser.add_argument("--kinds", nargs="+", choices=sorted(TOXIC_CONFIGS), default=["lora", "ia3"])
    parser.add_argument("--no-addition", dest="addition", action="store_false", help="skip the addition study")
    parser.add_argument("--sweep", default="0:1:0.25", metavar="START:STOP:STEP", help="lambdas (0 is always added)")
    parser.add_argument("--max-ppl-increase", type=float, default=0.5, help="the paper's rule (almost.pem)")
    parser.add_argument("--queries", type=int, default=300, help="first N held-out queries (0: all)")
    parser.add_argument("--ppl-docs", type=int, default=200, help="first N clean held-out documents")
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1], help="sampling seeds")
    parser.add_argument("--answer-tokens", type=int, default=VANILLA_SAMPLING.max_new_tokens)
    parser.add_argument("--batch-size", type=int, default=64, help="prompts per generation batch")
    parser.add_argument("--seed", type=int, default=0, help="seed of the toxic demonstrations")
    parser.add_argument("--train-arg", action="append", default=[], help="extra train.py argument, e.g. "
                        "--train-arg=--trainer.max_steps=10 (every adapter)")
    parser.add_argument("--force", action="store_true", help="train the adapters again")
    return parser


def main(argv: Sequence[str] | None = None) -> dict:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    args.argv = argv
    report = run(args)
    print(f"adapter studies written to {Path(args.out) / 'detox.md'} ({report['wall_seconds']:.0f} s)")
    return report


if __name__ == "__main__":
    main()
