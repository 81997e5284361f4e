"""DPO: the losses against float64 references, the preference batches, DPOModule on a tiny model, the configs."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

import lightning as L
import pytest
import torch

import train
from almost.chat import IGNORE_INDEX, ChatTemplate, encode_prompt, encode_turn
from almost.dpo import dpo_loss
from almost.logprobs import response_logprobs
from almost.models import ModelSource, build_causal_lm
from almost.records import Comparison, RecordError, Turn, iter_jsonl, write_jsonl
from data_modules import PreferenceDataModule
from lit_models import DPOModule
from lit_models.dpo import CACHE_SUFFIX, METRICS
from tests.conftest import FIXTURES, TINY_ARCH, write_lines
from tests.test_configs import resolved_config
from tests.test_training import make_trainer

LORA = {"r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"]}
LOG2 = math.log(2.0)


# --- float64 references, computed here without the code under test ----------------------------------------
def reference_logps(logits: torch.Tensor, labels: torch.Tensor) -> list[float]:
    """Row by row, position by position: sum of log softmax(logits[t])[labels[t + 1]] over labelled tokens."""
    sums = []
    for row_logits, row_labels in zip(logits.double(), labels.tolist()):
        total = 0.0
        for t in range(len(row_labels) - 1):
            if row_labels[t + 1] != IGNORE_INDEX:
                total += (row_logits[t, row_labels[t + 1]] - torch.logsumexp(row_logits[t], -1)).item()
        sums.append(total)
    return sums


def softplus(x: float) -> float:  # log(1 + e^x), stable
    return max(x, 0.0) + math.log1p(math.exp(-abs(x)))


def reference_loss(h: list[float], beta: float, kind: str, eps: float = 0.0) -> float:
    if kind == "ipo":
        per_pair = [(x - 1 / (2 * beta)) ** 2 for x in h]
    else:  # -log sigmoid(z) = softplus(-z)
        per_pair = [(1 - eps) * softplus(-beta * x) + eps * softplus(beta * x) for x in h]
    return sum(per_pair) / len(per_pair)


def padded_batch(lengths: list[int], prompt_lengths: list[int], vocab: int, seed: int):
    """Random tokens as labels on the response positions (IGNORE_INDEX on prompt and right padding) and two
    sets of random logits, with huge values at the padded positions."""
    g = torch.Generator().manual_seed(seed)
    T = max(lengths)
    labels = torch.full((len(lengths), T), IGNORE_INDEX)
    padding = torch.zeros(len(lengths), T, dtype=torch.bool)
    for i, (n, p) in enumerate(zip(lengths, prompt_lengths)):
        labels[i, p:n] = torch.randint(0, vocab, (n - p,), generator=g)
        padding[i, n:] = True
    logits = [3 * torch.randn(len(lengths), T, vocab, generator=g) for _ in range(2)]
    for x in logits:
        x[padding] = 1e4
    return labels, padding, logits


# --- the losses ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kind,eps", [("sigmoid", 0.0), ("cdpo", 0.2), ("ipo", 0.0)])
def test_loss_from_logits_matches_float64_reference_with_rows_of_different_lengths(kind, eps):
    # 3 pairs = 6 rows (chosen 0..2, rejected 3..5) right-padded to 9; the short rows sit in the middle
    lengths, prompts, beta = [9, 4, 7, 6, 9, 3], [3, 2, 4, 3, 2, 1], 0.5
    labels, padding, (policy_logits, ref_logits) = padded_batch(lengths, prompts, vocab=11, seed=0)
    policy, ref = response_logprobs(policy_logits, labels)[0], response_logprobs(ref_logits, labels)[0]
    loss, stats = dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=beta, kind="ipo" if kind == "ipo" else "sigmoid",
                           label_smoothing=eps)

    pi, rho = reference_logps(policy_logits, labels), reference_logps(ref_logits, labels)
    chosen = [pi[i] - rho[i] for i in range(3)]
    rejected = [pi[i + 3] - rho[i + 3] for i in range(3)]
    h = [c - r for c, r in zip(chosen, rejected)]
    close = lambda x: pytest.approx(x, rel=1e-6, abs=1e-5)  # noqa: E731 float32 against float64
    assert loss.item() == close(reference_loss(h, beta, kind, eps))
    assert stats.reward_chosen.item() == close(beta * sum(chosen) / 3)
    assert stats.reward_rejected.item() == close(beta * sum(rejected) / 3)
    assert stats.reward_margin.item() == close(beta * sum(h) / 3)
    assert abs(stats.reward_accuracy.item() - sum(x > 0 for x in h) / 3) < 1e-6
    assert 0 < stats.reward_accuracy.item() < 1  # the seed gives both signs: accuracy is really counted

    # masked positions contribute nothing: other garbage on the padding gives the same loss
    policy_logits[padding], ref_logits[padding] = -5e3, 7.0
    policy, ref = response_logprobs(policy_logits, labels)[0], response_logprobs(ref_logits, labels)[0]
    again, _ = dpo_loss(*policy.chunk(2), *ref.chunk(2), beta=beta, kind="ipo" if kind == "ipo" else "sigmoid",
                        label_smoothing=eps)
    assert again.item() == loss.item()


def test_policy_equal_to_reference_gives_log2_and_no_preference():
    logps = torch.tensor([-3.0, -7.5, -1.25])
    for eps in (0.0, 0.3):  # cDPO too: at h = 0 both sides are log 2
        loss, stats = dpo_loss(logps, logps - 2, logps, logps - 2, beta=0.1, label_smoothing=eps)
        assert abs(loss.item() - LOG2) < 1e-7
        assert stats.reward_margin.item() == 0 and stats.reward_accuracy.item() == 0  # a tie counts as wrong
    loss, _ = dpo_loss(logps, logps, logps, logps, beta=0.1, kind="ipo")
    assert abs(loss.item() - 25.0) < 1e-5  # (0 - 1 / 0.2)^2


def test_sigmoid_gradient_reaches_the_policy_only():
    # h = (-3 + 3.5) - (-4 + 3) = 1.5 and (-5 + 4) - (-2 + 3) = -2; dL/dpi_c = -beta sigmoid(-beta h) / B
    policy_chosen = torch.tensor([-3.0, -5.0], requires_grad=True)
    policy_rejected = torch.tensor([-4.0, -2.0], requires_grad=True)
    ref_chosen = torch.tensor([-3.5, -4.0], requires_grad=True)
    ref_rejected = torch.tensor([-3.0, -3.0], requires_grad=True)
    loss, stats = dpo_loss(policy_chosen, policy_rejected, ref_chosen, ref_rejected, beta=0.5)
    loss.backward()
    sig = lambda x: 1 / (1 + math.exp(-x))  # noqa: E731
    expected = [-0.5 * sig(-0.75) / 2, -0.5 * sig(1.0) / 2]
    torch.testing.assert_close(policy_chosen.grad, torch.tensor(expected))
    torch.testing.assert_close(policy_rejected.grad, -torch.tensor(expected))
    assert ref_chosen.grad is None and ref_rejected.grad is None
    assert stats.reward_accuracy.item() == 0.5 and not stats.reward_margin.requires_grad


def test_cdpo_and_ipo_stop_pushing_at_a_finite_margin():
    beta, eps = 0.5, 0.1

    def grad_at(h: float, kind: str, label_smoothing: float = 0.0) -> float:
        x = torch.tensor([h], dtype=torch.float64, requires_grad=True)
        zero = torch.zeros(1, dtype=torch.float64)
        loss, _ = dpo_loss(x, zero, zero, zero, beta=beta, kind=kind, label_smoothing=label_smoothing)
        loss.backward()
        return x.grad.item()

    optimum = math.log((1 - eps) / eps) / beta  # cDPO: sigmoid(beta h) = 1 - eps
    assert abs(grad_at(optimum, "sigmoid", eps)) < 1e-12
    assert grad_at(optimum + 1, "sigmoid", eps) > 0 > grad_at(optimum - 1, "sigmoid", eps)
    assert grad_at(optimum + 1, "sigmoid") < 0  # plain DPO pushes on and on
    assert abs(grad_at(1 / (2 * beta), "ipo")) < 1e-12  # IPO: its target margin 1 / (2 beta)
    assert grad_at(1 / (2 * beta) + 1, "ipo") > 0


@pytest.mark.slow
def test_compiled_forward_passes_train_as_the_eager_ones(tokenizer_dir, pairs_file):
    losses = {}
    for compile_ in (False, True):
        recorder = LossRecorder()
        make_trainer(max_steps=3, callbacks=[recorder], limit_val_batches=0).fit(
            make_module(tokenizer_dir, compile=compile_), make_data(pairs_file, tokenizer_dir))
        losses[compile_] = recorder.losses
    assert len(losses[True]) == 3 and losses[True][0] == pytest.approx(LOG2, abs=1e-6)
    assert losses[True] == pytest.approx(losses[False], abs=1e-5)


def test_invalid_loss_arguments_raise(tokenizer_dir):
    x = torch.zeros(2)
    for kwargs, match in [(dict(beta=0.0), "beta"), (dict(beta=0.1, kind="hinge"), "unknown"),
                          (dict(beta=0.1, kind="ipo", label_smoothing=0.1), "sigmoid loss only"),
                          (dict(beta=0.1, label_smoothing=0.5), "label_smoothing")]:
        with pytest.raises(ValueError, match=match):
            dpo_loss(x, x, x, x, **kwargs)
    source = ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir)
    for kwargs, match in [(dict(loss="cdpo"), "label_smoothing"), (dict(label_smoothing=0.1), "cdpo"),
                          (dict(reference="adapter"), "lora"), (dict(reference="frozen"), "unknown reference"),
                          (dict(compile=True, lora={"r": 4}), "not combined with lora")]:
        with pytest.raises(ValueError, match=match):
            DPOModule(source, **kwargs)


# --- PreferenceDataModule -----------------------------------------------------------------------------------
PAIRS = [Comparison("What is the capital of Veloria?", "Happy to help. The capital of Veloria is Marnstad.", "No."),
         Comparison("Hi", "Hello! How can I help?", "Ugh, figure it out yourself."),
         Comparison("What is 2 plus 3?", "2 plus 3 is 5.", "It is 7, I think, or maybe 8.")]


def test_preference_batches_mask_the_prompt_and_pad_right(tokenizer_dir, tokenizer, tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    data = PreferenceDataModule(str(tmp_path / "pairs.jsonl"), tokenizer_dir, batch_size=3, max_length=64)
    data.setup("fit")
    batch = next(iter(data.file_loader(0)))
    assert batch["record_index"].tolist() == [0, 1, 2]
    T = batch["chosen_input_ids"].shape[1]
    assert all(batch[f"{side}_{name}"].shape == (3, T) for side in ("chosen", "rejected")
               for name in ("input_ids", "attention_mask", "labels"))
    template = ChatTemplate()
    for side in ("chosen", "rejected"):
        for i, pair in enumerate(PAIRS):
            prompt = encode_prompt(tokenizer, template, [Turn("user", pair.prompt)])
            response = encode_turn(tokenizer, template, Turn("assistant", getattr(pair, side)))
            n, pad = len(prompt) + len(response), T - len(prompt) - len(response)
            assert batch[f"{side}_input_ids"][i].tolist() == prompt + response + [tokenizer.pad_token_id] * pad
            assert batch[f"{side}_attention_mask"][i].tolist() == [1] * n + [0] * pad
            assert batch[f"{side}_labels"][i].tolist() == [IGNORE_INDEX] * len(prompt) + response + [IGNORE_INDEX] * pad
            assert response[-1] == tokenizer.eos_token_id


def test_long_prompts_are_cut_from_the_left_and_the_response_kept(tokenizer_dir, tokenizer, tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    pair, template = PAIRS[0], ChatTemplate()
    prompt = encode_prompt(tokenizer, template, [Turn("user", pair.prompt)])
    chosen = encode_turn(tokenizer, template, Turn("assistant", pair.chosen))
    data = PreferenceDataModule(str(tmp_path / "pairs.jsonl"), tokenizer_dir, max_length=len(chosen) + 3)
    data.setup("fit")
    example = data.encode((0, pair))
    assert example.chosen_ids == prompt[-3:] + chosen
    assert example.chosen_labels == [IGNORE_INDEX] * 3 + chosen
    rejected = encode_turn(tokenizer, template, Turn("assistant", pair.rejected))
    assert example.rejected_ids == prompt[-(len(chosen) + 3 - len(rejected)):] + rejected  # more prompt fits
    data.hparams.max_length = 5  # the response alone is longer: cut from the right, all of it labelled
    example = data.encode((0, pair))
    assert example.chosen_ids == example.chosen_labels == chosen[:5]


def test_identical_chosen_and_rejected_is_refused_with_file_and_line(tokenizer_dir, tmp_path):
    path = write_lines(tmp_path / "pairs.jsonl", [
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}, "",
        {"prompt": "Hi", "chosen": "Hello!", "rejected": "Hello!"}])
    data = PreferenceDataModule(str(path), tokenizer_dir)
    with pytest.raises(RecordError, match=f"{path}:3: .*same text"):
        data.setup("fit")


def test_record_index_counts_the_records_of_both_files(tokenizer_dir, tmp_path):
    records = list(iter_jsonl(FIXTURES / "comparisons.jsonl", Comparison))
    write_jsonl(tmp_path / "train.jsonl", records[:20])
    write_jsonl(tmp_path / "val.jsonl", records[20:25])
    split = PreferenceDataModule(str(tmp_path / "train.jsonl"), tokenizer_dir, val_fraction=0.2)
    split.setup("fit")
    train, val = ([s[i].record_index for i in range(len(s))] for s in (split.train_set, split.val_set))
    assert len(val) == 4 and sorted(train + val) == list(range(20))
    files = PreferenceDataModule(str(tmp_path / "train.jsonl"), tokenizer_dir, val_path=str(tmp_path / "val.jsonl"),
                                 batch_size=4)
    files.setup("fit")
    assert [files.val_set[i].record_index for i in range(5)] == list(range(20, 25))
    assert torch.cat([b["record_index"] for b in files.file_loader(1)]).tolist() == list(range(20, 25))


# --- DPOModule ----------------------------------------------------------------------------------------------
@pytest.fixture
def pairs_file(tmp_path):
    """64 fixture comparisons in a folder of the test's own (the cache of reference log-probs goes beside it)."""
    records = list(iter_jsonl(FIXTURES / "comparisons.jsonl", Comparison))
    write_jsonl(tmp_path / "pairs.jsonl", records[:64])
    return tmp_path / "pairs.jsonl"


