"""Generation throughput: the job machinery (``train.py predict`` with ``PromptedResponsesJob``) against a bare
``model.generate`` loop on the same batches, prompts, seeds and sampling settings.

    python benchmarks/generation.py                 # sandbox M model, batch 16, 8 batches (after `make demo`)
    python benchmarks/generation.py --model runs/sandbox/pretrain_l/hf --batches 16

Prints a table of generated tokens, seconds and tokens/s for each, and the job/bare ratio (target >= 0.8); a third
row is the bare loop with the few-shot prefix's forward pass shared by the batch (``SamplingConfig.share_prefix``).
Run it on an idle machine; it repeats both measurements ``--rounds`` times, alternating, and keeps the median.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from dataclasses import replace
from pathlib import Path

import torch


def bare_loop(model_dir: str, world: str, queries: list[str], config: str, batch_size: int, sampling) -> tuple[int, float]:
    """Generated tokens and seconds of a plain loop: render, tokenize, left-pad, ``model.generate``."""
    from almost.generation import generate
    from almost.models import ModelSource, build_causal_lm, load_tokenizer
    from almost.prompting import PromptedConfig, text_prompt_ids
    from almost.records import Turn
    from almost.sandbox.prompts import SandboxPrompter

    source = ModelSource(path=model_dir)
    tokenizer = load_tokenizer(source)
    model = build_causal_lm(source, tokenizer).eval()
    prompter, parsed = SandboxPrompter(world), PromptedConfig.parse(config)
    tokens, start = 0, time.perf_counter()
    for first in range(0, len(queries), batch_size):
        texts = [prompter.assistant_prompt(parsed.style, parsed.shots, [Turn("user", q)])
                 for q in queries[first:first + batch_size]]
        ids = [text_prompt_ids(tokenizer, text) for text in texts]
        # the same seed the job uses for this batch (GenerationJob.predict_step, first configuration)
        generations = generate(model, tokenizer, ids, sampling, batch_size=len(ids), seed=first)
        tokens += sum(len(g.token_ids) for g in generations)
    return tokens, time.perf_counter() - start


def job_run(model_dir: str, world: str, queries_file: str, n_queries: int, config: str, batch_size: int,
            sampling) -> tuple[int, float]:
    """Generated tokens and seconds of the predict loop of the job (model loading excluded)."""
    import lightning as L

    from data_modules.jobs import JobInputDataModule
    from lit_models.jobs import PromptedResponsesJob
    from almost.sandbox.prompts import SandboxPrompter

    with tempfile.TemporaryDirectory() as out:
        job = PromptedResponsesJob(models={config.split("-")[0]: model_dir}, configurations=[config],
                                   prompter=SandboxPrompter(world), output=f"{out}/responses.jsonl",
                                   sampling=sampling, seed=0)
        data = JobInputDataModule(queries_file, batch_size=batch_size, limit=n_queries)
        trainer = L.Trainer(accelerator="cpu", devices=1, logger=False, enable_progress_bar=False,
                            enable_model_summary=False)
        start = time.perf_counter()
        trainer.predict(job, datamodule=data, return_predictions=False)
        seconds = time.perf_counter() - start
        stats = json.loads(Path(out, "responses.stats.json").read_text())
    return stats["generated_tokens_this_run"], seconds


def main() -> None:
    from almost.generation import SamplingConfig
    from almost.records import Prompt, load_jsonl

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="runs/sandbox/pretrain_m/hf")
    parser.add_argument("--config", default="M-hhh-3shot", help="prompted configuration <model>-<style>-<k>shot")
    parser.add_argument("--world", default="runs/sandbox/world")
    parser.add_argument("--queries", default="runs/sandbox/world/heldout_queries.jsonl")
    parser.add_argument("--batch-size", type=int, default=16)
    parser.add_argument("--batches", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    n = args.batch_size * args.batches
    queries = [p.prompt for p in load_jsonl(args.queries, Prompt)][:n]
    # the job's stop strings are the prompter's: the same here
    sampling = SamplingConfig(max_new_tokens=48, temperature=1.0, top_p=0.9, stop_strings=("\nUser:",))
    bare, job, shared = [], [], []
    for _ in range(args.rounds):
        bare.append(bare_loop(args.model, args.world, queries, args.config, args.batch_size, sampling))
        job.append(job_run(args.model, args.world, args.queries, n, args.config, args.batch_size, sampling))
        shared.append(bare_loop(args.model, args.world, queries, args.config, args.batch_size,
                                replace(sampling, share_prefix=True)))
    rows = {"bare generate loop": bare, "job (train.py predict)": job, "bare, shared prefix": shared}
    print(f"{args.config} from {args.model}: {n} queries, batch {args.batch_size}, {args.rounds} rounds, "
          f"torch threads {torch.get_num_threads()}\n")
    print(f"| {'loop':24s} | tokens | median s | tokens/s |\n|{'-' * 26}|--------|----------|----------|")
    rates = {}
    for name, runs in rows.items():
        seconds = statistics.median(s for _, s in runs)
        tokens = runs[0][0]
        rates[name] = tokens / seconds
        print(f"| {name:24s} | {tokens:6d} | {seconds:8.2f} | {rates[name]:8.0f} |")
    ratio = rates["job (train.py predict)"] / rates["bare generate loop"]
    print(f"\njob / bare throughput = {ratio:.2f} (target >= 0.80); shared prefix / bare = "
          f"{rates['bare, shared prefix'] / rates['bare generate loop']:.2f}")


if __name__ == "__main__":
    main()
