"""Adapters in the SFT and reward-model stages (``TrainingStage(adapter=...)``): only the adapter trains (and the RM's
head), the export is a peft adapter directory that reloads to the same model, and almost.pem composes it."""

import json
from pathlib import Path

import lightning as L
import pytest
import torch
from safetensors.torch import load_file

from almost.adapters import adapter_config, load_reward_model
from almost.models import HEAD_FILE, ModelSource, RewardModel, build_causal_lm, load_tokenizer
from data_modules import ComparisonDataModule, DemonstrationDataModule
from lit_models import RewardModelModule, SFTModule
from tests.conftest import FIXTURES, TINY_ARCH
from tests.test_fsdp import run_stage

ROOT = Path(__file__).parent.parent
LORA = {"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ["q_proj", "v_proj"]}
IA3 = {"peft_type": "IA3", "target_modules": ["k_proj", "v_proj", "down_proj"], "feedforward_modules": ["down_proj"]}
ADAPTER_KEY = {"LORA": "lora_", "IA3": "ia3_l"}
LR = {"LORA": 1e-2, "IA3": 1e-1}  # (IA)3 scales activations around 1: it needs larger steps to move in 8 of them


@pytest.fixture(scope="module")
def base_dir(tokenizer_dir, tmp_path_factory) -> str:
    """A tiny causal LM with random weights, saved with its tokenizer: the base every adapter here is trained on."""
    directory = tmp_path_factory.mktemp("base")
    tokenizer = load_tokenizer(ModelSource(path=tokenizer_dir))
    torch.manual_seed(0)
    build_causal_lm(ModelSource(arch=TINY_ARCH, tokenizer=tokenizer_dir), tokenizer).save_pretrained(directory)
    tokenizer.save_pretrained(directory)
    return str(directory)


def make_trainer(**kwargs) -> L.Trainer:
    defaults = dict(accelerator="cpu", devices=1, logger=False, enable_checkpointing=False, enable_progress_bar=False,
                    enable_model_summary=False, gradient_clip_val=1.0, max_steps=8)
    return L.Trainer(**{**defaults, **kwargs})


def sft_data(base_dir: str) -> DemonstrationDataModule:
    return DemonstrationDataModule(str(FIXTURES / "demonstrations.jsonl"), base_dir, batch_size=16, max_length=64)


def logits_of(model, batch: dict[str, torch.Tensor]) -> torch.Tensor:
    model.eval()
    with torch.no_grad():
        return model(input_ids=batch["input_ids"], attention_mask=batch["attention_mask"]).logits


@pytest.mark.parametrize("spec", [LORA, IA3], ids=["lora", "ia3"])
def test_sft_trains_only_the_adapter_and_exports_a_peft_directory(spec, base_dir, tmp_path):
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    L.seed_everything(0)
    out = tmp_path / "adapter"
    model = SFTModule(ModelSource(path=base_dir), lr=LR[spec["peft_type"]], adapter=spec, export_dir=str(out),
                      export_merged=True)
    data = sft_data(base_dir)
    trainer = make_trainer()
    start = trainer.validate(model, data, verbose=False)[0]["val/loss"]
    trainer.fit(model, data)
    end = trainer.validate(model, data, verbose=False)[0]["val/loss"]
    assert end < start - 5e-3, (start, end)  # the adapter learned (slowly: the base is random); a frozen one: equal

    # 1. only adapter parameters are trainable, and the base weights did not move
    trainable = [n for n, p in model.net.named_parameters() if p.requires_grad]
    assert trainable and all(ADAPTER_KEY[spec["peft_type"]] in n for n in trainable), trainable
    base_state = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    for name, tensor in model.net.get_base_model().state_dict().items():
        if ADAPTER_KEY[spec["peft_type"]] not in name:
            plain = name.replace(".base_layer", "")
            assert torch.equal(tensor, base_state[plain]), name
    # 2. a standard peft adapter directory on the base
    config = json.loads((out / "adapter_config.json").read_text())
    assert config["peft_type"] == spec["peft_type"] and config["base_model_name_or_path"] == base_dir
    saved = load_file(str(out / "adapter_model.safetensors"))
    assert saved and all(ADAPTER_KEY[spec["peft_type"]] in k for k in saved)
    identity = 0.0 if spec["peft_type"] == "LORA" else 1.0  # LoRA's B starts at 0, (IA)3's l at 1
    assert any((v - identity).abs().max() > 1e-3 for k, v in saved.items() if "lora_A" not in k)
    # 3. it reloads to the in-memory model, and so does the merged export
    batch = next(iter(data.val_dataloader()))
    expected = logits_of(model.net, batch)
    reloaded = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(out))
    torch.testing.assert_close(logits_of(reloaded, batch), expected, atol=1e-5, rtol=0)
    merged = AutoModelForCausalLM.from_pretrained(str(out / "merged"))
    torch.testing.assert_close(logits_of(merged, batch), expected, atol=1e-5, rtol=0)
    assert (out / "merged" / "tokenizer.json").is_file() and not (out / "merged" / "adapter_config.json").exists()


