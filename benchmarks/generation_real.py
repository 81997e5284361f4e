"""Speed on a real vocabulary: Gemma 3 270M (18 layers, hidden 640, 262,144 tokens, tied embeddings) in fp32.

    python benchmarks/generation_real.py            # batch 32, 48 new tokens, 3 rounds, then the RM and SFT steps
    python benchmarks/generation_real.py --batch-size 4 --new-tokens 8 --rounds 1 --train-steps 1   # smoke run
    python benchmarks/generation_real.py --profile --batch-size 8 --new-tokens 8   # where sampling time goes

Sampling: ``almost.generation.generate`` (what every job calls) against a bare ``model.generate`` with transformers'
own temperature / top-p warpers and ``stop_strings``, on the same prompts and settings: the faithful 3-shot prompts of
configs/gemma/responses.yaml (prompts/en; the 30 seed queries repeat to fill the batch), temperature 1, top-p 0.9,
top-k off, ``--new-tokens`` new tokens, the prompter's stop strings (both sides), one seed. The two alternate over
``--rounds`` (after an untimed warm-up of each) and the medians are kept; they must sample the same tokens. The FLOP
bound is the matmul work of the real (unpadded) tokens, prompts included, at the measured fp32 matmul rate.

Training: RM and SFT steps with LoRA as configs/gemma/rm.yaml and sft.yaml set them (r 8 on q/k/v/o, AdamW lr 2e-4,
gradient clip 1; 4 sequences of 256 tokens for SFT, 4 pairs = 8 sequences for the RM), each stage in its own process
so that its peak RSS (``ru_maxrss``, model loading included) is its own; ``--train-steps`` timed steps after one
untimed warm-up step, on random full-length token sequences (step time depends on the shapes only).
"""

from __future__ import annotations

import argparse
import contextlib
import json
import resource
import statistics
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from unittest import mock

import torch

MODEL = "runs/gemma/models/gemma3-270m.gguf"
STYLES = {"faithful": "prompts/en/faithful.jsonl", "hhh": "prompts/en/hhh.jsonl", "user": "prompts/en/user.jsonl"}
LORA = {"peft_type": "LORA", "r": 8, "lora_alpha": 16, "target_modules": ["q_proj", "k_proj", "v_proj", "o_proj"]}


def few_shot_prompts(tokenizer, n: int) -> tuple[list[list[int]], tuple[str, ...]]:
    """``n`` faithful 3-shot assistant prompts (token ids) and the stop strings of an assistant turn."""
    from almost.prompting import FewShotPrompter, text_prompt_ids
    from almost.records import Prompt, Turn, load_jsonl

    prompter = FewShotPrompter(STYLES)
    queries = [p.prompt for p in load_jsonl("prompts/en/seed_queries.jsonl", Prompt)]
    texts = [prompter.assistant_prompt("faithful", 3, [Turn("user", queries[i % len(queries)])]) for i in range(n)]
    return [text_prompt_ids(tokenizer, text) for text in texts], prompter.stop_strings("assistant")


def bare_generate(model, tokenizer, prompts: list[list[int]], sampling, seed: int) -> list[list[int]]:
    """transformers' own path: its warpers and ``stop_strings``; padding, seeding and the cut of each row (up to EOS,
    no padding) as in ``almost.generation.generate``."""
    from almost.batching import pad_sequences

    eos, pad = tokenizer.eos_token_id, tokenizer.pad_token_id
    input_ids, attention_mask = pad_sequences(prompts, pad, side="left")
    torch.manual_seed(seed)
    with torch.no_grad():
        output = model.generate(
            input_ids=input_ids, attention_mask=attention_mask, do_sample=True, temperature=sampling.temperature,
            top_p=sampling.top_p, top_k=None, max_new_tokens=sampling.max_new_tokens, pad_token_id=pad,
            eos_token_id=eos, stop_strings=list(sampling.stop_strings), tokenizer=tokenizer,
        )[:, input_ids.shape[1]:].tolist()  # (B, new tokens)
    rows = []
    for ids in output:
        ids = ids[: ids.index(eos) + 1] if eos in ids else ids
        while ids and ids[-1] == pad and pad != eos:
            ids = ids[:-1]
        rows.append(ids)
    return rows


