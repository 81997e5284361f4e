"""The whole ALMoST pipeline on the sandbox world, stage after stage, each one a ``train.py`` command.

    python -m almost.sandbox.pipeline              # run what is missing or out of date, then the report
    python -m almost.sandbox.pipeline --force      # a clean run: every stage again
    python -m almost.sandbox.pipeline --list       # the stages, their commands and whether they are up to date
    python -m almost.sandbox.pipeline --until rm   # stop after a stage

A stage is skipped when all its outputs exist and are newer than all its inputs (data, configs, the code of
the sandbox world), so a rerun after an interruption resumes at the stage that did not finish. A stage that was
started and did not finish (killed, failed) leaves ``runs/sandbox/logs/<stage>.running`` behind: it is rerun, and
resumes (from its last checkpoint, or its shards) even if some outputs are on disk, since a cut-short export or
merge may have written some of them. A stage's output
goes to ``runs/sandbox/logs/<stage>.log``; a failing stage stops the pipeline with its name and log path.
Wall-clock seconds of every stage that ran are kept in ``runs/sandbox/wall_seconds.json`` (for the report).
"""

from __future__ import annotations

import argparse
import fnmatch
import json
import shutil
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

RUNS = Path("runs/sandbox")
WORLD = RUNS / "world"
DATA = RUNS / "data"
CONFIGS = Path("configs/sandbox")
SANDBOX_CODE = Path(__file__).parent


@dataclass(frozen=True)
class Stage:
    name: str
    command: tuple[str, ...]
    inputs: tuple[Path, ...]
    outputs: tuple[Path, ...]
    checkpoint: Path | None = None  # a training stage's last checkpoint: an interrupted run resumes from it
    shards: Path | None = None  # a generation job's shards: an interrupted run skips what they hold
    logs: Path = RUNS / "logs"  # the stage's log and running marker go here

    def newer_than_inputs(self, paths: tuple[Path, ...]) -> bool:
        if not all(p.exists() for p in paths):
            return False
        newest_input = max((p.stat().st_mtime for p in self.inputs if p.exists()), default=0.0)
        return newest_input < min(p.stat().st_mtime for p in paths)

    @property
    def running_marker(self) -> Path:
        """Written when the stage starts, removed when it succeeds."""
        return self.logs / f"{self.name}.running"

    def interrupted(self) -> bool:
        return self.running_marker.exists()

    def up_to_date(self) -> bool:
        return not self.interrupted() and self.newer_than_inputs(self.outputs)

    def prepare(self, force: bool) -> tuple[str, ...]:
        """The command to run: resume an interrupted run unless forced or its inputs changed since."""
        resumable = not force and (self.interrupted() or not any(p.exists() for p in self.outputs))
        if self.shards is not None and not (resumable and self.newer_than_inputs((self.shards,))):
            shutil.rmtree(self.shards, ignore_errors=True)
        if self.checkpoint is not None:
            if resumable and self.newer_than_inputs((self.checkpoint,)):
                return self.command + (f"--ckpt_path={self.checkpoint}",)
            shutil.rmtree(self.checkpoint.parent, ignore_errors=True)
        return self.command


def _train(subcommand: str, stage: str) -> tuple[str, ...]:
    return (sys.executable, "train.py", subcommand, "--config", str(CONFIGS / f"{stage}.yaml"))


def _configs(*names: str) -> tuple[Path, ...]:
    return tuple(CONFIGS / f"{n}.yaml" for n in ("base", *names))


def _hf(stage: str) -> Path:
    return RUNS / stage / "hf" / "config.json"


def fit(name: str, inputs: tuple[Path, ...], outputs: tuple[Path, ...], *configs: str) -> Stage:
    """A training stage: ``train.py fit``; an interrupted run resumes from its last checkpoint."""
    return Stage(name, _train("fit", name), inputs + _configs(name, *configs), outputs,
                 checkpoint=RUNS / name / "checkpoints" / "last.ckpt")


def job(name: str, inputs: tuple[Path, ...], output: Path, *configs: str) -> Stage:
    """A generation job: ``train.py predict``; an interrupted run keeps its shards."""
    return Stage(name, _train("predict", name), inputs + _configs(name, *configs), (output,),
                 shards=Path(f"{output}.shards"))