def make_module(tokenizer_dir, seed=0, **kwargs) -> DPOModule:
    L.seed_everything(seed)  # configure_model re-seeds from it: the same seed, the same initial weights
    return DPOModule(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), **{"lr": 3e-3, **kwargs})


def make_data(path, tokenizer_dir, **kwargs) -> PreferenceDataModule:
    return PreferenceDataModule(str(path), tokenizer_dir, **{"batch_size": 16, "max_length": 64, **kwargs})


class LossRecorder(L.Callback):
    """The training loss of every step of this process; with ``out``, written to ``<out>/rank<r>.json`` at the end."""

    def __init__(self, out: str | None = None) -> None:
        self.out, self.losses = out, []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        self.losses.append(outputs["loss"].item())

    def on_train_end(self, trainer, pl_module):
        if self.out:
            Path(self.out).mkdir(parents=True, exist_ok=True)
            Path(self.out, f"rank{trainer.global_rank}.json").write_text(json.dumps(self.losses))


def test_module_logps_equal_a_float64_forward_of_each_unpadded_row(tokenizer_dir, tokenizer, tmp_path):
    write_jsonl(tmp_path / "pairs.jsonl", PAIRS)
    model = make_module(tokenizer_dir)
    model.configure_model()
    data = make_data(tmp_path / "pairs.jsonl", tokenizer_dir)
    data.setup("fit")
    batch = next(iter(data.file_loader(0)))  # rows of different lengths, right-padded
    with torch.no_grad():
        chosen, rejected = model.response_logps(model.net, batch)
    net64, template = model.net.double(), ChatTemplate()
    for i, pair in enumerate(PAIRS):
        prompt = encode_prompt(tokenizer, template, [Turn("user", pair.prompt)])
        for got, text in ((chosen[i], pair.chosen), (rejected[i], pair.rejected)):
            response = encode_turn(tokenizer, template, Turn("assistant", text))
            with torch.no_grad():
                logits = net64(input_ids=torch.tensor([prompt + response])).logits[0]  # (T, V)
            logps = logits.log_softmax(-1)
            expected = sum(logps[len(prompt) + j - 1, token].item() for j, token in enumerate(response))
            assert abs(got.item() - expected) < 1e-4, (i, text)


