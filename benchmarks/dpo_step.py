"""Seconds per DPO step of our ``DPOModule`` under the Lightning Trainer, on the peer's tiny policy and the pairs
``trl_dpo_bench.py`` trains TRL's ``DPOTrainer`` on (same token ids, batch and settings):

    bash ../shared/peer/setup.sh
    /tmp/peer-trl116/bin/python benchmarks/trl_dpo_bench.py --size 1m --dump-data /tmp/peer-data/dpo-1m.jsonl
    python benchmarks/dpo_step.py --size 1m --data /tmp/peer-data/dpo-1m.jsonl

Settings as TRL's there: 16 pairs per step (one policy forward and backward over 32 right-padded sequences, chosen
then rejected, and one no-grad forward of a frozen copy of the initial policy over the same rows:
``reference="copy"``, the default, live every step), sigmoid loss with beta 0.1 on summed response log-probs,
gradient-norm clip 1.0, fp32, AdamW (fused, lr 1e-6, betas 0.9/0.999, eps 1e-8, no weight decay), dropout off,
2 threads, seed 42, 2 warm-up + 10 timed steps. Two differences that change no work per step: our schedule is
warmup-cosine with no warmup where TRL's is linear decay, and our reference is a copy of ``<size>/policy`` made in
memory where TRL loads ``<size>/ref`` (the same weights). The pairs come in another (seeded) order.
The last line printed is ``OURS_DPO size=<s> sec_per_step=<median> pairs_per_sec=<16/median>``.
"""

from __future__ import annotations

import argparse
import os
import statistics

import lightning as L
import torch

from lit_models import DPOModule
from peer import PreferenceIdsDataModule, StepTimer, add_step_arguments, quiet_trainer


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="JSONL written by trl_dpo_bench.py --dump-data")
    parser.add_argument("--beta", type=float, default=0.1)
    parser.add_argument("--eager", action="store_true", help="no torch.compile of the forward passes")
    add_step_arguments(parser, steps=10, warmup=2, lr=1e-6, batch_help="pairs per optimizer step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    L.seed_everything(args.seed, verbose=False)
    model = DPOModule(source={"path": os.path.join(args.models_root, args.size, "policy")}, beta=args.beta,
                      loss="sigmoid", reference="copy", lr=args.lr, weight_decay=0.0, warmup_ratio=0.0,
                      compile=not args.eager)
    data = PreferenceIdsDataModule(args.data, model.tokenizer.pad_token_id, batch_size=args.batch, seed=args.seed)
    timer = StepTimer(record=("train/loss", "train/reward_margin"))
    trainer = quiet_trainer(args.warmup + args.steps, [timer], gradient_clip_val=1.0)
    trainer.fit(model, datamodule=data)

    median = timer.median(args.warmup)
    lengths = [len(prompt) + len(response) for prompt, *responses in data.pairs for response in responses]
    print(f"# versions: torch {torch.__version__} lightning {L.__version__} threads {torch.get_num_threads()}")
    print(f"# size={args.size} policy_params={sum(p.numel() for p in model.net.parameters())} batch={args.batch} "
          f"seq_tokens mean={statistics.mean(lengths):.1f}")
    print("# step_secs=" + ",".join(f"{s:.3f}" for s in timer.step_seconds) + f" (first {args.warmup} = warm-up)")
    print("\n".join(timer.metric_lines()))
    print(f"OURS_DPO size={args.size} sec_per_step={median:.3f} pairs_per_sec={args.batch / median:.1f}")


if __name__ == "__main__":
    main()
