"""Query mining, Self-Instruct style (ALMoST's initial queries): ``almost.mining.QueryMiner`` driven by a vanilla LM.

    python train.py predict --config configs/sandbox/mine.yaml

Each round (one predict batch, from ``data_modules.RoundsDataModule``) samples ``candidates_per_round``
candidates, each from a prompt with ``k`` random example queries, and offers them to the miner in order.
Rounds run one after another (the pool grows), so run this job on one process. A round after the target
is reached does nothing. Output: ``Prompt`` records of the mined queries (the seeds are not repeated).
"""

from __future__ import annotations

import random
from dataclasses import replace
from typing import Any

from almost.generation import SamplingConfig
from almost.mining import QueryMiner
from almost.prompting import Prompter
from almost.records import Prompt, load_jsonl, write_jsonl
from lit_models.jobs.base import GenerationJob, load_models


class QueryMiningJob(GenerationJob):
    """Args:
        model: local Hugging Face directory of the vanilla LM that writes queries.
        seeds: JSONL of ``Prompt`` records, the seed queries.
        target: queries to mine.
        exclude: JSONL of ``Prompt`` records that mined queries must not (nearly) repeat: held-out evaluation queries.
        candidates_per_round: prompts sampled per round.
        examples_per_prompt, min_words, max_words, threshold: see ``almost.mining.QueryMiner``.
        prompter: renders the query prompt (the default ``Prompter`` lists examples as user turns).
        sampling: sampling settings (stop strings come from the prompter).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, model: str, seeds: str, output: str, target: int = 1000, exclude: str | None = None,
                 candidates_per_round: int = 32, examples_per_prompt: int = 4, min_words: int = 3,
                 max_words: int = 40, threshold: float = 0.5, prompter: Prompter | None = None,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0) -> None:
        super().__init__(output, seed)
        self.prompter = prompter if prompter is not None else Prompter()
        self.sampling = replace(sampling, stop_strings=self.prompter.stop_strings("query"))
        self.candidates_per_round = candidates_per_round
        self.miner_args = dict(
            seeds=[p.prompt for p in load_jsonl(seeds, Prompt)], target=target, examples_per_prompt=examples_per_prompt,
            min_words=min_words, max_words=max_words, threshold=threshold,
            excluded=[p.prompt for p in load_jsonl(exclude, Prompt)] if exclude else ())
        self.networks, self.tokenizers = load_models({"writer": model})
        self.miner: QueryMiner | None = None

    def on_predict_start(self) -> None:
        super().on_predict_start()
        if self.trainer.world_size > 1:
            raise RuntimeError("query mining grows one pool round by round: run it on one process (devices: 1)")
        self.miner = QueryMiner(**self.miner_args)
        self.miner.restore([row["query"] for row in self.store.merged_rows() if row["query"] is not None])

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        (index, _), = items
        if self.miner.done:
            return [{"index": index, "query": None}]
        rng = random.Random(f"mining:{self.seed}:{index}")
        texts = [self.prompter.query_prompt(self.miner.examples(rng)) for _ in range(self.candidates_per_round)]
        samples = self.sample(self.networks["writer"], self.tokenizers["writer"], texts, 1, self.sampling, seed)
        kept = [g.text.strip() for (g,) in samples if self.miner.offer(g.text)]
        # a round that keeps nothing still writes a row, so a resumed run does not redo it with a larger pool
        return [{"index": index, "query": q} for q in kept] or [{"index": index, "query": None}]

    def finish(self, rows: list[dict]) -> dict:
        queries = [row["query"] for row in rows if row["query"] is not None]
        write_jsonl(self.output, [Prompt(q, {"source": "mined"}) for q in queries])
        return {"mined": len(queries), "target": self.miner_args["target"], "rounds": len({r["index"] for r in rows}),
                "rejected_this_run": dict(self.miner.rejected)}