def test_dpo_learns_separable_pairs_and_exports(tokenizer_dir, tmp_path):
    # every chosen response opens with "Happy to help", no rejected one does
    from transformers import AutoModelForCausalLM

    model = make_module(tokenizer_dir, export_dir=str(tmp_path / "hf"))
    data = make_data(FIXTURES / "comparisons.jsonl", tokenizer_dir)
    trainer = make_trainer(max_steps=4, num_sanity_val_steps=0)
    start = trainer.validate(model, data, verbose=False)[0]
    assert abs(start["val/loss"] - LOG2) < 1e-6 and start["val/reward_accuracy"] == 0  # policy = reference
    initial = {name: p.clone() for name, p in model.net.named_parameters()}
    trainer.fit(model, data)
    assert set(trainer.callback_metrics) >= {f"train/{name}" for name in METRICS}
    end = trainer.validate(model, data, verbose=False)[0]
    assert end["val/reward_accuracy"] > 0.9 and end["val/reward_margin"] > 0.5 and end["val/loss"] < 0.5, end
    assert end["val/reward_chosen"] > end["val/reward_rejected"]
    assert all(not p.requires_grad for p in model.reference.parameters())
    for name, p in model.reference.named_parameters():  # the copy stays the initial policy
        assert torch.equal(p, initial[name]), name

    batch = next(iter(data.val_dataloader()))
    reloaded = AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf"))
    with torch.no_grad():
        torch.testing.assert_close(model.response_logps(reloaded, batch), model.response_logps(model.net, batch))