def ours_generate(model, tokenizer, prompts: list[list[int]], sampling, seed: int) -> list[list[int]]:
    from almost.generation import generate

    generations = generate(model, tokenizer, prompts, sampling, batch_size=len(prompts), seed=seed)
    return [list(g.token_ids) for g in generations]


def ours_shared_prefix(model, tokenizer, prompts: list[list[int]], sampling, seed: int) -> list[list[int]]:
    """Ours with ``share_prefix``: the few-shot demonstrations' forward pass once per batch, not once per row."""
    return ours_generate(model, tokenizer, prompts, replace(sampling, share_prefix=True), seed)


def non_embedding_params(model) -> int:
    """Parameters outside the token embedding and the LM head (the head counted once when tied)."""
    embedding, head = model.get_input_embeddings().weight, model.get_output_embeddings().weight
    untied_head = head.numel() if head is not embedding else 0
    return sum(p.numel() for p in model.parameters()) - embedding.numel() - untied_head


def sampling_flops(config, non_embedding: int, prompt_lengths: list[int], generated: list[int]) -> float:
    """Matmul FLOPs of sampling ``generated[i]`` tokens after a prompt of ``prompt_lengths[i]`` real tokens. Every
    token but the last generated one passes through the layers: 2 x non-embedding parameters, plus attention's QK^T
    and AV, 4 x (heads x head dim) x the keys it sees, per layer (at most the sliding window in sliding layers).
    Every generated token costs the LM head, 2 x vocabulary x hidden. Norms, activations, softmax and sampling are
    left out."""
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // config.num_attention_heads
    q_dim = config.num_attention_heads * head_dim
    layer_types = getattr(config, "layer_types", None) or ["full_attention"] * config.num_hidden_layers
    windows = [config.sliding_window if kind == "sliding_attention" else None for kind in layer_types]
    total = 0
    for length, new in zip(prompt_lengths, generated):
        positions = length + max(new - 1, 0)
        total += 2 * non_embedding * positions + 2 * config.vocab_size * config.hidden_size * new
        for window in windows:
            w = positions if window is None else min(window, positions)
            keys_seen = w * (w + 1) // 2 + (positions - w) * w  # query t (1-based) sees min(t, window) keys
            total += 4 * q_dim * keys_seen
    return float(total)


