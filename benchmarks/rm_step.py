"""Seconds per reward-model step of our ``RewardModelModule`` under the Lightning Trainer, on the TRL peer
benchmark's model, data and settings (see ``../shared/peer/README.md``, "Reward-model benchmark").

    bash ../shared/peer/setup.sh
    /tmp/peer-trl116/bin/python ../shared/peer/trl_rm_bench.py --size 1m --dump-data /tmp/peer-data/rm-1m.jsonl
    python benchmarks/rm_step.py --size 1m --data /tmp/peer-data/rm-1m.jsonl

Settings as the peer's: 16 pairs per step (one forward over 32 right-padded sequences), fp32, AdamW (fused, lr 1e-4,
betas 0.9/0.999, eps 1e-8, no weight decay), gradient-norm clip 1.0, 2 threads, seed 42, 2 warm-up + 10 timed
steps. Our schedule is warmup-cosine with no warmup where TRL's is linear decay: the same work per step.
The last line printed is ``OURS_RM size=<s> sec_per_step=<median> pairs_per_sec=<16/median>``.
"""

from __future__ import annotations

import argparse
import statistics

import lightning as L
import torch

from lit_models import RewardModelModule
from peer import PairIdsDataModule, StepTimer, add_step_arguments, quiet_trainer, reward_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", required=True, help="JSONL written by trl_rm_bench.py --dump-data")
    add_step_arguments(parser, steps=10, warmup=2, lr=1e-4, batch_help="pairs per optimizer step")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    L.seed_everything(args.seed, verbose=False)
    model = RewardModelModule(source={"path": reward_model_dir(args.size, args.models_root)}, lr=args.lr,
                              weight_decay=0.0, warmup_ratio=0.0)
    data = PairIdsDataModule(args.data, model.tokenizer.pad_token_id, batch_size=args.batch, seed=args.seed)
    timer = StepTimer(record=("train/loss", "train/margin"))
    trainer = quiet_trainer(args.warmup + args.steps, [timer], gradient_clip_val=1.0)
    trainer.fit(model, datamodule=data)

    median = timer.median(args.warmup)
    lengths = [len(ids) for pair in data.pairs for ids in pair]
    print(f"# versions: torch {torch.__version__} lightning {L.__version__} threads {torch.get_num_threads()}")
    print(f"# size={args.size} reward_params={sum(p.numel() for p in model.net.parameters())} batch={args.batch} "
          f"seq_tokens mean={statistics.mean(lengths):.1f}")
    print("# step_secs=" + ",".join(f"{s:.3f}" for s in timer.step_seconds) + f" (first {args.warmup} = warm-up)")
    print("\n".join(timer.metric_lines()))
    print(f"OURS_RM size={args.size} sec_per_step={median:.3f} pairs_per_sec={args.batch / median:.1f}")


if __name__ == "__main__":
    main()
