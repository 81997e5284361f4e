"""Issue 22, parts 3 and 4: every output location is checked before any network is built, and a non-finite loss,
reward, gradient norm or weight stops training before a checkpoint or export is written from it."""

import math
import os
import subprocess
import tempfile
from importlib.util import find_spec
from pathlib import Path
from types import SimpleNamespace

import lightning as L
import pytest
import torch
import yaml
from lightning.pytorch.callbacks import ModelCheckpoint

import train
from almost.models import ModelSource, RewardModel, build_causal_lm
from data_modules import DemonstrationDataModule, PromptDataModule
from lit_models import PPOModule, SFTModule
from lit_models.callbacks import (NonFiniteCheck, NonFiniteError, Output, OutputCheck, OutputLocationError,
                                  check_output)
from lit_models.evaluation.base import EvaluationModule
from tests.conftest import FIXTURES, TINY_ARCH

ROOT = Path(__file__).parent.parent
STOPPING = "stopping before any checkpoint or export"


def fixture_sft(tokenizer_dir, tmp_path, *overrides: str) -> None:
    """``train.py fit`` of the fixture SFT stage, small and fast, everything written under ``tmp_path``."""
    train.main(["fit", "--config", "configs/fixture/sft.yaml", "--trainer.max_steps=10",
                f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
                f"--model.init_args.source.tokenizer={tokenizer_dir}", f"--model.init_args.export_dir={tmp_path}/hf",
                "--data.init_args.max_length=64", "--data.init_args.batch_size=8", "--trainer.enable_progress_bar=false",
                "--trainer.enable_model_summary=false", *overrides])


def error_of(call, *args) -> str:
    """The one-line message ``train.py`` exits with."""
    with pytest.raises(SystemExit) as exit_:
        call(*args)
    return str(exit_.value.code)


def all_finite(checkpoint: Path) -> bool:
    state = torch.load(checkpoint, map_location="cpu", weights_only=True)["state_dict"]
    return all(torch.isfinite(t).all() for t in state.values() if t.is_floating_point())


# --- 3. output locations ---------------------------------------------------------------------------
@pytest.mark.parametrize("case", ["export_dir", "checkpoints", "logger"])
def test_a_blocked_training_output_fails_in_one_line_before_the_network_is_built(case, tokenizer_dir, tmp_path,
                                                                                monkeypatch):
    monkeypatch.setattr(SFTModule, "build_network", lambda self: pytest.fail("network built before the check"))
    blocker = tmp_path / "blocker"
    blocker.write_text("a file\n")
    override, expected = {
        "export_dir": (f"--model.init_args.export_dir={blocker}",
                       f"export_dir {blocker}: a file is in the way (a directory is needed)"),
        "checkpoints": (f"--trainer.callbacks.dirpath={blocker}/ckpt",
                        f"checkpoints dir {blocker}/ckpt: {blocker} is a file (a directory is needed)"),
        "logger": (f"--trainer.logger.init_args.save_dir={blocker}",
                   f"logger save_dir {blocker}: a file is in the way (a directory is needed)"),
    }[case]
    assert error_of(fixture_sft, tokenizer_dir, tmp_path / "run", override) == f"error: {expected}"
    assert blocker.read_text() == "a file\n" and not list(tmp_path.rglob("*.ckpt"))


def test_a_job_output_that_is_a_directory_fails_in_one_line_before_the_models_load(tmp_path, monkeypatch):
    import lit_models.jobs.responses

    monkeypatch.setattr(lit_models.jobs.responses, "load_models", lambda models: pytest.fail("models loaded"))
    demos = tmp_path / "demos.jsonl"
    demos.write_text('{"messages": [{"role": "user", "content": "Hi?"}, {"role": "assistant", "content": "Hi."}]}\n')
    (tmp_path / "queries.jsonl").write_text('{"prompt": "Who?"}\n')
    (tmp_path / "out.jsonl").mkdir()
    job = {"class_path": "lit_models.jobs.PromptedResponsesJob",
           "init_args": {"models": {"T": str(tmp_path / "no_model")}, "configurations": ["T-good-0shot"],
                         "prompter": {"class_path": "almost.prompting.FewShotPrompter",
                                      "init_args": {"styles": {"good": str(demos)}}},
                         "output": str(tmp_path / "out.jsonl")}}
    data = {"class_path": "data_modules.JobInputDataModule", "init_args": {"path": str(tmp_path / "queries.jsonl")}}
    config = tmp_path / "job.yaml"
    config.write_text(yaml.safe_dump({"model": job, "data": data}))
    message = error_of(train.main, ["predict", "--config", str(config), "--trainer.logger=false",
                                    f"--trainer.default_root_dir={tmp_path}"])
    assert message == f"error: output {tmp_path}/out.jsonl: is a directory (a file is needed)"


