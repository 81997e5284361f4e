"""Seconds per PPO step of our ``PPOModule`` under the Lightning Trainer, on the TRL peer benchmark's models,
prompts and settings (see ``../shared/peer/README.md``, "PPO benchmark").

    bash ../shared/peer/setup.sh
    TRL_EXPERIMENTAL_SILENCE=1 /tmp/peer-trl112/bin/python ../shared/peer/trl_ppo_bench.py --size 1m --quiet \
        --dump-prompts /tmp/peer-data/ppo-1m.jsonl
    python benchmarks/ppo_step.py --size 1m --prompts /tmp/peer-data/ppo-1m.jsonl

One step = one rollout of 16 prompts (32 tokens each) with 48 sampled tokens (temperature 1, top-k off, top-p 1),
reference / reward / value passes over the 16 rows at once, per-token KL penalty 0.05 (k1) with the score at the
last token, GAE (gamma 1, lambda 0.95), whitened advantages, then 4 PPO epochs of 4 shuffled minibatches of 4:
clipped policy loss (0.2) and clipped value loss (0.2), 16 optimizer steps. AdamW lr 1e-5 for policy and critic,
no gradient clipping, fp32, 2 threads, seed 42; 1 warm-up step, then 5 timed. Differences from TRL's settings
that do not change the work: TRL's single optimizer over both networks with the value loss weighted 0.1 is two
optimizers here (Adam is invariant to that weight up to eps) and TRL's linear lr decay is a constant lr.
The last line printed is ``OURS_PPO size=<s> steps=<K> sec_per_step=<median> tokens_per_sec=<16*48/median>``.
"""

from __future__ import annotations

import argparse

import lightning as L
import torch

from lit_models import PPOModule
from peer import PromptIdsDataModule, StepTimer, add_step_arguments, quiet_trainer, reward_model_dir


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", required=True, help="JSONL written by trl_ppo_bench.py --dump-prompts")
    add_step_arguments(parser, steps=5, warmup=1, lr=1e-5, batch_help="prompts per rollout")
    parser.add_argument("--mini-batch", type=int, default=4)
    parser.add_argument("--ppo-epochs", type=int, default=4)
    parser.add_argument("--response-length", type=int, default=48)
    parser.add_argument("--eager", action="store_true", help="no torch.compile of the update's forward passes")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    L.seed_everything(args.seed, verbose=False)
    reward = reward_model_dir(args.size, args.models_root)
    model = PPOModule(
        source={"path": f"{args.models_root}/{args.size}/policy"}, reward=reward, critic=reward,
        max_new_tokens=args.response_length, temperature=1.0, top_p=1.0, ppo_epochs=args.ppo_epochs,
        minibatch_size=args.mini_batch, forward_batch_size=args.batch, policy_lr=args.lr, critic_lr=args.lr,
        clip=0.2, value_clip=0.2, gamma=1.0, lam=0.95, whiten_advantages=True, kl_coef=0.05,
        max_grad_norm=None, seed=args.seed, log_samples_every_n_rollouts=0, compile=not args.eager,
    )
    data = PromptIdsDataModule(args.prompts, model.tokenizer.pad_token_id, batch_size=args.batch, seed=args.seed)
    timer = StepTimer(record=("ppo/policy_loss", "ppo/value_loss", "rollout/score", "rollout/kl"))
    trainer = quiet_trainer(args.warmup + args.steps, [timer])
    trainer.fit(model, datamodule=data)

    median = timer.median(args.warmup)
    print(f"# versions: torch {torch.__version__} lightning {L.__version__} threads {torch.get_num_threads()}")
    print(f"# size={args.size} policy_params={sum(p.numel() for p in model.policy.parameters())} "
          f"batch={args.batch} mini_batch={args.mini_batch} ppo_epochs={args.ppo_epochs}")
    print("# step_secs=" + ",".join(f"{s:.3f}" for s in timer.step_seconds) + f" (first {args.warmup} = warm-up)")
    print("\n".join(timer.metric_lines()))
    print(f"OURS_PPO size={args.size} steps={args.steps} sec_per_step={median:.3f} "
          f"tokens_per_sec={args.batch * args.response_length / median:.1f}")


if __name__ == "__main__":
    main()
