"""Throughput on one GPU: bf16 training of the reward model and SFT on a ~1B-parameter Llama (random weights) as
model-FLOPs utilisation, and rollout decoding against the memory-bandwidth bound.

    python benchmarks/gpu_throughput.py                       # 1.1B Llama (TinyLlama shape), bf16-mixed, CUDA
    python benchmarks/gpu_throughput.py --arch tiny --device cpu --steps 2   # smoke test anywhere

Training runs our LightningModules under the Lightning Trainer (``RewardModelModule``, ``SFTModule``) on fixed-length
random token batches; MFU = 6 x params x tokens per second / the device's dense bf16 peak. Decoding runs
``generate`` of the same model in bf16 with the KV cache (what the generation jobs and PPO's rollouts call), then the
same sampling in a plain loop (``plain_decode``); the bound is one read of every weight and of the KV cache per
decoding step. Prints a markdown table; copy it into ``benchmarks/RESULTS.md`` with date and device.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time

import lightning as L
import torch
from torch.utils.data import DataLoader

ARCHS = {  # Llama shapes; the vocabulary is the generated tokenizer's
    "1b": dict(hidden_size=2048, intermediate_size=5632, num_hidden_layers=22, num_attention_heads=32,
               num_key_value_heads=4, max_position_embeddings=2048),
    "tiny": dict(hidden_size=64, intermediate_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, max_position_embeddings=2048),
}
# dense bf16 peak FLOP/s and memory bandwidth (bytes/s) by device name (vendor data sheets, SXM parts)
DEVICES = {"H100": (989e12, 3.35e12), "H200": (989e12, 4.8e12), "A100": (312e12, 2.0e12)}


def word_tokenizer(vocab_size: int, directory: str) -> str:
    """A word-level tokenizer with ``vocab_size`` entries (pad 0, unk 1, bos 2, eos 3), saved in HF format."""
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(["<pad>", "<unk>", "<s>", "</s>"])}
    vocab.update({f"w{i}": i for i in range(len(vocab), vocab_size)})
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    PreTrainedTokenizerFast(tokenizer_object=core, pad_token="<pad>", unk_token="<unk>", bos_token="<s>",
                            eos_token="</s>").save_pretrained(directory)
    return directory


class RandomTokens(L.LightningDataModule):
    """Fixed-length batches of random tokens: ``(2 * pairs, T)`` for the reward model, ``(rows, T)`` with labels
    on every token for SFT."""

    def __init__(self, kind: str, rows: int, length: int, vocab_size: int, steps: int) -> None:
        super().__init__()
        self.kind, self.rows, self.length, self.vocab_size, self.steps = kind, rows, length, vocab_size, steps

    def make(self, index: int) -> dict[str, torch.Tensor]:
        n = 2 * self.rows if self.kind == "rm" else self.rows
        ids = torch.randint(4, self.vocab_size, (n, self.length), generator=torch.Generator().manual_seed(index))
        batch = {"input_ids": ids, "attention_mask": torch.ones_like(ids)}
        return batch if self.kind == "rm" else {**batch, "labels": ids.clone()}

    def train_dataloader(self) -> DataLoader:
        return DataLoader(range(self.steps), batch_size=None, collate_fn=self.make)


class Timer(L.Callback):
    def __init__(self) -> None:
        self.marks: list[float] = []

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx) -> None:
        if torch.cuda.is_available():
            torch.cuda.synchronize()
        self.marks.append(time.perf_counter())


def train_seconds(kind: str, source: dict, args, vocab_size: int) -> tuple[float, int]:
    """Median seconds per optimizer step after warm-up, and the parameter count."""
    from lit_models import RewardModelModule, SFTModule

    module = (RewardModelModule if kind == "rm" else SFTModule)(source=source, lr=1e-5,
                                                                gradient_checkpointing=args.grad_ckpt)
    timer = Timer()
    trainer = L.Trainer(accelerator=args.device, devices=1, precision=args.precision, max_steps=args.warmup + args.steps,
                        logger=False, enable_checkpointing=False, enable_progress_bar=False,
                        enable_model_summary=False, callbacks=[timer])
    trainer.fit(module, datamodule=RandomTokens(kind, args.rows, args.length, vocab_size, args.warmup + args.steps))
    steps = [b - a for a, b in zip(timer.marks, timer.marks[1:])][args.warmup - 1:]
    return statistics.median(steps), sum(p.numel() for p in module.net.parameters())


def plain_decode(model, prompts: torch.Tensor, new_tokens: int) -> None:
    """The same sampling as ``generate(do_sample=True, top_k=0)`` without its machinery: one forward a token over
    a ``DynamicCache``, ``multinomial`` of the softmax. What ``generate`` spends beyond it per step is its own."""
    from transformers import DynamicCache

    output = model(prompts, past_key_values=DynamicCache(), use_cache=True)
    for _ in range(new_tokens):
        token = torch.multinomial(output.logits[:, -1].float().softmax(-1), 1)
        output = model(token, past_key_values=output.past_key_values, use_cache=True)


def decode_tokens_per_second(source: dict, args, vocab_size: int) -> tuple[float, float, float]:
    """Generated tokens/s of ``generate`` (bf16, KV cache, no early stop) and of ``plain_decode``, and the bandwidth
    bound of that rate."""
    from almost.models import ModelSource, build_causal_lm, load_tokenizer

    model_source = ModelSource(**{**source, "dtype": "bfloat16"})
    model = build_causal_lm(model_source, load_tokenizer(model_source)).to(args.device).eval()
    prompts = torch.randint(4, vocab_size, (args.decode_batch, args.prompt_length), device=args.device)
    with torch.no_grad():
        options = dict(do_sample=True, top_k=0)
        seconds = _seconds(lambda n: model.generate(prompts, max_new_tokens=n, min_new_tokens=n, **options),
                           args.new_tokens)
        plain_seconds = _seconds(lambda n: plain_decode(model, prompts, n), args.new_tokens)
    config = model.config
    weight_bytes = 2 * sum(p.numel() for p in model.parameters())
    kv_heads = config.num_key_value_heads * (config.hidden_size // config.num_attention_heads)
    mean_context = args.prompt_length + args.new_tokens / 2  # KV entries read per row per step, on average
    kv_bytes = 2 * 2 * config.num_hidden_layers * kv_heads * mean_context * args.decode_batch
    bandwidth = device_peaks()[1]
    tokens = args.decode_batch * args.new_tokens
    return tokens / seconds, tokens / plain_seconds, args.decode_batch * bandwidth / (weight_bytes + kv_bytes)


def _seconds(decode, new_tokens: int) -> float:
    """Wall seconds of ``decode(new_tokens)`` after a 4-token warm-up, the device idle before and after."""
    decode(4)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    decode(new_tokens)
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def device_peaks() -> tuple[float, float]:
    name = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
    for key, peaks in DEVICES.items():
        if key in name:
            return peaks
    return float("nan"), float("nan")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--arch", default="1b", choices=sorted(ARCHS))
    parser.add_argument("--vocab-size", type=int, default=32000)
    parser.add_argument("--device", default="cuda")
    parser.add_argument("--precision", default="bf16-mixed")
    parser.add_argument("--rows", type=int, default=8, help="sequences per SFT step; pairs per RM step")
    parser.add_argument("--length", type=int, default=1024)
    parser.add_argument("--grad-ckpt", action="store_true")
    parser.add_argument("--steps", type=int, default=10)
    parser.add_argument("--warmup", type=int, default=3)
    parser.add_argument("--decode-batch", type=int, default=64)
    parser.add_argument("--prompt-length", type=int, default=128)
    parser.add_argument("--new-tokens", type=int, default=256)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tokenizer_dir:
        word_tokenizer(args.vocab_size, tokenizer_dir)
        source = {"arch": {"model_type": "llama", **ARCHS[args.arch]}, "tokenizer": tokenizer_dir}
        peak_flops, bandwidth = device_peaks()
        device = torch.cuda.get_device_name() if torch.cuda.is_available() else "cpu"
        print(f"device {device}; torch {torch.__version__}; lightning {L.__version__}; {args.precision}; "
              f"peak {peak_flops / 1e12:.0f} TFLOP/s, {bandwidth / 1e12:.2f} TB/s\n")
        print("| workload | params | tokens/step | s/step | tokens/s | MFU |\n|---|---|---|---|---|---|")
        for kind in ("rm", "sft"):
            seconds, params = train_seconds(kind, source, args, args.vocab_size)
            tokens = (2 if kind == "rm" else 1) * args.rows * args.length
            mfu = 6 * params * tokens / seconds / peak_flops
            print(f"| {kind} train | {params / 1e9:.2f}B | {tokens} | {seconds:.3f} | {tokens / seconds:.0f} | "
                  f"{100 * mfu:.0f}% |", flush=True)
        generate_rate, plain_rate, bound = decode_tokens_per_second(source, args, args.vocab_size)
        print(f"\ndecode: batch {args.decode_batch}, prompt {args.prompt_length}, {args.new_tokens} new tokens")
        for name, rate in (("generate", generate_rate), ("plain loop", plain_rate)):
            print(f"  {name}: {rate:.0f} tokens/s, {1000 * args.decode_batch / rate:.1f} ms/step = "
                  f"{100 * rate / bound:.1f}% of the bandwidth bound ({bound:.0f} tokens/s)")


if __name__ == "__main__":
    main()