def test_an_evaluation_out_dir_is_checked_at_setup(tokenizer_dir, tmp_path):
    (tmp_path / "results").write_text("")
    module = EvaluationModule(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), out_dir=str(tmp_path / "results"))
    trainer = L.Trainer(logger=False, enable_checkpointing=False)
    with pytest.raises(OutputLocationError, match=r"^out_dir \S+/results: a file is in the way \(a directory is"):
        OutputCheck().setup(trainer, module, "test")
    module.hparams.out_dir = str(tmp_path / "new" / "results")  # to be created: fine, and nothing is created yet
    OutputCheck().setup(trainer, module, "test")
    assert not (tmp_path / "new").exists()


def messages_as_another_user(outputs: list[Output]) -> list[str]:
    """The errors of ``check_output`` for ``outputs``, asked by a forked process as user ``nobody`` when we are root
    (root may write anywhere)."""
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: only file-system checks, then out without running any cleanup of the parent's
        try:
            if os.geteuid() == 0:
                os.setgid(65534)
                os.setuid(65534)
            messages = []
            for output in outputs:
                try:
                    check_output(output)
                except OutputLocationError as error:
                    messages.append(str(error))
            os.write(write, "\n".join(messages).encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        text = pipe.read()
    os.waitpid(pid, 0)
    return text.splitlines()


def test_a_location_this_user_cannot_write_is_named():
    root = Path(tempfile.mkdtemp(dir="/tmp"))  # outside pytest's private (0700) folders, so another user sees it
    try:
        root.chmod(0o755)
        locked = root / "locked"
        locked.mkdir(mode=0o555)
        (locked / "out.jsonl").write_text("")
        (locked / "out.jsonl").chmod(0o444)
        (root / "open").mkdir()
        (root / "open").chmod(0o777)  # the control: a location everyone may write
        messages = messages_as_another_user([Output("checkpoints dir", str(locked / "ckpt"), "dir"),
                                             Output("output", str(locked / "out.jsonl"), "file"),
                                             Output("output", str(root / "open" / "out.jsonl"), "file")])
        assert messages == [f"checkpoints dir {locked}/ckpt: not writable (cannot create it in {locked})",
                            f"output {locked}/out.jsonl: not writable"]
    finally:
        subprocess.run(["chmod", "-R", "u+w", str(root)])
        subprocess.run(["rm", "-rf", str(root)])


# --- 4. non-finite numbers -----------------------------------------------------------------------------
@pytest.mark.parametrize("lr, quantity", [("1e8", "gradient norm is nan"), ("1e20", "train/loss is nan")])
def test_a_diverging_run_stops_before_a_nonfinite_checkpoint_or_export(lr, quantity, tokenizer_dir, tmp_path):
    # lr 1e4 is not enough: AdamW's step is about lr whatever the gradient, gradients are clipped, and the model
    # collapses to a uniform prediction (loss ln V) with finite weights. 1e8 overflows the backward pass of the
    # second step, 1e20 the forward pass.
    message = error_of(fixture_sft, tokenizer_dir, tmp_path, f"--model.init_args.lr={lr}",
                       "--trainer.callbacks.every_n_train_steps=1")
    assert message == f"error: step 1: {quantity}; {STOPPING}"
    checkpoints = sorted((tmp_path / "ckpt").glob("*.ckpt"))
    assert [p.name for p in checkpoints] == ["epoch=0-step=1.ckpt", "last.ckpt"]  # after the first, finite step
    assert all(all_finite(p) for p in checkpoints)
    assert not (tmp_path / "hf").exists()


class Poison(L.Callback):
    """Puts a NaN into the first weight at the end of a step (before ModelCheckpoint) or of training (before the
    export)."""

    def __init__(self, at_step: int | None = None, at_end: bool = False) -> None:
        self.at_step, self.at_end = at_step, at_end

    def poison(self, pl_module) -> None:
        with torch.no_grad():
            next(pl_module.parameters()).view(-1)[0] = math.nan

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if trainer.global_step == self.at_step:
            self.poison(pl_module)

    def on_train_end(self, trainer, pl_module) -> None:
        if self.at_end:
            self.poison(pl_module)


def sft_fit(tokenizer_dir, tmp_path, callbacks, steps=3) -> SFTModule:
    L.seed_everything(0)
    model = SFTModule(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), lr=3e-3, export_dir=str(tmp_path / "hf"))
    data = DemonstrationDataModule(str(FIXTURES / "demonstrations.jsonl"), tokenizer_dir, batch_size=8, max_length=32)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_steps=steps, limit_val_batches=0, callbacks=callbacks, default_root_dir=str(tmp_path))
    trainer.fit(model, data)
    return model


@pytest.mark.parametrize("guard", [True, False])
def test_no_checkpoint_is_written_from_nonfinite_weights(guard, tokenizer_dir, tmp_path):
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=1, save_last=True)
    callbacks = [Poison(at_step=2), *([NonFiniteCheck()] if guard else []), checkpoint]
    if not guard:  # the control: without the check, NaN weights train on silently into checkpoint and export
        sft_fit(tokenizer_dir, tmp_path, callbacks)
        assert not all_finite(tmp_path / "ckpt" / "last.ckpt") and (tmp_path / "hf").is_dir()
        return
    with pytest.raises(NonFiniteError, match=r"^step 2: weight net\.\S+ is not finite; not writing the checkpoint$"):
        sft_fit(tokenizer_dir, tmp_path, callbacks)
    assert sorted(p.name for p in (tmp_path / "ckpt").glob("*.ckpt")) == ["epoch=0-step=1.ckpt", "last.ckpt"]
    assert all(all_finite(p) for p in (tmp_path / "ckpt").glob("*.ckpt"))


