"""Pretraining step of the sandbox's vanilla LMs S, M and L in fp32 and in bf16 autocast (``bf16-mixed``).

    python benchmarks/pretrain_precision.py             # the architectures and batch of configs/sandbox/pretrain_*.yaml
    python benchmarks/pretrain_precision.py --steps 12

Times the median training step (forward with the LM loss, backward, gradient clipping, AdamW) after warm-up,
the two precisions alternating for ``--rounds`` rounds (the machine is noisy), and prints a table with the
speed-up. CPUs with bf16 instructions (AVX512-BF16, AMX) run bf16 matmuls several times faster than fp32;
elsewhere bf16 autocast can be slower, which this table shows before a config turns it on. Token ids are
random: the step's cost does not depend on them.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

import torch
import yaml

ROOT = Path(__file__).resolve().parent.parent
CONFIGS = ROOT / "configs" / "sandbox"
sys.path.insert(0, str(ROOT))  # train.py


def stage_settings(size: str) -> tuple[dict, int, int, str]:
    """(arch, batch_size, max_length, precision) of ``pretrain_<size>.yaml`` as ``train.py`` resolves it (base
    chain, class defaults), read from ``train.py fit --print_config``."""
    import contextlib
    import io

    import train

    out = io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.suppress(SystemExit):
        train.main(["fit", "--config", str(CONFIGS / f"pretrain_{size}.yaml"), "--print_config"])
    config = yaml.safe_load(out.getvalue())
    data = config["data"]["init_args"]
    arch = config["model"]["init_args"]["source"]["arch"]
    return arch, data["batch_size"], data["max_length"], str(config["trainer"]["precision"])


def step_seconds(arch: dict, batch_size: int, length: int, bf16: bool, steps: int, vocab_size: int) -> tuple[float, int]:
    """(median seconds of one training step, parameter count) of a fresh Llama of ``arch``."""
    from transformers import LlamaConfig, LlamaForCausalLM

    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=vocab_size, **{k: v for k, v in arch.items() if k != "model_type"})
    model = LlamaForCausalLM(config)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, weight_decay=0.1)
    input_ids = torch.randint(4, vocab_size, (batch_size, length))
    times = []
    for i in range(steps + 2):  # two warm-up steps
        start = time.perf_counter()
        with torch.autocast("cpu", dtype=torch.bfloat16, enabled=bf16):
            loss = model(input_ids=input_ids, labels=input_ids).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        optimizer.zero_grad()
        if i >= 2:
            times.append(time.perf_counter() - start)
    return statistics.median(times), sum(p.numel() for p in model.parameters())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--steps", type=int, default=8, help="timed steps per measurement")
    parser.add_argument("--rounds", type=int, default=2, help="fp32 / bf16 alternations; medians over rounds")
    parser.add_argument("--vocab-size", type=int, default=1000, help="the sandbox tokenizer's vocabulary")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    print(f"torch {torch.__version__}, {args.threads} threads; median s/step over {args.rounds} rounds")
    print("| model | config precision | params | fp32 s/step | bf16-mixed s/step | speed-up |")
    print("|---|---|---|---|---|---|")
    for size in "sml":
        arch, batch_size, length, precision = stage_settings(size)
        timings: dict[bool, list[float]] = {False: [], True: []}
        for _ in range(args.rounds):
            for bf16 in (False, True):
                seconds, params = step_seconds(arch, batch_size, length, bf16, args.steps, args.vocab_size)
                timings[bf16].append(seconds)
        fp32, bf16 = statistics.median(timings[False]), statistics.median(timings[True])
        print(f"| {size.upper()} | {precision} | {params / 1e6:.2f}M | {fp32:.3f} | {bf16:.3f} | {fp32 / bf16:.2f} |")


if __name__ == "__main__":
    main()