class PartTimer:
    """Seconds per named part of a run, the parts entered and left from hooks and wrappers."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.started: dict[str, float] = {}
        self.depth: dict[str, int] = defaultdict(int)  # a part entered again from within itself counts once

    def begin(self, key: str) -> None:
        self.depth[key] += 1
        if self.depth[key] == 1:
            self.started[key] = time.perf_counter()

    def end(self, key: str, part: str) -> None:
        self.depth[key] -= 1
        if self.depth[key] == 0:
            self.seconds[part] += time.perf_counter() - self.started.pop(key)

    def patch(self, owner, name: str, part: str):
        """A patch of ``owner.name`` (a function or method) that adds the time of each call to ``part``."""
        original = getattr(owner, name)

        def timed(*args, **kwargs):
            self.begin(part)
            result = original(*args, **kwargs)
            self.end(part, part)
            return result
        return mock.patch.object(owner, name, timed)


def profile(model, tokenizer, prompts, sampling, seed: int) -> None:
    """Seconds per part of one sampling run, ours and transformers': the prompts' forward pass (prefill), the decoding
    forward passes (KV-cache updates included), the LM head within both, top-p, the multinomial draw, the stop-string
    tables built per call and checked per step, and the rest (softmax, copies, the loop)."""
    from transformers import TopPLogitsWarper
    from transformers.generation.stopping_criteria import StopStringCriteria

    from almost.generation import TemperatureTopP

    parts = ("prefill forward", "decode forwards", "  of which LM head", "top-p", "multinomial draw",
             "stop-string tables", "stop-string checks", "rest", "total")
    columns = {}
    for name, run in (("ours", ours_generate), ("transformers", bare_generate)):
        timer = PartTimer()
        forward = lambda: "decode forwards" if "prefill forward" in timer.seconds else "prefill forward"  # noqa: E731
        hooks = [model.register_forward_pre_hook(lambda *_: timer.begin("model")),
                 model.register_forward_hook(lambda *_: timer.end("model", forward())),
                 model.lm_head.register_forward_pre_hook(lambda *_: timer.begin("head")),
                 model.lm_head.register_forward_hook(lambda *_: timer.end("head", "  of which LM head"))]
        patches = [timer.patch(TemperatureTopP, "__call__", "top-p"),
                   timer.patch(TopPLogitsWarper, "__call__", "top-p"),
                   timer.patch(torch, "multinomial", "multinomial draw"),
                   timer.patch(StopStringCriteria, "__init__", "stop-string tables"),
                   timer.patch(StopStringCriteria, "__call__", "stop-string checks")]
        start = time.perf_counter()
        with contextlib.ExitStack() as stack:
            for patch in patches:
                stack.enter_context(patch)
            run(model, tokenizer, prompts, sampling, seed)
        timer.seconds["total"] = time.perf_counter() - start
        for hook in hooks:
            hook.remove()
        measured = [part for part in parts[:-2] if part != "  of which LM head"]
        timer.seconds["rest"] = timer.seconds["total"] - sum(timer.seconds[part] for part in measured)
        columns[name] = timer.seconds
    print(f"profile, batch {len(prompts)}, up to {sampling.max_new_tokens} new tokens (seconds, after a warm-up)\n")
    print(f"| {'part':20s} | ours   | transformers |\n|{'-' * 22}|--------|--------------|")
    for part in parts:
        print(f"| {part:20s} | {columns['ours'][part]:6.2f} | {columns['transformers'][part]:12.2f} |")


def sampling_benchmark(args) -> None:
    from almost.generation import SamplingConfig
    from almost.models import ModelSource, build_causal_lm, load_tokenizer
    from peer import matmul_gflops

    source = ModelSource(path=args.model)
    tokenizer = load_tokenizer(source)
    model = build_causal_lm(source, tokenizer).eval().requires_grad_(False)
    prompts, stop_strings = few_shot_prompts(tokenizer, args.batch_size)
    sampling = SamplingConfig(args.new_tokens, temperature=1.0, top_p=0.9, stop_strings=stop_strings)
    warmup = SamplingConfig(2, temperature=1.0, top_p=0.9, stop_strings=stop_strings)
    runs = {"ours (almost.generation)": ours_generate, "bare model.generate": bare_generate,
            "ours, shared prefix": ours_shared_prefix}
    for run in runs.values():  # untimed: first calls, and transformers' stop-string cache (filled once per process)
        run(model, tokenizer, prompts[:1], warmup, args.seed)
    if args.profile:
        return profile(model, tokenizer, prompts, sampling, args.seed)
    seconds, outputs = defaultdict(list), {}
    for round_ in range(args.rounds):
        for name in (list(runs) if round_ % 2 == 0 else list(runs)[::-1]):
            start = time.perf_counter()
            outputs[name] = runs[name](model, tokenizer, prompts, sampling, args.seed)
            seconds[name].append(time.perf_counter() - start)
    ours, bare, shared = (outputs[name] for name in runs)
    generated, lengths = [len(ids) for ids in ours], [len(p) for p in prompts]
    non_embedding = non_embedding_params(model)
    gflops = matmul_gflops(torch.get_num_threads())
    flops = sampling_flops(model.config, non_embedding, lengths, generated)
    prefill = sampling_flops(model.config, non_embedding, lengths, [1] * len(prompts))  # the prompts, first token
    print(f"{args.model}: batch {len(prompts)}, prompts of {min(map(len, prompts))}-{max(map(len, prompts))} tokens, "
          f"up to {args.new_tokens} new tokens, top-p 0.9, temperature 1, stop strings {list(stop_strings)}, "
          f"{args.rounds} rounds, torch threads {torch.get_num_threads()}")
    print(f"same tokens sampled by both: {'yes' if ours == bare else 'NO'}; generated {sum(generated)} tokens "
          f"(with the shared prefix: {sum(map(len, shared))} tokens, {sum(a == b for a, b in zip(shared, ours))} of "
          f"{len(ours)} rows the same as ours unshared: float rounding differs)")
    head = model.config.vocab_size * model.config.hidden_size
    print(f"non-embedding parameters {non_embedding:,}, LM head {head:,}: {2 * (non_embedding + head) / 1e9:.2f} "
          f"GFLOP per generated token before attention; matmul FLOPs of the run {flops / 1e9:.0f} G, of which "
          f"{prefill / 1e9:.0f} G the prompts' forward pass; fp32 matmul rate {gflops:.0f} GFLOP/s -> bound "
          f"{flops / gflops / 1e9:.2f} s, {sum(generated) * gflops * 1e9 / flops:.1f} tokens/s\n")
    print(f"| {'sampling':26s} | median s | tokens/s | fraction of FLOP bound |\n|{'-' * 28}|----------|----------|"
          f"------------------------|")
    rates = {}
    for name, times in seconds.items():
        median = statistics.median(times)
        rates[name] = sum(map(len, outputs[name])) / median
        print(f"| {name:26s} | {median:8.2f} | {rates[name]:8.2f} | {flops / gflops / 1e9 / median:22.2f} |")
    print(f"\nours / bare tokens/s = {rates['ours (almost.generation)'] / rates['bare model.generate']:.2f}; "
          f"shared prefix / bare = {rates['ours, shared prefix'] / rates['bare model.generate']:.2f} (its fraction of "
          f"the bound counts the unshared FLOPs: the shared prefix skips most of the prompts' forward pass)")


def train_steps(stage: str, model: str, steps: int, batch_size: int, length: int, seed: int) -> dict:
    """Seconds per step and peak RSS of ``steps`` timed RM or SFT steps with LoRA (one warm-up step first)."""
    import lightning as L
    from torch.utils.data import DataLoader

    from almost.chat import IGNORE_INDEX
    from lit_models import RewardModelModule, SFTModule
    from peer import StepTimer, quiet_trainer

    L.seed_everything(seed, verbose=False)
    module = (RewardModelModule if stage == "rm" else SFTModule)(source={"path": model}, adapter=LORA, lr=2e-4)
    rows = 2 * batch_size if stage == "rm" else batch_size  # the RM's batch: chosen rows, then rejected rows
    vocab = module.tokenizer.vocab_size
    batches = []
    for _ in range(steps + 1):
        input_ids = torch.randint(1000, vocab, (rows, length))
        batch = {"input_ids": input_ids, "attention_mask": torch.ones_like(input_ids)}
        if stage == "sft":  # the loss on the second half, as on a response after its prompt
            batch["labels"] = input_ids.masked_fill(torch.arange(length) < length // 2, IGNORE_INDEX)
        batches.append(batch)
    timer = StepTimer()
    trainer = quiet_trainer(steps + 1, [timer], gradient_clip_val=1.0)
    trainer.fit(module, train_dataloaders=DataLoader(batches, batch_size=None))
    trainable = sum(p.numel() for p in module.parameters() if p.requires_grad)
    return {"stage": stage, "rows": rows, "length": length, "trainable_params": trainable,
            "warmup_s": timer.step_seconds[0], "median_step_s": statistics.median(timer.step_seconds[1:]),
            "peak_rss_gib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default=MODEL, help="a GGUF file or Hugging Face directory")
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--new-tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--profile", action="store_true", help="print where sampling time goes instead of timing")
    parser.add_argument("--train-steps", type=int, default=2, help="timed RM and SFT steps (0: none)")
    parser.add_argument("--train-batch", type=int, default=4)
    parser.add_argument("--train-length", type=int, default=256)
    parser.add_argument("--train-stage", choices=["rm", "sft"], help=argparse.SUPPRESS)  # the child process
    args = parser.parse_args()
    if args.train_stage:
        result = train_steps(args.train_stage, args.model, args.train_steps, args.train_batch, args.train_length,
                             args.seed)
        print("RESULT " + json.dumps(result))
        return
    sampling_benchmark(args)
    if args.profile or not args.train_steps:
        return
    print("\n| step, LoRA r 8 | trained params | sequences x tokens | warm-up s | median step s | peak RSS GiB |\n"
          "|----------------|----------------|--------------------|-----------|---------------|--------------|")
    for stage in ("rm", "sft"):
        child = subprocess.run([sys.executable, __file__, "--train-stage", stage, *sys.argv[1:]], capture_output=True,
                               text=True)
        lines = [line for line in child.stdout.splitlines() if line.startswith("RESULT ")]
        if not lines:
            sys.exit(f"{stage} step failed:\n{child.stderr[-3000:]}")
        r = json.loads(lines[-1].removeprefix("RESULT "))
        print(f"| {stage.upper():14s} | {r['trainable_params']:14,d} | {r['rows']:>8d} x {r['length']:<7d} | "
              f"{r['warmup_s']:9.1f} | {r['median_step_s']:13.1f} | {r['peak_rss_gib']:12.2f} |", flush=True)


if __name__ == "__main__":
    main()