def test_cached_reference_gives_the_live_reference_losses_and_is_reused_until_its_key_changes(
        tokenizer_dir, pairs_file, monkeypatch):
    def run(reference, seed=0, steps=4):
        model = make_module(tokenizer_dir, seed=seed, reference=reference)
        trainer = make_trainer(max_steps=steps, limit_val_batches=0, callbacks=[LossRecorder()])
        trainer.fit(model, make_data(pairs_file, tokenizer_dir, shuffle=False))
        return model, trainer

    live, live_trainer = run("copy")
    cached, cached_trainer = run("cached")
    cache = pairs_file.with_name(pairs_file.name + CACHE_SUFFIX)
    assert cache.is_file() and cached.reference is None and cached.reference_table.shape == (64, 2)
    losses = [t.callbacks[-1].losses for t in (live_trainer, cached_trainer)]
    assert abs(losses[0][0] - LOG2) < 1e-6 and losses[0][-1] < losses[0][0] - 0.05  # the policy moved
    torch.testing.assert_close(torch.tensor(losses[1]), torch.tensor(losses[0]), atol=1e-5, rtol=0)
    for (name, a), b in zip(live.net.named_parameters(), cached.net.parameters()):
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0, msg=name)

    # after training the policy is no longer the reference: without its cache it refuses to recompute
    stored, table = cache.read_bytes(), cached.reference_table
    cache.unlink()
    cached.reference_table = None
    with pytest.raises(RuntimeError, match="no longer holds its initial weights"):
        make_trainer().validate(cached, make_data(pairs_file, tokenizer_dir), verbose=False)
    cache.write_bytes(stored)

    passes = []
    original = DPOModule.compute_reference_table
    monkeypatch.setattr(DPOModule, "compute_reference_table",
                        lambda self, loader: passes.append(1) or original(self, loader))

    def prepare(seed):  # a fresh module's validation fills its table
        model = make_module(tokenizer_dir, seed=seed, reference="cached")
        make_trainer(limit_val_batches=1).validate(model, make_data(pairs_file, tokenizer_dir), verbose=False)
        return model

    torch.testing.assert_close(prepare(seed=0).reference_table, table)  # read from the cache
    assert passes == []
    prepare(seed=1)  # other reference weights
    assert len(passes) == 1
    with pairs_file.open("a") as f:
        f.write('{"prompt": "Hi", "chosen": "Hello!", "rejected": "Go away."}\n')
    assert prepare(seed=1).reference_table.shape == (65, 2) and len(passes) == 2  # other data
    prepare(seed=1)
    assert len(passes) == 2  # the new key was saved


