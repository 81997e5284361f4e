"""What every generation job shares: resumable sharded output, per-batch seeds, throughput, the final merge.

A job is a LightningModule run by ``python train.py predict --config configs/<setting>/<job>.yaml``;
Lightning spreads the input batches over processes and devices. For each batch the job

1. drops the inputs that an earlier, interrupted run already wrote (``<output>.shards/``);
2. seeds sampling from ``(seed, first input index of the batch)``, so a batch's output depends only on its
   inputs: a rerun with the same batch size and number of processes repeats it, interrupted or not;
3. produces output rows (``run``), which :class:`ShardWriter` writes as one shard at once.

When every batch is done, rank 0 merges the shards in input order and ``finish`` writes the final files and
the statistics (``<output stem>.stats.json``, also logged to the Lightning logger under ``job/``).
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import lightning as L
from lightning.pytorch.callbacks import BasePredictionWriter
from torch import nn

from almost.generation import Generation, SamplingConfig, generate
from almost.models import ModelSource, build_causal_lm, load_tokenizer
from almost.prompting import text_prompt_ids
from almost.shards import ShardStore
from lit_models.callbacks import Output, check_outputs


class ShardWriter(BasePredictionWriter):
    """Writes each batch's rows as one shard; merges the shards when the job is done."""

    def __init__(self) -> None:
        super().__init__(write_interval="batch")

    def write_on_batch_end(self, trainer, pl_module, prediction, batch_indices, batch, batch_idx, dataloader_idx):
        pl_module.store.write(prediction, rank=trainer.global_rank)

    def on_predict_epoch_end(self, trainer, pl_module) -> None:
        trainer.strategy.barrier("shards written")
        if trainer.is_global_zero:
            pl_module.complete()
        trainer.strategy.barrier("job finished")


class GenerationJob(L.LightningModule):
    """Base of the jobs. Subclasses implement :meth:`run` (rows of one batch) and :meth:`finish` (final files).

    Args:
        output: the job's main output file (JSONL); shards go to ``<output>.shards/``.
        seed: base seed of sampling.
    """

    def __init__(self, output: str, seed: int = 0) -> None:
        super().__init__()
        self.output = Path(output)
        self.seed = seed
        self.store = ShardStore(f"{output}.shards")
        check_outputs(self.output_paths())  # here, before a subclass loads its models
        self.done: set[int] = set()
        self.generated_tokens = 0
        self.generation_seconds = 0.0

    # --- to implement -------------------------------------------------------------------------
    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        """Output rows (each with the ``index`` of its input) of the ``(index, record)`` items of one batch."""
        raise NotImplementedError

    def finish(self, rows: list[dict]) -> dict:
        """Write the final outputs from all rows (input order); return the statistics to save and log."""
        raise NotImplementedError

    def output_paths(self) -> list[Output]:
        """What the job writes: the output, its shards and its statistics (``lit_models.callbacks.OutputCheck``)."""
        return [Output("output", str(self.output), "file"), Output("output shards", str(self.store.directory), "dir"),
                Output("output statistics", str(self.stats_path), "file")]

    @property
    def stats_path(self) -> Path:
        return self.output.with_name(self.output.stem + ".stats.json")

    # --- the loop -----------------------------------------------------------------------------
    def configure_callbacks(self):
        return [ShardWriter()]

    def on_predict_start(self) -> None:
        self.trainer.predict_loop.return_predictions = False  # rows go to shards, not into memory
        self.done = self.store.done()
        self.generated_tokens, self.generation_seconds = 0, 0.0
        if self.done:
            print(f"{self.store.directory}: {len(self.done)} inputs already done, skipping them", flush=True)

    def predict_step(self, batch: list[tuple[int, Any]], batch_idx: int) -> list[dict]:
        todo = [(index, record) for index, record in batch if index not in self.done]
        if not todo:
            return []
        start = time.perf_counter()
        rows = self.run(todo, seed=self.seed * 1_000_003 + todo[0][0])
        self.generation_seconds += time.perf_counter() - start
        self._show_throughput()
        return rows

    def _show_throughput(self) -> None:
        rate = self.generated_tokens / max(self.generation_seconds, 1e-9)
        bar = getattr(self.trainer.progress_bar_callback, "predict_progress_bar", None)
        if bar is not None:
            bar.set_postfix({"tokens/s": f"{rate:.0f}"})

    def complete(self) -> None:
        """Rank 0, after every batch: merge the shards, write the outputs and the statistics."""
        rows = self.store.merged_rows()
        stats = self.finish(rows)
        stats["generated_tokens_this_run"] = self.generated_tokens  # by rank 0, the process that merges
        stats["tokens_per_second_this_run"] = self.generated_tokens / max(self.generation_seconds, 1e-9)
        path = self.stats_path
        path.write_text(json.dumps(stats, indent=2) + "\n")
        if self.logger is not None:
            self.logger.log_metrics({f"job/{k}": v for k, v in stats.items() if isinstance(v, (int, float))}, step=0)
        print(f"{type(self).__name__}: wrote {self.output} and {path}", flush=True)

    # --- helpers for subclasses ----------------------------------------------------------------
    def sample(self, model: nn.Module, tokenizer, texts: list[str], n: int, sampling: SamplingConfig,
               seed: int) -> list[list[Generation]]:
        """``n`` sampled continuations of each text prompt (a vanilla LM's few-shot prompt), in one batch."""
        prompts = [text_prompt_ids(tokenizer, text) for text in texts for _ in range(n)]
        generations = generate(model, tokenizer, prompts, sampling, batch_size=max(1, len(prompts)), seed=seed)
        self.generated_tokens += sum(len(g.token_ids) for g in generations)
        return [generations[i * n:(i + 1) * n] for i in range(len(texts))]


def load_models(models: dict[str, str]) -> tuple[nn.ModuleDict, dict[str, Any]]:
    """Causal LMs (name -> local Hugging Face directory), frozen, and their tokenizers."""
    networks, tokenizers = nn.ModuleDict(), {}
    for name, path in models.items():
        source = ModelSource(path=path)
        tokenizers[name] = load_tokenizer(source)
        networks[name] = build_causal_lm(source, tokenizers[name]).eval().requires_grad_(False)
    return networks, tokenizers