@pytest.mark.parametrize("spec", [LORA, IA3], ids=["lora", "ia3"])
def test_pem_negates_an_exported_adapter(spec, base_dir, tmp_path):
    """Negation at lambda 1 undoes the update: W_neg = 2 W - W_trained, for LoRA (W - s B A) and (IA)3 (W (2 - l))."""
    from peft import PeftModel
    from transformers import AutoModelForCausalLM

    from almost.pem.__main__ import main as pem

    L.seed_everything(0)
    model = SFTModule(ModelSource(path=base_dir), lr=1e-2, adapter=spec, export_dir=str(tmp_path / "a"))
    make_trainer(max_steps=3).fit(model, sft_data(base_dir))
    pem(["--negate", f"a={tmp_path / 'a'}:1.0", "--out", str(tmp_path / "neg")])

    def merged_weights(adapter: Path) -> dict[str, torch.Tensor]:
        peft_model = PeftModel.from_pretrained(AutoModelForCausalLM.from_pretrained(base_dir), str(adapter))
        return peft_model.merge_and_unload().state_dict()

    base = AutoModelForCausalLM.from_pretrained(base_dir).state_dict()
    trained, negated = merged_weights(tmp_path / "a"), merged_weights(tmp_path / "neg")
    changed = [k for k in base if not torch.equal(trained[k], base[k])]
    assert sorted(changed) == sorted(k for k in base if k.split(".")[-2] in spec["target_modules"])  # 2 layers each
    for key in base:
        torch.testing.assert_close(negated[key], 2 * base[key] - trained[key], atol=1e-6, rtol=0)


def test_reward_model_trains_adapter_and_head_and_reloads(base_dir, tmp_path):
    L.seed_everything(0)
    out = tmp_path / "rm"
    model = RewardModelModule(ModelSource(path=base_dir), lr=1e-2, adapter=LORA, export_dir=str(out),
                              export_merged=True)
    data = ComparisonDataModule(str(FIXTURES / "comparisons.jsonl"), base_dir, batch_size=16, max_length=64)
    head_before = None

    class Snapshot(L.Callback):
        def on_train_start(self, trainer, pl_module):
            nonlocal head_before
            head_before = {k: v.clone() for k, v in pl_module.net.head.state_dict().items()}

    trainer = make_trainer(max_steps=10, callbacks=[Snapshot()])
    trainer.fit(model, data)
    trainable = [n for n, p in model.net.named_parameters() if p.requires_grad]
    assert {n for n in trainable if "lora_" not in n} == {"head.weight", "head.bias"}, trainable
    assert len(trainable) > 2
    assert not torch.equal(model.net.head.weight, head_before["weight"])  # the head trained
    assert (out / "adapter_config.json").is_file() and (out / HEAD_FILE).is_file()

    batch = next(iter(data.val_dataloader()))
    model.net.eval()
    with torch.no_grad():
        expected = model.net.score(**batch)
        for reloaded in (load_reward_model(out), RewardModel.from_pretrained(str(out / "merged"))):
            torch.testing.assert_close(reloaded.eval().score(**batch), expected, atol=1e-5, rtol=0)