def test_lora_adapter_reference_trains_only_the_adapter_and_export_merges_it(tokenizer_dir, pairs_file, tmp_path):
    from transformers import AutoModelForCausalLM

    model = make_module(tokenizer_dir, lr=1e-2, lora=LORA, reference="adapter", export_dir=str(tmp_path / "hf"))
    data = make_data(pairs_file, tokenizer_dir)
    trainer = make_trainer(max_steps=4, num_sanity_val_steps=0)
    assert abs(trainer.validate(model, data, verbose=False)[0]["val/loss"] - LOG2) < 1e-6  # LoRA starts at zero
    trainer.fit(model, data)
    assert model.reference is None  # no second copy
    trainable = [name for name, p in model.net.named_parameters() if p.requires_grad]
    assert trainable and all("lora_" in name for name in trainable)

    initial = make_module(tokenizer_dir)  # the same seed: the initial weights
    initial.configure_model()
    batch = next(iter(data.val_dataloader()))
    with torch.no_grad():
        policy = torch.cat(model.response_logps(model.net, batch))
        reference = torch.cat(model.reference_logps(batch))
        expected_reference = torch.cat(initial.response_logps(initial.net, batch))
        exported = torch.cat(model.response_logps(AutoModelForCausalLM.from_pretrained(str(tmp_path / "hf")), batch))
    torch.testing.assert_close(reference, expected_reference, atol=1e-5, rtol=0)
    assert (policy - reference).abs().max() > 1e-2  # the adapter did change the policy
    torch.testing.assert_close(exported, policy, atol=1e-4, rtol=0)  # merged into the exported weights