def test_no_export_is_written_from_nonfinite_weights(tokenizer_dir, tmp_path):
    model = sft_fit(tokenizer_dir, tmp_path, [NonFiniteCheck()], steps=1)  # the control: a finite run exports
    assert (tmp_path / "hf" / "model.safetensors").is_file() and model.net is not None
    with pytest.raises(NonFiniteError, match=r"^step 1: weight net\.\S+ is not finite; not exporting$"):
        sft_fit(tokenizer_dir, tmp_path / "poisoned", [Poison(at_end=True), NonFiniteCheck()], steps=1)
    assert not (tmp_path / "poisoned" / "hf").exists()


def test_a_nonfinite_ppo_statistic_stops_at_the_end_of_its_batch():
    check = NonFiniteCheck()
    finite = {"rollout/score": torch.tensor(0.5), "ppo/value_loss": torch.tensor(1.0)}
    check.on_train_batch_end(SimpleNamespace(callback_metrics=finite, global_step=8), None, None, None, 0)
    logged = {**finite, "ppo/value_loss": torch.tensor(math.inf), "val/score": torch.tensor(math.nan)}
    with pytest.raises(NonFiniteError, match=rf"^step 8: ppo/value_loss is inf; {STOPPING}$"):
        check.on_train_batch_end(SimpleNamespace(callback_metrics=logged, global_step=8), None, None, None, 0)


class NaNRewardPPO(PPOModule):
    """PPO whose reward scores every answer NaN (a broken reward model or judge)."""

    def score_responses(self, rollout, prompts) -> torch.Tensor:
        return torch.full((rollout.batch_size,), math.nan)


def test_a_nan_reward_stops_ppo_before_any_update_checkpoint_or_export(tokenizer_dir, tokenizer, tmp_path):
    source = ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)
    torch.manual_seed(0)
    for name, net in (("policy", build_causal_lm(source, tokenizer)), ("rm", RewardModel.build(source, tokenizer))):
        net.save_pretrained(tmp_path / name)
        tokenizer.save_pretrained(tmp_path / name)
    L.seed_everything(0)
    model = NaNRewardPPO(ModelSource(path=str(tmp_path / "policy")), str(tmp_path / "rm"), max_new_tokens=8,
                         minibatch_size=4, export_dir=str(tmp_path / "hf"))
    data = PromptDataModule(str(FIXTURES / "prompts.jsonl"), str(tmp_path / "policy"), batch_size=4, max_length=32,
                            shuffle=False)
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), every_n_train_steps=1, save_last=True)
    trainer = L.Trainer(accelerator="cpu", logger=False, enable_progress_bar=False, enable_model_summary=False,
                        max_epochs=1, limit_train_batches=2, limit_val_batches=0,
                        callbacks=[NonFiniteCheck(), checkpoint], default_root_dir=str(tmp_path))
    with pytest.raises(NonFiniteError, match=rf"^step 0: rollout/score has 4 non-finite values of 4 \(e\.g\. nan\); "
                                             rf"{STOPPING}$"):
        trainer.fit(model, data)
    assert model.rollouts_done == 0 and trainer.global_step == 0  # no optimizer stepped
    assert not (tmp_path / "ckpt").exists() and not (tmp_path / "hf").exists()


# --- bad input files through train.py: one line, no traceback ---------------------------------------------------
def test_a_bad_data_line_or_a_broken_gguf_file_is_one_line_from_train_py(tokenizer_dir, tmp_path):
    bad = tmp_path / "demos.jsonl"
    bad.write_text('{"messages": [{"role": "user", "content": "hi"}, {"role": "assistant", "content": "hello"}]}\n'
                   "{not json\n")
    message = error_of(fixture_sft, tokenizer_dir, tmp_path / "run", f"--data.init_args.path={bad}")
    assert message.startswith(f"error: {bad}:2: ") and "\n" not in message
    cut = tmp_path / "cut.gguf"
    cut.write_bytes(b"GGUF\x03\x00\x00\x00")
    config = yaml.safe_load((ROOT / "configs/fixture/sft.yaml").read_text())
    config["model"]["init_args"]["source"] = {"path": str(cut)}  # a GGUF file as the model
    (tmp_path / "gguf.yaml").write_text(yaml.safe_dump({**config, "base": str(ROOT / "configs/sandbox/base.yaml")}))
    message = error_of(train.main, ["fit", "--config", str(tmp_path / "gguf.yaml"),
                                    f"--trainer.logger.init_args.save_dir={tmp_path}/run2"])
    problem = "truncated GGUF file" if find_spec("gguf") else "reading GGUF files needs the optional 'gguf' package"
    assert message.startswith(f"error: {cut}: {problem}") and "\n" not in message
