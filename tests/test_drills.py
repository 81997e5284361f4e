"""Issue 22, part 5: drills. A generation job, a training stage and the sandbox pipeline are killed with SIGKILL at
a random point and rerun; the result must be what an uninterrupted run gives. Each drill prints its random seed
(``DRILL_SEED=<n>`` repeats a drill's kill point)."""

import json
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import lightning as L
import pytest
import torch
import yaml
from safetensors.torch import load_file

import train
from almost.models import ModelSource, build_causal_lm, load_tokenizer
from almost.records import Prompt, Responses, write_jsonl
from almost.sandbox import pipeline
from tests.conftest import TINY_ARCH

ROOT = Path(__file__).parent.parent
ENV = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
       "OMP_NUM_THREADS": "1"}  # the same arithmetic as the in-process runs (one thread, see one_thread)


@pytest.fixture(autouse=True)
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture
def rng() -> random.Random:
    seed = int(os.environ.get("DRILL_SEED", time.time_ns() % 2**32))
    print(f"DRILL_SEED={seed}")
    return random.Random(seed)


class Throttle(L.Callback):
    """Sleeps after every batch, so that a drill can kill a tiny run in the middle of its work."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds

    def on_train_batch_end(self, *args) -> None:
        time.sleep(self.seconds)

    def on_predict_batch_end(self, *args) -> None:
        time.sleep(self.seconds)


def throttled(seconds: float) -> str:
    return "--trainer.callbacks+=" + json.dumps({"class_path": "tests.test_drills.Throttle",
                                                 "init_args": {"seconds": seconds}})


def kill_when(command: list[str], ready, delay: float, log: Path, cwd: Path = ROOT) -> None:
    """Run ``command`` (in a process group of its own, output to ``log``) and SIGKILL the whole group ``delay``
    seconds after ``ready()`` first holds."""
    with log.open("w") as out:
        process = subprocess.Popen(command, cwd=cwd, env=ENV, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
        try:
            while not ready():
                assert process.poll() is None, f"ended before the kill point:\n{log.read_text()[-3000:]}"
                time.sleep(0.01)
            time.sleep(delay)
        finally:
            try:
                os.killpg(process.pid, signal.SIGKILL)
            except ProcessLookupError:  # it had ended: the assertion below says how
                pass
            process.wait()
    assert process.returncode == -signal.SIGKILL, log.read_text()[-3000:]


# --- a generation job ----------------------------------------------------------------------------------
N_INPUTS, BATCH = 24, 2
BATCHES = N_INPUTS // BATCH


def comparisons_job(tmp_path, output: Path) -> tuple[dict, dict]:
    responses = [Responses(f"Question {i}?", {"A": f"A careful answer number {i}.", "B": f"Answer {i} is this.",
                                              "C": "Well, maybe so." if i % 3 else "I do not know."})
                 for i in range(N_INPUTS)]
    write_jsonl(tmp_path / "responses.jsonl", responses)
    return ({"class_path": "lit_models.jobs.ComparisonJob", "init_args": {"rubric": "A > B > C", "output": str(output)}},
            {"class_path": "data_modules.JobInputDataModule",
             "init_args": {"path": str(tmp_path / "responses.jsonl"), "record": "responses", "batch_size": BATCH}})


def responses_job(tmp_path, output: Path, tokenizer_dir: str) -> tuple[dict, dict]:
    lm = tmp_path / "lm"
    if not lm.exists():
        source = ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)
        tokenizer = load_tokenizer(source)
        torch.manual_seed(0)
        build_causal_lm(source, tokenizer).save_pretrained(lm)
        tokenizer.save_pretrained(lm)
        write_jsonl(tmp_path / "queries.jsonl", [Prompt(f"What is {i} plus {i}?") for i in range(N_INPUTS)])
        (tmp_path / "demos.jsonl").write_text(json.dumps({"messages": [
            {"role": "user", "content": "Name a colour."}, {"role": "assistant", "content": "Blue."}]}) + "\n")
    prompter = {"class_path": "almost.prompting.FewShotPrompter",
                "init_args": {"styles": {"good": str(tmp_path / "demos.jsonl")}}}
    return ({"class_path": "lit_models.jobs.PromptedResponsesJob",
             "init_args": {"models": {"T": str(lm)}, "configurations": ["T-good-1shot", "T-good-0shot"],
                           "prompter": prompter, "output": str(output),
                           "sampling": {"max_new_tokens": 8, "temperature": 1.0, "top_p": 0.9}}},
            {"class_path": "data_modules.JobInputDataModule",
             "init_args": {"path": str(tmp_path / "queries.jsonl"), "batch_size": BATCH}})


def predict_args(config: Path) -> list[str]:
    return ["predict", "--config", str(config), "--trainer.logger=false", "--trainer.enable_progress_bar=false",
            "--trainer.enable_model_summary=false", f"--trainer.default_root_dir={config.parent}"]


@pytest.mark.parametrize("job", ["comparisons", pytest.param("responses", marks=pytest.mark.slow)])
def test_a_job_killed_at_a_random_point_reruns_to_the_same_bytes(job, tokenizer_dir, tmp_path, rng):
    def config(name: str) -> Path:
        output = tmp_path / name / "out.jsonl"
        model, data = (comparisons_job(tmp_path, output) if job == "comparisons"
                       else responses_job(tmp_path, output, tokenizer_dir))
        path = tmp_path / f"{name}.yaml"
        path.write_text(yaml.safe_dump({"model": model, "data": data, "seed_everything": 0}))
        return path

    train.main(predict_args(config("uninterrupted")))
    killed, shards = config("killed"), tmp_path / "killed" / "out.jsonl.shards"
    kill_after = rng.randint(1, BATCHES - 3)  # shards on disk, then up to one more batch (0.3 s of sleep)
    kill_when([sys.executable, "train.py", *predict_args(killed), throttled(0.3)],
              lambda: len(list(shards.glob("part-*.jsonl"))) >= kill_after, rng.uniform(0, 0.3), tmp_path / "killed.log")
    left = len(list(shards.glob("part-*.jsonl")))
    assert kill_after <= left < BATCHES and not (tmp_path / "killed" / "out.jsonl").exists()
    train.main(predict_args(killed))  # the rerun skips what the shards hold
    uninterrupted = (tmp_path / "uninterrupted" / "out.jsonl").read_bytes()
    assert uninterrupted and (tmp_path / "killed" / "out.jsonl").read_bytes() == uninterrupted


# --- a training stage -----------------------------------------------------------------------------------
def fit_args(tokenizer_dir: str, out: Path, *more: str) -> list[str]:
    return ["fit", "--config", "configs/fixture/sft.yaml", "--trainer.max_epochs=3", "--trainer.limit_train_batches=3",
            "--trainer.limit_val_batches=1", "--data.init_args.max_length=64", "--data.init_args.batch_size=8",
            f"--trainer.logger.init_args.save_dir={out}", f"--trainer.callbacks.dirpath={out}/ckpt",
            f"--model.init_args.source.tokenizer={tokenizer_dir}", f"--model.init_args.export_dir={out}/hf",
            "--trainer.enable_progress_bar=false", "--trainer.enable_model_summary=false", *more]


def test_a_training_stage_killed_after_a_checkpoint_resumes_to_the_same_weights(tokenizer_dir, tmp_path, rng):
    # The fixture's end-of-epoch checkpoint. Unshuffled batches: a shuffling DataLoader draws each epoch's order
    # from the global RNG, which a resumed process has not advanced as the uninterrupted one had (its weights then
    # differ: a known gap of resuming, not of this drill).
    unshuffled = "--data.init_args.shuffle=false"
    train.main(fit_args(tokenizer_dir, tmp_path / "uninterrupted", unshuffled))
    out = tmp_path / "killed"
    kill_when([sys.executable, "train.py", *fit_args(tokenizer_dir, out, unshuffled), throttled(0.4)],
              (out / "ckpt" / "last.ckpt").exists, rng.uniform(0, 2.0), tmp_path / "killed.log")  # 6 batches left
    assert not (out / "hf").exists()
    train.main(fit_args(tokenizer_dir, out, unshuffled, f"--ckpt_path={out}/ckpt/last.ckpt"))
    expected, resumed = (load_file(tmp_path / name / "hf" / "model.safetensors") for name in ("uninterrupted", "killed"))
    assert expected.keys() == resumed.keys()
    for name in expected:
        assert torch.equal(expected[name], resumed[name]), name


# --- the sandbox pipeline -------------------------------------------------------------------------------
def fake_stage(name: str, inputs: tuple[Path, ...], output: Path, die: bool = False) -> pipeline.Stage:
    """A stage whose command writes ``output`` in two steps and, with ``die``, is killed between them."""
    code = (f"from pathlib import Path; import os, signal; p = Path({str(output)!r}); p.parent.mkdir(exist_ok=True, "
            f"parents=True); p.write_text('half'); {'os.kill(os.getpid(), signal.SIGKILL); ' if die else ''}"
            f"p.write_text('whole')")
    return pipeline.Stage(name, (sys.executable, "-c", code), inputs, (output,))


def test_a_stage_cut_short_after_writing_an_output_is_rerun_not_taken_as_done(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    a, b, c = (pipeline.RUNS / name for name in ("a.txt", "b.txt", "c.txt"))
    monkeypatch.setattr(pipeline, "stages", lambda: [fake_stage("a", (), a), fake_stage("b", (a,), b, die=True),
                                                     fake_stage("c", (b,), c)])
    with pytest.raises(SystemExit, match="stage 'b' failed"):
        pipeline.run()
    assert b.read_text() == "half" and pipeline.stages()[1].interrupted()
    monkeypatch.setattr(pipeline, "stages", lambda: [fake_stage("a", (), a), fake_stage("b", (a,), b),
                                                     fake_stage("c", (b,), c)])
    capsys.readouterr()
    assert list(pipeline.run(until="b")) == ["a", "b"]  # a (from the first run) and b: c is after --until
    printed = capsys.readouterr().out
    assert "[pipeline] a: up to date" in printed and "[pipeline] b: interrupted before, resuming: " in printed
    assert b.read_text() == "whole" and not c.exists() and not pipeline.stages()[1].interrupted()
    pipeline.run()
    assert "[pipeline] b: up to date" in capsys.readouterr().out and c.read_text() == "whole"


TINY_PIPELINE = {  # tests/sandbox/test_pipeline_smoke.py's settings of the first stages
    "world": ["--n-documents=300", "--n-heldout-documents=30", "--n-heldout-queries=16", "--n-seed-queries=10",
              "--vocab-size=400"],
    "pretrain_*": ["--trainer.max_steps=6", "--trainer.limit_val_batches=1"],
}


@pytest.mark.slow
def test_the_pipeline_killed_mid_stage_resumes_at_that_stage(tmp_path, rng):
    for name in ("train.py", "configs"):  # the stages run `train.py --config configs/...` from the working dir
        (tmp_path / name).symlink_to(ROOT / name)
    sets = [f"--set={stage}={arg}" for stage, args in TINY_PIPELINE.items() for arg in args]
    command = [sys.executable, "-m", "almost.sandbox.pipeline", "--until=pretrain_l", *sets]
    target = rng.choice(["world", "pretrain_s", "pretrain_m"])  # each has a later stage to run after it
    log = tmp_path / "killed.log"
    kill_when(command, lambda: f"[pipeline] {target}: " in log.read_text(), rng.uniform(0, 8), log, cwd=tmp_path)

    def stage_of(line: str) -> str:
        return line.split(":")[0].removeprefix("[pipeline] ")

    lines = [line for line in log.read_text().splitlines() if line.startswith("[pipeline] ")]
    done = [stage_of(line) for line in lines if ": done in " in line]
    killed = next((stage_of(line) for line in lines[-1:] if ": done in " not in line), None)  # None: between stages
    rerun = subprocess.run(command, cwd=tmp_path, env=ENV, capture_output=True, text=True, timeout=900)
    assert rerun.returncode == 0, rerun.stdout[-3000:] + rerun.stderr[-3000:]
    for stage in ("world", "pretrain_s", "pretrain_m", "pretrain_l"):
        ran = f"[pipeline] {stage}: done in " in rerun.stdout
        assert ran != (stage in done), (stage, done, rerun.stdout)  # finished stages are not run again
        assert (f"[pipeline] {stage}: up to date" in rerun.stdout) == (stage in done), (stage, rerun.stdout)
    print(f"killed during {killed or 'the step between two stages'}")
    if killed is not None:
        assert f"[pipeline] {killed}: interrupted before, resuming: " in rerun.stdout, rerun.stdout
    assert (tmp_path / "runs/sandbox/pretrain_l/hf/model.safetensors").is_file()


def test_pretraining_runs_in_fp32_where_the_cpu_emulates_bf16(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    out = pipeline.RUNS / "m.txt"
    monkeypatch.setattr(pipeline, "stages", lambda: [fake_stage("pretrain_m", (), out)])
    monkeypatch.setattr(pipeline, "cpu_bf16_is_slow", lambda: False)
    assert pipeline.precision_fallback(pipeline.stages(), force=False) == {}
    monkeypatch.setattr(pipeline, "cpu_bf16_is_slow", lambda: True)
    assert pipeline.precision_fallback(pipeline.stages(), force=False) == {"pretrain_m": ["--trainer.precision=32-true"]}
    pipeline.run(extra={"pretrain_m": ["--seed_everything=3"]})  # a --set of the same stage keeps the fallback
    assert "--trainer.precision=32-true --seed_everything=3" in capsys.readouterr().out
    assert pipeline.precision_fallback(pipeline.stages(), force=False) == {}  # up to date: nothing to say


@pytest.mark.parametrize("bf16_ms, fp32_ms, slow", [
    ([0.3, 3.0, 0.3, 0.3, 0.3], [0.2, 0.2, 2.0, 0.2, 0.2], False),  # a busy host: bf16 a little slower, spikes
    ([0.04, 0.05, 0.04, 0.9, 0.04], [0.2, 0.2, 0.2, 0.2, 0.2], False),  # bf16 instructions: faster
    ([9.0, 9.1, 9.0, 9.2, 9.0], [0.2, 0.2, 0.3, 0.2, 0.2], True),  # emulated: about 45x slower
])
def test_the_bf16_check_needs_a_clear_margin(monkeypatch, bf16_ms, fp32_ms, slow):
    """cpu_bf16_is_slow compares the fastest of its timings with a 2x margin, so noise does not flip it."""
    durations = iter([ms / 1000 for ms in bf16_ms + fp32_ms])
    clock = {"now": 0.0, "started": False}

    def fake_perf_counter() -> float:
        if clock["started"]:
            clock["now"] += next(durations)
        clock["started"] = not clock["started"]
        return clock["now"]

    monkeypatch.setattr(pipeline.time, "perf_counter", fake_perf_counter)
    assert pipeline.cpu_bf16_is_slow() is slow