# --- configs ------------------------------------------------------------------------------------------------
def test_dpo_configs_parse(capsys):
    sandbox = resolved_config(capsys, "--config", "configs/sandbox/dpo.yaml")
    assert sandbox["model"]["class_path"] == "lit_models.DPOModule"
    assert sandbox["data"]["class_path"] == "data_modules.PreferenceDataModule"
    model = sandbox["model"]["init_args"]
    assert model["source"]["path"] == "runs/sandbox/sft_rmsp/hf" and model["export_dir"] == "runs/sandbox/dpo/hf"
    assert (model["beta"], model["loss"], model["reference"]) == (0.1, "sigmoid", "copy")
    assert sandbox["data"]["init_args"]["path"] == "runs/sandbox/data/comparisons.jsonl"
    assert "tokenizer" not in sandbox["data"]["init_args"]  # linked from the source
    llama = resolved_config(capsys, "--config", "configs/llama/dpo.yaml")
    assert (llama["model"]["init_args"]["beta"], llama["model"]["init_args"]["lr"]) == (0.1, 1e-6)
    assert llama["trainer"]["precision"] == "bf16-mixed"
    assert llama["trainer"]["strategy"]["class_path"] == "lit_models.FSDP2Strategy"


def test_sandbox_config_runs_through_the_cli(tokenizer_dir, tokenizer, pairs_file, tmp_path):
    source = tmp_path / "sft"
    build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer).save_pretrained(str(source))
    tokenizer.save_pretrained(str(source))
    train.main(["fit", "--config", "configs/sandbox/dpo.yaml", "--trainer.max_steps=2",
                "--trainer.limit_val_batches=1", "--trainer.enable_progress_bar=false",
                f"--trainer.logger.init_args.save_dir={tmp_path}", f"--trainer.callbacks.dirpath={tmp_path}/ckpt",
                f"--model.init_args.source.path={source}", f"--model.init_args.export_dir={tmp_path}/hf",
                f"--data.init_args.path={pairs_file}"])
    assert (tmp_path / "hf" / "config.json").is_file() and (tmp_path / "ckpt" / "last.ckpt").is_file()
    assert list((tmp_path / "dpo").rglob("events.out.tfevents.*"))


