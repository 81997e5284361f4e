"""Tiny end-to-end training runs of the reward-model and SFT stages on one CPU process."""

import lightning as L
import torch

from almost.models import ModelSource, RewardModel
from data_modules import ComparisonDataModule, DemonstrationDataModule
from lit_models import RewardModelModule, SFTModule
from tests.conftest import FIXTURES, TINY_ARCH


def make_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False,
                    enable_progress_bar=False, enable_model_summary=False, gradient_clip_val=1.0)
    return L.Trainer(**{**defaults, **kwargs})


def rm_setup(tokenizer_dir, **model_kwargs):
    L.seed_everything(0)
    model = RewardModelModule(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), lr=3e-3, **model_kwargs)
    data = ComparisonDataModule(str(FIXTURES / "comparisons.jsonl"), tokenizer_dir, batch_size=16, max_length=64)
    return model, data


def sft_setup(tokenizer_dir, **model_kwargs):
    L.seed_everything(0)
    model = SFTModule(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), lr=3e-3, **model_kwargs)
    data = DemonstrationDataModule(str(FIXTURES / "demonstrations.jsonl"), tokenizer_dir, batch_size=16, max_length=64)
    return model, data


def test_reward_model_learns_separable_preference_and_exports(tokenizer_dir, tmp_path):
    model, data = rm_setup(tokenizer_dir, export_dir=str(tmp_path / "rm"))
    trainer = make_trainer(max_epochs=2)
    trainer.fit(model, data)
    metrics = trainer.validate(model, data, verbose=False)[0]
    assert metrics["val/accuracy"] > 0.9, metrics
    assert metrics["val/margin"] > 1.0 and metrics["val/loss"] < 0.3, metrics

    # predict scores every comparison of the file, in order
    predictions = trainer.predict(model, data)
    chosen = torch.cat([p["chosen_rewards"] for p in predictions])
    rejected = torch.cat([p["rejected_rewards"] for p in predictions])
    assert len(chosen) == len(rejected) == 400 and (chosen > rejected).float().mean() > 0.9

    # export round trip: the reloaded model gives the same rewards
    batch = next(iter(data.val_dataloader()))
    reloaded = RewardModel.from_pretrained(str(tmp_path / "rm")).eval()
    model.net.eval()
    with torch.no_grad():
        torch.testing.assert_close(reloaded.score(**batch), model.net.score(**batch), atol=1e-6, rtol=0)


def test_sft_drives_response_loss_down_and_exports(tokenizer_dir, tmp_path):
    from transformers import AutoModelForCausalLM

    model, data = sft_setup(tokenizer_dir, export_dir=str(tmp_path / "sft"))
    trainer = make_trainer(max_epochs=4)
    start = trainer.validate(model, data, verbose=False)[0]["val/loss"]
    trainer.fit(model, data)
    end = trainer.validate(model, data, verbose=False)[0]
    assert end["val/loss"] < 0.5 * start, (start, end)
    assert abs(end["val/perplexity"] - torch.tensor(end["val/loss"]).exp().item()) < 1e-3

    predictions = trainer.predict(model, data)
    logprob_sum = torch.cat([p["response_logprob"] for p in predictions])
    n_tokens = torch.cat([p["response_tokens"] for p in predictions])
    assert len(logprob_sum) == 400 and (n_tokens > 0).all()
    assert abs(-logprob_sum.sum().item() / n_tokens.sum().item() - end["val/loss"]) < 0.3  # all data vs val split

    batch = next(iter(data.val_dataloader()))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "sft")).eval()
    model.net.eval()
    with torch.no_grad():
        expected = model.net(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
        got = reloaded(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=0)


def test_gradient_checkpointing_changes_memory_not_math(tokenizer_dir):
    losses = {}
    for checkpointing in (False, True):
        model, data = sft_setup(tokenizer_dir, gradient_checkpointing=checkpointing)
        trainer = make_trainer(max_steps=3, limit_val_batches=0)
        trainer.fit(model, data)
        assert model.net.is_gradient_checkpointing == checkpointing
        losses[checkpointing] = trainer.callback_metrics["train/loss"].item()
    assert abs(losses[True] - losses[False]) < 1e-5, losses


def test_bf16_mixed_trains_with_gradient_clipping_like_fp32(tokenizer_dir):
    # Lightning's mixed-precision plugin refuses to clip a fused optimizer's gradients: the modules must not
    # hand it one. The bf16 run follows the fp32 one (same seed, data and steps) up to bf16 rounding.
    losses = {}
    for precision in ("32-true", "bf16-mixed"):
        model, data = sft_setup(tokenizer_dir)
        trainer = make_trainer(max_steps=6, limit_val_batches=0, precision=precision)
        trainer.fit(model, data)
        losses[precision] = trainer.callback_metrics["train/loss"].item()
    assert abs(losses["bf16-mixed"] - losses["32-true"]) < 0.05 * losses["32-true"], losses


class StopAfterFirstEpoch(L.Callback):
    def on_train_epoch_end(self, trainer, pl_module):
        trainer.should_stop = True


def test_interrupted_run_resumes_to_the_same_weights(tokenizer_dir, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(callbacks, ckpt_path=None):
        model, data = rm_setup(tokenizer_dir)
        data.hparams.shuffle = False  # the resumed epoch must see the batches in the same order
        trainer = make_trainer(max_epochs=2, limit_train_batches=6, limit_val_batches=1, callbacks=callbacks,
                               enable_checkpointing=True, default_root_dir=str(tmp_path))
        trainer.fit(model, data, ckpt_path=ckpt_path)
        return model, trainer

    uninterrupted, _ = run([])
    checkpoint = ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)
    _, first = run([checkpoint, StopAfterFirstEpoch()])
    assert first.current_epoch == 1 and first.global_step == 6
    resumed, second = run([ModelCheckpoint(dirpath=str(tmp_path / "ckpt"), save_last=True)], ckpt_path="last")
    assert second.global_step == 12
    for (name, a), b in zip(uninterrupted.net.state_dict().items(), resumed.net.state_dict().values()):
        torch.testing.assert_close(a, b, atol=1e-6, rtol=0, msg=name)