def stages() -> list[Stage]:
    world = WORLD / "world.json"
    world_code = tuple(SANDBOX_CODE / f for f in ("build.py", "corpus.py", "world.py", "eval_files.py"))
    vanilla = tuple(_hf(f"pretrain_{size}") for size in "sml")
    prompts = SANDBOX_CODE / "prompts.py"  # the few-shot prompts: every stage that renders them reruns after an edit
    return [
        Stage("world", (sys.executable, "-m", "almost.sandbox.build", "--out", str(WORLD)), world_code, (world,)),
        *[fit(f"pretrain_{size}", (world,), (_hf(f"pretrain_{size}"),)) for size in "sml"],
        Stage("baselines", (sys.executable, "-m", "almost.sandbox.baselines", "--world", str(WORLD),
                            "--out", str(RUNS / "baselines"),
                            *[f"--model={k}={_hf(f'pretrain_{k.lower()}').parent}" for k in "SML"]),
              vanilla + (SANDBOX_CODE / "baselines.py", prompts),
              (RUNS / "baselines" / "baselines.json",)),
        job("mine", (vanilla[2], WORLD / "seed_queries.jsonl"), DATA / "queries.jsonl"),
        job("responses", vanilla + (DATA / "queries.jsonl", prompts), DATA / "responses.jsonl"),
        job("comparisons", (DATA / "responses.jsonl",), DATA / "comparisons.jsonl"),
        fit("rm", (DATA / "comparisons.jsonl", vanilla[1]), (_hf("rm"),)),
        job("rmsp", (vanilla[2], _hf("rm"), DATA / "queries.jsonl", prompts), DATA / "rmsp.jsonl"),
        job("selfplay", (vanilla[2], DATA / "queries.jsonl", prompts), DATA / "selfplay.jsonl", "rmsp"),
        fit("sft_rmsp", (DATA / "rmsp.jsonl", vanilla[1]), (_hf("sft_rmsp"),)),
        fit("sft_selfplay", (DATA / "selfplay.jsonl", vanilla[1]), (_hf("sft_selfplay"),), "sft_rmsp"),
        Stage("ppo_prompts", (sys.executable, "-m", "almost.sandbox.prompt_mix", "--world", str(WORLD),
                              "--queries", str(DATA / "queries.jsonl"), "--out", str(DATA / "ppo_prompts.jsonl")),
              (DATA / "queries.jsonl", world, SANDBOX_CODE / "prompt_mix.py"), (DATA / "ppo_prompts.jsonl",)),
        fit("ppo", (_hf("sft_rmsp"), _hf("rm"), DATA / "ppo_prompts.jsonl", world), (_hf("ppo"),)),
        Stage("hhh_policy", (sys.executable, "train.py", "test", "--config", "configs/eval/hhh_ab.yaml",
                             f"--model.init_args.source.path={_hf('ppo').parent}",
                             f"--model.init_args.out_dir={RUNS / 'eval' / 'hhh_policy'}"),
              (_hf("ppo"), WORLD / "world.json", Path("configs/eval/hhh_ab.yaml")),
              (RUNS / "eval" / "hhh_policy" / "results.json",)),
        Stage("hhh_rm", (sys.executable, "train.py", "test", "--config", "configs/eval/hhh_reward.yaml",
                         f"--model.init_args.source.path={_hf('rm').parent}",
                         f"--model.init_args.out_dir={RUNS / 'eval' / 'hhh_rm'}"),
              (_hf("rm"), WORLD / "world.json", Path("configs/eval/hhh_reward.yaml")),
              (RUNS / "eval" / "hhh_rm" / "results.json",)),
        Stage("report", (sys.executable, "-m", "almost.sandbox.report", "--runs", str(RUNS)),
              (_hf("ppo"), _hf("sft_selfplay"), DATA / "selfplay.jsonl", RUNS / "baselines" / "baselines.json",
               RUNS / "eval" / "hhh_policy" / "results.json", RUNS / "eval" / "hhh_rm" / "results.json",
               SANDBOX_CODE / "report.py"),
              (RUNS / "report.json", RUNS / "report.md")),
    ]


def cpu_bf16_is_slow(size: int = 256, repeats: int = 5, margin: float = 2.0) -> bool:
    """Whether a bf16 matmul is more than ``margin`` times slower than an fp32 one on this machine's CPU, measured (a
    few ms). CPUs without bf16 instructions (AVX512-BF16, AMX) emulate it: about 45x slower than fp32 on an AVX2-only
    CPU; with them it is about 5x faster. The fastest of ``repeats`` and the margin keep a busy host from flipping the
    answer, which changes the pretraining draw (FINDINGS.md, 2026-12-04, fifth session)."""
    import torch

    def fastest_seconds(dtype: torch.dtype) -> float:
        a, b = torch.randn(size, size, dtype=dtype), torch.randn(size, size, dtype=dtype)
        a @ b  # warm-up
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            a @ b
            times.append(time.perf_counter() - start)
        return min(times)

    return fastest_seconds(torch.bfloat16) > margin * fastest_seconds(torch.float32)


def precision_fallback(stage_list: list[Stage], force: bool) -> dict[str, list[str]]:
    """``pretrain_m`` and ``pretrain_l`` pretrain in ``bf16-mixed`` (1.5x faster where the CPU has bf16
    instructions); on a CPU-only machine where bf16 is slower, they run in ``32-true`` instead, said once."""
    import torch

    to_run = [s.name for s in stage_list if s.name in ("pretrain_m", "pretrain_l") and (force or not s.up_to_date())]
    if not to_run or torch.cuda.is_available() or not cpu_bf16_is_slow():
        return {}
    print(f"[pipeline] this CPU runs bf16 matmuls slower than fp32 (no bf16 instructions): "
          f"{', '.join(to_run)} in --trainer.precision=32-true instead of bf16-mixed", flush=True)
    return {name: ["--trainer.precision=32-true"] for name in to_run}