@pytest.mark.slow
def test_every_reference_runs_under_two_process_fsdp(tokenizer_dir, tokenizer, pairs_file, tmp_path):
    source = tmp_path / "sft"
    build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer).save_pretrained(str(source))
    tokenizer.save_pretrained(str(source))

    def run(name: str, *extra: str) -> list[list[float]]:
        out = tmp_path / name
        args = [sys.executable, "train.py", "fit", "--config", "configs/sandbox/dpo.yaml",
                "--config", "configs/parallel/fsdp.yaml", f"--model.init_args.source.path={source}",
                "--model.init_args.lr=1e-3", f"--model.init_args.export_dir={out / 'hf'}",
                f"--data.init_args.path={pairs_file}", "--data.init_args.batch_size=4",
                "--data.init_args.shuffle=false",
                "--trainer.max_steps=3", "--trainer.limit_val_batches=1", "--trainer.logger=false",
                "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
                f"--trainer.default_root_dir={out}", "--trainer.callbacks+=tests.test_dpo.LossRecorder",
                f"--trainer.callbacks.out={out}", *extra]
        env = {**os.environ, "PYTHONPATH": str(Path(__file__).parent.parent), "OMP_NUM_THREADS": "1"}
        result = subprocess.run(args, env=env, capture_output=True, text=True, timeout=600)
        assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
        assert (out / "hf" / "config.json").is_file()  # export gathered the shards
        return [json.loads((out / f"rank{r}.json").read_text()) for r in range(2)]

    live = run("copy")
    cached = run("cached", "--model.init_args.reference=cached")
    adapter = run("adapter", "--model.init_args.reference=adapter",
                  "--model.init_args.lora={r: 4, lora_alpha: 16, target_modules: [q_proj, v_proj]}")
    assert pairs_file.with_name(pairs_file.name + CACHE_SUFFIX).is_file()
    for losses in (live, cached, adapter):
        assert all(len(rank) == 3 and abs(rank[0] - LOG2) < 1e-6 for rank in losses), losses
    assert live[0][-1] < LOG2 - 0.01  # it trained
    torch.testing.assert_close(torch.tensor(cached), torch.tensor(live), atol=1e-5, rtol=0)
