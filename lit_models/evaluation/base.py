"""What every evaluation command shares: the evaluated model, per-example rows gathered from all processes,
the results files and the logged scalars.

    python train.py test --config configs/eval/<task>.yaml

A test batch is a list of ``data_modules.evaluation.Indexed`` records. ``evaluate_batch`` turns it into one
row (a JSON-able dict with the record's ``index``) per record; at the end of the epoch the rows of every
process are gathered, repeats from the distributed sampler's padding dropped, and ``summarize`` turns them
into flat metrics. Rank 0 writes, to ``out_dir``:

    results.json    {"task", "metrics", "n_examples", "models", "data", "config"} (see ``results_document``)
    results.md      the metrics as a Markdown table
    <rows_file>     the rows, one JSON object per line, in data order

and every process logs each metric as ``eval/<metric>`` (TensorBoard with the configured logger).
Several devices: each process holds whole models (DDP or one device; ``strategy: ddp``), not FSDP shards.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict
from pathlib import Path
from typing import Any

import lightning as L
import torch.distributed as dist

from almost.chat import ChatTemplate
from almost.models import ModelSource, load_tokenizer
from almost.scorers import resolve_template
from lit_models.callbacks import Output

Row = dict[str, Any]  # one example's results; "index" is its position in the evaluation set


def gather_objects(items: list) -> list:
    """Every process's ``items`` concatenated in rank order, on every process (``items`` itself in one process)."""
    if not (dist.is_available() and dist.is_initialized()):
        return items
    parts: list[list | None] = [None] * dist.get_world_size()
    dist.all_gather_object(parts, items)
    return [item for part in parts for item in part]


def unique_by_index(rows: list[Row]) -> list[Row]:
    """Rows sorted by ``index``, one per index: the distributed sampler pads the last batches with repeats."""
    return list({row["index"]: row for row in sorted(rows, key=lambda row: row["index"])}.values())


def sha256_of(path: str | Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def describe(source: ModelSource) -> str:
    """A model's provenance for results.json: its directory, or the architecture of fresh weights."""
    return source.path if source.path is not None else f"fresh {source.arch['model_type']} weights: {source.arch}"


def markdown_metrics(metrics: dict[str, float]) -> str:
    lines = ["| metric | value |", "|---|---|"]
    lines += [f"| {name} | {value:.4f} |" if isinstance(value, float) else f"| {name} | {value} |"
              for name, value in metrics.items()]
    return "\n".join(lines)


class EvaluationModule(L.LightningModule):
    """Base of the evaluation commands.

    Args:
        source: the model under evaluation (a policy, or a reward model for reward-based methods); named
            ``source`` like every stage. Its tokenizer tokenizes the evaluation prompts.
        out_dir: where results.json, results.md and the per-example rows are written.
        template: the chat template that renders a query and a response as the policy was trained on them; default:
            the one saved with ``source`` (``almost_chat_template.json``), else ``ChatTemplate()``.
    """

    task = ""  # name of the evaluation in results.json
    rows_file = "examples.jsonl"

    def __init__(self, source: ModelSource, out_dir: str, template: ChatTemplate | None = None) -> None:
        super().__init__()
        self.source = ModelSource.of(source)
        if template is not None and not isinstance(template, ChatTemplate):
            template = ChatTemplate(**template)
        self.template = resolve_template(self.source.path, template) if self.source.path else template or ChatTemplate()
        self.save_hyperparameters(ignore=["source", "template"])
        self.hparams["source"] = asdict(self.source)  # plain data in results.json and checkpoints
        self.hparams["template"] = asdict(self.template)
        self.tokenizer = load_tokenizer(self.source)
        self.built = False
        self.rows: list[Row] = []

    # --- to implement -------------------------------------------------------------------------
    def build_networks(self) -> None:
        """Load the networks this evaluation needs and assign them as attributes."""
        raise NotImplementedError

    def evaluate_batch(self, batch: list) -> list[Row]:
        """One row per record of ``batch`` (a list of ``Indexed``), each with the record's ``index``."""
        raise NotImplementedError

    def summarize(self, rows: list[Row]) -> dict[str, float]:
        """Flat metrics (``name -> number``) from every row of the set, in data order."""
        raise NotImplementedError

    def models(self) -> dict[str, str]:
        """The models this evaluation read, by role (results.json ``models``)."""
        return {"source": describe(self.source)}

    def markdown(self, metrics: dict[str, float]) -> str:
        """The body of results.md (a table of the metrics unless a task has a better layout)."""
        return markdown_metrics(metrics)

    def output_paths(self) -> list[Output]:
        """Where the results go (checked before any network is built: ``lit_models.callbacks.OutputCheck``)."""
        return [Output("out_dir", str(self.hparams.out_dir), "dir")]

    # --- Lightning hooks --------------------------------------------------------------------------
    def configure_model(self) -> None:
        if self.built:  # Lightning may call this more than once
            return
        if self.device_mesh is not None:
            raise ValueError("evaluation holds whole models on every process: run it on one device or with "
                             "strategy: ddp, not a model-parallel (FSDP2) strategy")
        self.build_networks()
        self.built = True

    def on_test_epoch_start(self) -> None:
        self.rows = []

    def test_step(self, batch: list, batch_idx: int) -> None:
        self.rows += self.evaluate_batch(batch)

    def on_test_epoch_end(self) -> None:
        rows = unique_by_index(gather_objects(self.rows))
        metrics = self.summarize(rows)
        # every process holds the same values (from the same gathered rows): "max" syncs them exactly
        self.log_dict({f"eval/{name}": float(value) for name, value in metrics.items()}, sync_dist=True,
                      reduce_fx="max")
        if self.global_rank == 0:
            self.write_results(rows, metrics)
        self.trainer.strategy.barrier("evaluation results")

    # --- results --------------------------------------------------------------------------------
    def results_document(self, rows: list[Row], metrics: dict[str, float]) -> dict[str, Any]:
        """results.json: ``task``; ``metrics`` (also logged as ``eval/<name>``); ``n_examples``; ``models``
        (role -> directory); ``data`` (``[{"path", "sha256"}]`` of the files read); ``config`` (the
        module's arguments); ``skipped`` (``[{"index", "reason", "where", "detail"}]``: the data items the loader
        could not use, left out of every metric)."""
        data_files = getattr(self.trainer.datamodule, "data_files", [])
        skipped = getattr(self.trainer.datamodule, "skipped", [])
        return {
            "task": self.task,
            "metrics": metrics,
            "n_examples": len(rows),
            "models": self.models(),
            "data": [{"path": str(path), "sha256": sha256_of(path)} for path in data_files],
            "config": dict(self.hparams),
            "skipped": [asdict(skip) for skip in skipped],
        }

    def write_results(self, rows: list[Row], metrics: dict[str, float]) -> None:
        out = Path(self.hparams.out_dir)
        out.mkdir(parents=True, exist_ok=True)
        document = self.results_document(rows, metrics)
        (out / "results.json").write_text(json.dumps(document, indent=1, ensure_ascii=False) + "\n", encoding="utf-8")
        header = [f"# {self.task}", ""]
        header += [f"- {role}: `{path}`" for role, path in document["models"].items()]
        header += [f"- data: `{d['path']}` (sha256 {d['sha256'][:12]})" for d in document["data"]]
        header += [f"- examples: {len(rows)}", f"- skipped (unusable items): {len(document['skipped'])}", "", ""]
        (out / "results.md").write_text("\n".join(header) + self.markdown(metrics) + "\n", encoding="utf-8")
        with (out / self.rows_file).open("w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
