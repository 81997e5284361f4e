"""FSDP2 on 2 CPU processes really shards, and trains like one process on the same data."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).parent.parent
# Tolerances, from measurements on this machine (6 AdamW steps, same 8 examples per step):
# - FSDP2 vs DDP on 2 processes (identical per-rank batches): equal to ~1e-7 relative -> sharding adds nothing.
# - 2 processes vs 1 process (batches of 4+4 vs 8, padded differently): 0.04%-0.6% relative. Float32
#   noise on near-cancelling gradients (chosen and rejected share the prompt) is turned into full
#   +-lr steps by Adam's normalisation, so the single-process comparison needs a looser bound.
SHARDING_TOLERANCE = 1e-5
DATA_PARALLEL_TOLERANCE = 1e-2


def run_stage(config: str, out: Path, tokenizer_dir: str, *extra: str) -> list[dict]:
    args = [sys.executable, "train.py", "fit", "--config", config,
            f"--model.init_args.source.tokenizer={tokenizer_dir}",
            "--model.init_args.source.arch={model_type: llama, hidden_size: 64, intermediate_size: 128, "
            "num_hidden_layers: 2, num_attention_heads: 4}",
            "--model.init_args.export_dir=" + str(out / "hf"),
            "--trainer.max_epochs=1", "--trainer.max_steps=6", "--trainer.logger=false",
            "--trainer.enable_checkpointing=false", "--trainer.callbacks=[]", "--trainer.enable_progress_bar=false",
            "--trainer.limit_val_batches=0", "--data.init_args.shuffle=false", f"--trainer.default_root_dir={out}",
            "--trainer.callbacks+=tests.helpers.ShardingReport", f"--trainer.callbacks.out={out}", *extra]
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    result = subprocess.run(args, cwd=ROOT, env=env, capture_output=True, text=True, timeout=600)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    return [json.loads(p.read_text()) for p in sorted(out.glob("rank*.json"))]


@pytest.mark.parametrize("stage, lr", [("rm", 1e-4), ("sft", 1e-3)])
def test_two_process_fsdp_shards_and_matches_single_process(stage, lr, tokenizer_dir, tmp_path):
    config = f"configs/fixture/{stage}.yaml"
    # one process, batch 8 | two processes, batch 4 each: the same 8 examples per optimizer step
    single = run_stage(config, tmp_path / "single", tokenizer_dir, f"--model.init_args.lr={lr}", "--data.init_args.batch_size=8")
    two_processes = [f"--model.init_args.lr={lr}", "--trainer.devices=2", "--data.init_args.batch_size=4"]
    sharded = run_stage(config, tmp_path / "fsdp", tokenizer_dir, "--config", "configs/parallel/fsdp.yaml", *two_processes)
    replicated = run_stage(config, tmp_path / "ddp", tokenizer_dir, "--config", "configs/parallel/ddp.yaml", *two_processes)
    assert len(single) == 1 and len(sharded) == len(replicated) == 2
    total = single[0]["total_params"]
    assert single[0]["local_params"] == total
    for rank in sharded:
        assert rank["world_size"] == 2 and rank["global_step"] == 6 and rank["total_params"] == total
        assert abs(rank["local_params"] / total - 0.5) < 0.02, rank  # each rank holds about half
    assert sum(r["local_params"] for r in sharded) >= total
    assert sharded[0]["initial_loss"] == pytest.approx(single[0]["initial_loss"], rel=1e-6)  # same initial weights
    assert sharded[0]["loss"] < 0.95 * sharded[0]["initial_loss"]  # it trained
    assert sharded[0]["loss"] == pytest.approx(replicated[0]["loss"], rel=SHARDING_TOLERANCE), (replicated, sharded)
    assert sharded[0]["loss"] == pytest.approx(single[0]["loss"], rel=DATA_PARALLEL_TOLERANCE), (single, sharded)
    assert sharded[0]["loss"] == pytest.approx(sharded[1]["loss"], abs=1e-6)
    assert (tmp_path / "fsdp" / "hf" / "config.json").is_file()  # export gathers the shards
