"""How fast one PPO step of the TRL peer benchmark can be with the Hugging Face modules run eagerly and nothing
around them: the bound for any framework (ours or TRL's) that runs those modules unchanged.

    bash ../shared/peer/setup.sh
    TRL_EXPERIMENTAL_SILENCE=1 /tmp/peer-trl112/bin/python ../shared/peer/trl_ppo_bench.py --size 5m --quiet \
        --dump-prompts /tmp/peer-data/ppo-5m.jsonl
    python benchmarks/ppo_eager_bound.py --size 5m --prompts /tmp/peer-data/ppo-5m.jsonl --trl-s 4.024

The same work as ``benchmarks/ppo_step.py`` (see its docstring for the settings), as a bare loop: ``generate``
with the sampling pass's logits kept, one no-grad pass each of the reference, reward model and critic over the 16
rows, rewards and GAE (``almost.ppo``), then 4 epochs x 4 minibatches of policy and critic forward and backward
with one fused AdamW step each. No Lightning, no metrics, no gradient norms, no host synchronisation beyond what
the modules do themselves. Prints the median seconds of each part and of the step after warm-up; with
``--trl-s`` (TRL's median s/step from ``compare_trl.py``), the largest speed-up over TRL these modules allow.
"""

from __future__ import annotations

import argparse
import math
import statistics
import time

import torch
from transformers import GenerationConfig

from almost.models import ModelSource, RewardModel, build_causal_lm, load_tokenizer
from almost.logprobs import token_logprobs
from almost.ppo import gae_advantages, masked_whiten, per_token_rewards, policy_loss, value_loss
from peer import add_step_arguments, read_jsonl, reward_model_dir

RESPONSE_LENGTH, PPO_EPOCHS, MINIBATCH_SIZE, KL_COEF = 48, 4, 4, 0.05  # the peer's settings (../shared/peer/README.md)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--prompts", required=True, help="JSONL written by trl_ppo_bench.py --dump-prompts")
    parser.add_argument("--trl-s", type=float, help="TRL's median s/step, for the bound on the speed-up")
    add_step_arguments(parser, steps=5, warmup=1, lr=1e-5, batch_help="prompts per rollout")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)

    source = ModelSource(path=f"{args.models_root}/{args.size}/policy")
    tokenizer = load_tokenizer(source)
    policy, reference = build_causal_lm(source, tokenizer), build_causal_lm(source, tokenizer).requires_grad_(False)
    reward_source = ModelSource(path=reward_model_dir(args.size, args.models_root))
    reward, critic = RewardModel.build(reward_source, tokenizer), RewardModel.build(reward_source, tokenizer)
    reward.requires_grad_(False)
    for net in (policy, reference, reward, critic):
        net.eval()  # dropout is 0 in the peer's models; eval keeps the cache logic of generate simple
    optimizers = [torch.optim.AdamW(net.parameters(), lr=args.lr, fused=True) for net in (policy, critic)]
    prompts = [row["input_ids"] for row in read_jsonl(args.prompts)]
    config = GenerationConfig(max_new_tokens=RESPONSE_LENGTH, min_new_tokens=RESPONSE_LENGTH, do_sample=True, temperature=1.0, top_p=1.0,
                              top_k=0, pad_token_id=tokenizer.pad_token_id, use_cache=True,
                              return_dict_in_generate=True, output_logits=True)

    def step(index: int) -> dict[str, float]:
        marks = [time.perf_counter()]
        query = torch.tensor(prompts[index * args.batch:(index + 1) * args.batch])  # (B, 32), no padding
        with torch.no_grad():  # 1. sample
            out = policy.generate(input_ids=query, attention_mask=torch.ones_like(query), generation_config=config)
        ids = out.sequences  # (B, 80)
        n_query, n_response, mask = query.shape[1], ids.shape[1] - query.shape[1], torch.ones_like(ids)
        response = ids[:, n_query:]
        response_mask = torch.ones_like(response)
        logprobs = token_logprobs(torch.stack(out.logits, 1), response)  # (B, T)
        marks.append(time.perf_counter())
        with torch.no_grad():  # 2. reference, reward, critic
            ref_logits = reference(input_ids=ids, attention_mask=mask, use_cache=False,
                                   logits_to_keep=n_response + 1).logits[:, :-1]
            ref_logprobs = token_logprobs(ref_logits, response)
            scores = reward.score(ids, mask)
            values = critic(ids, mask)[:, n_query - 1:-1]
            rewards = per_token_rewards(scores, logprobs - ref_logprobs, response_mask, KL_COEF)
            advantages, returns = gae_advantages(rewards, values, response_mask, 1.0, 0.95)
            advantages = masked_whiten(advantages, response_mask)
        marks.append(time.perf_counter())
        for _ in range(PPO_EPOCHS):  # 3. epochs x shuffled minibatches
            for rows in torch.randperm(len(ids)).split(MINIBATCH_SIZE):
                logits = policy(input_ids=ids[rows], attention_mask=mask[rows], use_cache=False,
                                logits_to_keep=n_response + 1).logits
                new_logprobs = token_logprobs(logits[:, :-1], response[rows])
                new_values = critic(ids[rows], mask[rows])[:, n_query - 1:-1]
                pg_loss, _ = policy_loss(new_logprobs, logprobs[rows], advantages[rows], response_mask[rows], 0.2)
                vf_loss, _ = value_loss(new_values, values[rows], returns[rows], response_mask[rows], 0.2)
                (pg_loss + vf_loss).backward()
                for optimizer in optimizers:
                    optimizer.step()
                    optimizer.zero_grad(set_to_none=True)
        marks.append(time.perf_counter())
        return dict(zip(("sample", "score", "update"), (b - a for a, b in zip(marks, marks[1:]))))

    timings = [step(index) for index in range(args.warmup + args.steps)][args.warmup:]
    median = {part: statistics.median(t[part] for t in timings) for part in timings[0]}
    total = statistics.median(sum(t.values()) for t in timings)
    print(f"# versions: torch {torch.__version__} threads {torch.get_num_threads()}")
    print("# " + " ".join(f"{part}_s={seconds:.3f}" for part, seconds in median.items())
          + f" update_per_minibatch_ms={1000 * median['update'] / (PPO_EPOCHS * math.ceil(args.batch / MINIBATCH_SIZE)):.0f}")
    line = f"BOUND_PPO size={args.size} steps={args.steps} sec_per_step={total:.3f}"
    print(line + (f" trl_s={args.trl_s:.3f} max_speedup={args.trl_s / total:.2f}" if args.trl_s else ""))


if __name__ == "__main__":
    main()