def test_resume_from_a_checkpoint_with_an_adapter(base_dir, tmp_path):
    from lightning.pytorch.callbacks import ModelCheckpoint

    def run(max_steps: int, ckpt_path: str | None) -> tuple[SFTModule, L.Trainer]:
        L.seed_everything(0)
        model = SFTModule(ModelSource(path=base_dir), lr=1e-2, adapter=LORA)
        checkpoint = ModelCheckpoint(dirpath=tmp_path / "ckpt", save_last=True)
        trainer = make_trainer(max_steps=max_steps, enable_checkpointing=True, callbacks=[checkpoint],
                               limit_train_batches=3, limit_val_batches=1)
        trainer.fit(model, sft_data(base_dir), ckpt_path=ckpt_path)
        return model, trainer

    first, _ = run(3, None)
    saved = torch.load(tmp_path / "ckpt" / "last.ckpt", weights_only=True)["state_dict"]
    adapter_keys = [k for k in saved if "lora_" in k]
    assert adapter_keys and all(torch.equal(saved[k], first.state_dict()[k]) for k in adapter_keys)
    resumed, trainer = run(5, str(tmp_path / "ckpt" / "last.ckpt"))
    assert trainer.global_step == 5  # went on from step 3, with the saved adapter (strict loading: every key)
    assert any(not torch.equal(saved[k], resumed.state_dict()[k]) for k in adapter_keys)  # and trained it further


def test_bad_adapter_configs_are_refused_in_one_line(base_dir):
    source = ModelSource(path=base_dir)
    with pytest.raises(ValueError, match="peft_type must be one of LORA, IA3, got 'PREFIX_TUNING'"):
        SFTModule(source, adapter={"peft_type": "PREFIX_TUNING"})
    with pytest.raises(ValueError, match="unexpected keyword argument 'rank'"):
        SFTModule(source, adapter={"peft_type": "LORA", "rank": 4})
    with pytest.raises(ValueError, match="modules_to_save is not supported"):
        SFTModule(source, adapter={**LORA, "modules_to_save": ["lm_head"]})
    with pytest.raises(ValueError, match="'task_type' is set by the stage"):
        SFTModule(source, adapter={**LORA, "task_type": "CAUSAL_LM"})
    with pytest.raises(ValueError, match="export_merged merges a trained adapter"):
        SFTModule(source, export_merged=True)
    assert adapter_config({"peft_type": "lora"}).peft_type.value == "LORA"  # case does not matter


@pytest.mark.slow
def test_two_process_fsdp_trains_an_adapter_like_one_process(tokenizer_dir, tmp_path):
    """FSDP2 on 2 CPU processes (as tests/test_fsdp.py): same losses as one process, same exported adapter."""

    def run(out: Path, *extra: str) -> list[dict]:
        return run_stage("configs/fixture/sft.yaml", out, tokenizer_dir, "--model.init_args.lr=1e-2",
                         "--model.init_args.adapter={peft_type: LORA, r: 4, lora_alpha: 8, "
                         "target_modules: [q_proj, v_proj]}", *extra)

    single = run(tmp_path / "single", "--data.init_args.batch_size=8")
    sharded = run(tmp_path / "fsdp", "--config", "configs/parallel/fsdp.yaml", "--trainer.devices=2",
                  "--data.init_args.batch_size=4")
    assert len(single) == 1 and len(sharded) == 2
    for rank in sharded:
        assert rank["world_size"] == 2 and abs(rank["local_params"] / rank["total_params"] - 0.5) < 0.02, rank
    assert sharded[0]["initial_loss"] == pytest.approx(single[0]["initial_loss"], rel=1e-6)
    assert sharded[0]["loss"] < sharded[0]["initial_loss"] - 0.05, sharded  # it trained
    assert sharded[0]["loss"] == pytest.approx(single[0]["loss"], rel=1e-3), (single, sharded)
    assert sharded[0]["loss"] == pytest.approx(sharded[1]["loss"], abs=1e-6)
    # the export gathers every shard: the same tensors as one process writes, trained (B moved from 0). Their values
    # differ by Adam's normalisation of float noise (lora_A has no gradient in step 1), so the losses are the test.
    one, two = (load_file(str(p / "hf" / "adapter_model.safetensors")) for p in (tmp_path / "single", tmp_path / "fsdp"))
    assert one and {k: v.shape for k, v in one.items()} == {k: v.shape for k, v in two.items()}
    assert all(v.abs().max() > 1e-3 for k, v in two.items() if "lora_B" in k)
