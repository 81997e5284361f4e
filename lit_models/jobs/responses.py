"""Prompted baselines (ALMoST section 2.1): one response per query from each prompted vanilla LM configuration.

    python train.py predict --config configs/sandbox/responses.yaml

Output: ``Responses`` records (``almost.records``), one per query, mapping each configuration name
(``<model>-<style>-<k>shot``) to its response, which the comparisons job ranks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from almost.generation import SamplingConfig
from almost.prompting import PromptedConfig, Prompter
from almost.records import Prompt, Responses, Turn, write_jsonl
from lit_models.jobs.base import GenerationJob, load_models


class PromptedResponsesJob(GenerationJob):
    """Args:
        models: model name -> local Hugging Face directory (e.g. ``{L: runs/sandbox/pretrain_l/hf}``).
        configurations: ``<model>-<style>-<k>shot`` names, e.g. ``L-faithful-3shot``.
        prompter: renders the few-shot prompts of each style.
        sampling: sampling settings (stop strings come from the prompter).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, models: dict[str, str], configurations: list[str], prompter: Prompter, output: str,
                 sampling: SamplingConfig = SamplingConfig(), seed: int = 0) -> None:
        super().__init__(output, seed)
        self.configs = [PromptedConfig.parse(name) for name in configurations]
        missing = sorted({c.model for c in self.configs} - set(models))
        if missing:
            raise ValueError(f"configuration needs model {missing[0]!r}, which `models` does not name")
        self.prompter = prompter
        self.sampling = replace(sampling, stop_strings=prompter.stop_strings("assistant"))
        self.networks, self.tokenizers = load_models(models)

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        queries: list[Prompt] = [record for _, record in items]
        responses: list[dict[str, str]] = [{} for _ in items]
        for config_number, config in enumerate(self.configs):
            texts = [self.prompter.assistant_prompt(config.style, config.shots, [Turn("user", q.prompt)])
                     for q in queries]
            samples = self.sample(self.networks[config.model], self.tokenizers[config.model], texts, 1,
                                  self.sampling, seed=seed + 7919 * config_number)
            for per_query, (generation,) in zip(responses, samples):
                per_query[config.name] = generation.text
        return [{"index": index, "prompt": query.prompt, "responses": per_query, "meta": query.meta}
                for (index, query), per_query in zip(items, responses)]

    def finish(self, rows: list[dict]) -> dict:
        records = [Responses(row["prompt"], row["responses"], row["meta"]) for row in rows]
        write_jsonl(self.output, records)
        empty = {c.name: sum(not r.responses[c.name].strip() for r in records) for c in self.configs}
        mean_chars = {c.name: sum(len(r.responses[c.name]) for r in records) / len(records) for c in self.configs}
        return {"queries": len(records), "empty_responses": empty, "mean_response_chars": mean_chars}
