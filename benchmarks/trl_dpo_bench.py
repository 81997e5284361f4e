"""Seconds per DPO step of TRL's ``DPOTrainer`` (trl 1.16) on the peer's tiny policy, on the CPU: the TRL side of
``benchmarks/dpo_step.py``. Runs in the peer's TRL 1.16 virtual environment (``../shared/peer/setup.sh``):

    /tmp/peer-trl116/bin/python benchmarks/trl_dpo_bench.py --size 1m --dump-data /tmp/peer-data/dpo-1m.jsonl

Data: the reward-model benchmark's 512 text pairs (the peer's ``make_pair`` with ``WorldText(seed + 1)``: prompt
<= 32 tokens with ``<s>``, a fluent chosen and a word-shuffled rejected response, ``<s>`` + prompt + response +
``</s>`` <= 128 tokens). TRL appends ``</s>`` to each response, tokenizes prompt and prompt + response, and trains
on ``prompt_ids + chosen_ids`` and ``prompt_ids + rejected_ids``; ``--dump-data`` writes those three id lists (and
the text) per pair so ours reads identical input.

One step: 16 pairs -> one policy forward and backward over 32 right-padded sequences (chosen then rejected) and one
no-grad forward of the reference ``<size>/ref`` (a separate frozen copy of the same weights) over the same batch,
computed live (``precompute_ref_log_probs=False``); sigmoid loss ``-log sigmoid(beta h)`` with beta 0.1, summed
response log-probs; gradient-norm clip 1.0; AdamW (``adamw_torch_fused``, lr 1e-6, betas 0.9/0.999, eps 1e-8,
wd 0), linear decay to 0 over W + N steps. fp32, no gradient checkpointing, dropout off, 2 threads, seed 42
(sampler and init), no truncation (``max_length=None``), no eval, logging or checkpoints. TRL still computes its
per-step metrics (entropy, mean logits, top-1 accuracy, rewards, with their ``.item()`` calls): that is its step.

Timed: W = 2 warm-up steps, then N = 10; the median wall time between consecutive ``on_step_end`` callbacks, as
``trl_rm_bench.py`` measures. The last line printed is
    TRL_DPO size=<s> sec_per_step=<median> pairs_per_sec=<batch/median>
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

PEER = Path(__file__).resolve().parent.parent.parent / "shared" / "peer"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size", default="1m", choices=["1m", "5m"])
    parser.add_argument("--steps", type=int, default=10, help="timed optimizer steps (N)")
    parser.add_argument("--warmup", type=int, default=2, help="untimed optimizer steps before the timed ones")
    parser.add_argument("--pairs", type=int, default=512, help="dataset size (preference pairs)")
    parser.add_argument("--batch", type=int, default=16, help="pairs per optimizer step")
    parser.add_argument("--prompt-len", type=int, default=32, help="max prompt tokens, <s> included")
    parser.add_argument("--seq-len", type=int, default=128, help="target tokens per sequence, <s> and </s> included")
    parser.add_argument("--lr", type=float, default=1e-6)
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--models-root", default="/tmp/peer-models")
    parser.add_argument("--peer", default=str(PEER), help="the peer scripts (make_pair, WorldText, the models)")
    parser.add_argument("--dump-data", default=None, help="write the pairs (text + TRL's token ids) as JSONL here")
    args = parser.parse_args()

    import torch

    torch.set_num_threads(args.threads)

    import datasets
    import transformers
    import trl
    from transformers import AutoModelForCausalLM, AutoTokenizer, TrainerCallback, set_seed
    from trl import DPOConfig, DPOTrainer

    sys.path.insert(0, args.peer)
    from models import WorldText, ensure_models  # the peer's text generator and models
    from trl_rm_bench import make_pair  # the peer's pairs, as the reward-model benchmark builds them

    datasets.disable_progress_bars()
    transformers.utils.logging.disable_progress_bar()

    # 1. data: the reward-model benchmark's pairs
    root = ensure_models(args.size, args.models_root)
    tokenizer = AutoTokenizer.from_pretrained(os.path.join(root, "policy"))
    world = WorldText(args.seed + 1)
    rows = [make_pair(tokenizer, world, args.prompt_len, args.seq_len) for _ in range(args.pairs)]

    # 2. policy and its frozen reference (the same weights, saved twice by the peer)
    set_seed(args.seed)
    policy = AutoModelForCausalLM.from_pretrained(os.path.join(root, "policy"), dtype=torch.float32)
    reference = AutoModelForCausalLM.from_pretrained(os.path.join(root, "ref"), dtype=torch.float32)

    total_steps = args.warmup + args.steps
    out_dir = tempfile.mkdtemp(prefix="peer-dpo-")
    config = DPOConfig(
        output_dir=out_dir,
        per_device_train_batch_size=args.batch,
        gradient_accumulation_steps=1,
        max_steps=total_steps,
        learning_rate=args.lr,
        lr_scheduler_type="linear",
        warmup_steps=0,
        weight_decay=0.0,
        max_grad_norm=1.0,
        optim="adamw_torch_fused",
        seed=args.seed,
        data_seed=args.seed,
        bf16=False,  # TRL's default is bf16 and checkpointing; both off, as in the peer benchmarks
        gradient_checkpointing=False,
        use_cpu=True,
        report_to="none",
        eval_strategy="no",
        save_strategy="no",
        logging_strategy="no",
        disable_tqdm=True,
        dataloader_num_workers=0,
        dataloader_pin_memory=False,
        max_length=None,
        beta=args.beta,
        loss_type=["sigmoid"],
        precompute_ref_log_probs=False,  # the reference runs live every step, as ours does by default
        disable_dropout=True,
    )

    marks: list[float] = []

    class StepTimer(TrainerCallback):
        def on_train_begin(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

        def on_step_end(self, args, state, control, **kwargs):
            marks.append(time.perf_counter())

    init_seconds = time.perf_counter()
    trainer = DPOTrainer(model=policy, ref_model=reference, args=config,
                         train_dataset=datasets.Dataset.from_list(rows), processing_class=tokenizer,
                         callbacks=[StepTimer()])
    init_seconds = time.perf_counter() - init_seconds

    encoded = trainer.train_dataset
    lengths = [len(p) + len(c) for p, c in zip(encoded["prompt_ids"], encoded["chosen_ids"])] + \
              [len(p) + len(r) for p, r in zip(encoded["prompt_ids"], encoded["rejected_ids"])]
    if args.dump_data:
        with open(args.dump_data, "w") as f:
            for row, p, c, r in zip(rows, encoded["prompt_ids"], encoded["chosen_ids"], encoded["rejected_ids"]):
                f.write(json.dumps({**row, "prompt_ids": p, "chosen_ids": c, "rejected_ids": r}) + "\n")

    # 3. train, timing each step
    start = time.perf_counter()
    out = trainer.train()
    train_seconds = time.perf_counter() - start
    shutil.rmtree(out_dir, ignore_errors=True)

    step_seconds = [b - a for a, b in zip(marks, marks[1:])]
    assert len(step_seconds) == total_steps, (len(step_seconds), total_steps)
    median = statistics.median(step_seconds[args.warmup:])
    print(f"# versions: torch {torch.__version__} transformers {transformers.__version__} trl {trl.__version__} "
          f"threads {torch.get_num_threads()} dtype fp32")
    print(f"# size={args.size} policy_params={sum(p.numel() for p in policy.parameters())} pairs={args.pairs} "
          f"batch={args.batch} seq_tokens min/mean/max={min(lengths)}/{statistics.mean(lengths):.1f}/{max(lengths)} "
          f"(prompt + response + </s>, <s> included)")
    print(f"# init_sec={init_seconds:.2f} (incl. TRL's tokenization) train_sec={train_seconds:.2f} "
          f"final_train_loss={out.training_loss:.6f}")
    print("# step_secs=" + ",".join(f"{s:.3f}" for s in step_seconds) + f" (first {args.warmup} = warm-up)")
    print(f"TRL_DPO size={args.size} sec_per_step={median:.3f} pairs_per_sec={args.batch / median:.1f}")


if __name__ == "__main__":
    main()