def run(force: bool = False, extra: dict[str, list[str]] | None = None, until: str | None = None) -> dict[str, float]:
    """Run the stages that are not up to date, up to the stage ``until`` (default: all); ``extra`` adds arguments to
    stages (name patterns such as ``pretrain_*`` allowed). Returns the wall-clock seconds of every stage run so far."""
    stage_list = stages()
    merged = precision_fallback(stage_list, force)  # first: an explicit --set of the same option comes after, wins
    for pattern, args in (extra or {}).items():
        merged[pattern] = merged.get(pattern, []) + args
    return run_stages(stage_list, RUNS / "wall_seconds.json", force=force, extra=merged, until=until)


def run_stages(stage_list: list[Stage], timing_file: Path, force: bool = False,
               extra: dict[str, list[str]] | None = None, until: str | None = None,
               tag: str = "pipeline") -> dict[str, float]:
    """Run the stages of ``stage_list`` that are not up to date, in order, up to ``until``; keep the wall-clock
    seconds of each in ``timing_file``; messages start with ``[tag]``. Returns the seconds of every stage run so
    far (those kept in ``timing_file`` included)."""
    extra = extra or {}
    names = [stage.name for stage in stage_list]
    if until is not None and until not in names:
        sys.exit(f"[{tag}] --until {until}: no such stage (stages: {', '.join(names)})")
    timing_file.parent.mkdir(parents=True, exist_ok=True)
    wall = json.loads(timing_file.read_text()) if timing_file.is_file() and not force else {}
    for stage in stage_list:
        if not force and stage.up_to_date():
            print(f"[{tag}] {stage.name}: up to date", flush=True)
            if stage.name == until:
                break
            continue
        command = stage.prepare(force) + tuple(
            arg for pattern, args in extra.items() if fnmatch.fnmatch(stage.name, pattern) for arg in args)
        log = stage.logs / f"{stage.name}.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        again = "interrupted before, resuming: " if stage.interrupted() else ""
        print(f"[{tag}] {stage.name}: {again}{' '.join(command)}  (log: {log})", flush=True)
        start = time.perf_counter()
        stage.running_marker.touch()
        with log.open("w") as out:
            code = subprocess.call(command, stdout=out, stderr=subprocess.STDOUT)
        if code != 0:
            tail = "".join(log.read_text(errors="replace").splitlines(keepends=True)[-15:])
            sys.exit(f"{tail}\n[{tag}] stage {stage.name!r} failed (exit code {code}); its log: {log}")
        wall[stage.name] = round(time.perf_counter() - start, 1)
        timing_file.write_text(json.dumps(wall, indent=2) + "\n")
        stage.running_marker.unlink()
        print(f"[{tag}] {stage.name}: done in {wall[stage.name]:.0f} s", flush=True)
        if stage.name == until:
            break
    return wall


def pipeline_parser(doc: str, example: str) -> argparse.ArgumentParser:
    """The options of a pipeline's command line: --force, --list, --until STAGE, --set STAGE=ARG (``example``)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--force", action="store_true", help="rerun every stage")
    parser.add_argument("--list", action="store_true", help="show the stages and exit")
    parser.add_argument("--until", metavar="STAGE", help="stop after this stage")
    parser.add_argument("--set", action="append", default=[], metavar="STAGE=ARG",
                        help=f"an extra argument for a stage's command, e.g. --set {example}")
    return parser


def print_stages(stage_list: list[Stage]) -> None:
    """``--list``: each stage's name, state (up to date, interrupted, to run) and command."""
    width = max(len(stage.name) for stage in stage_list) + 1
    for stage in stage_list:
        state = "up to date" if stage.up_to_date() else "interrupted" if stage.interrupted() else "to run"
        print(f"{stage.name:{width}s} {state:11s} {' '.join(stage.command)}")


def parse_sets(items: list[str]) -> dict[str, list[str]]:
    """``--set STAGE=ARG`` options as ``{stage pattern: [args]}``."""
    extra: dict[str, list[str]] = {}
    for item in items:
        stage, _, arg = item.partition("=")
        extra.setdefault(stage, []).append(arg)
    return extra


def after_demo_main(doc: str, stage_list: Callable[[], list[Stage]], timing_file: Path, tag: str,
                    needs: tuple[Path, ...], example: str) -> None:
    """The command line of a pipeline that runs after ``make demo`` on its outputs (``needs``): ``--list``,
    ``--force``, ``--until``, ``--set STAGE=ARG`` (``example``: one such option), then ``run_stages``."""
    args = pipeline_parser(doc, example).parse_args()
    if args.list:
        return print_stages(stage_list())
    missing = [p for p in needs if not p.exists()]
    if missing:
        sys.exit(f"[{tag}] run `make demo` first: {', '.join(map(str, missing))} missing")
    run_stages(stage_list(), timing_file, force=args.force, extra=parse_sets(args.set), until=args.until, tag=tag)


def main() -> None:
    args = pipeline_parser(__doc__, "rm=--trainer.max_epochs=1").parse_args()
    extra = parse_sets(args.set)
    if args.list:
        return print_stages(stages())
    run(force=args.force, extra=extra, until=args.until)


if __name__ == "__main__":
    main()
