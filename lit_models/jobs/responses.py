"""Prompted baselines (ALMoST section 2.1): one response per query from each prompted vanilla LM configuration.

    python train.py predict --config configs/sandbox/responses.yaml

Output: ``Responses`` records (``almost.records``), one per query, mapping each configuration name
(``<model>-<style>-<k>shot``) to its response, which the comparisons job ranks.
"""

from __future__ import annotations

from dataclasses import replace
from typing import Any

from almost.feedback import Rubric
from almost.generation import SamplingConfig
from almost.prompting import PromptedConfig, Prompter
from almost.records import Prompt, Responses, Turn, write_jsonl
from lit_models.jobs.base import GenerationJob, load_models


class PromptedResponsesJob(GenerationJob):
    """Args:
        models: model name -> local Hugging Face directory (e.g. ``{L: runs/sandbox/pretrain_l/hf}``).
        configurations: ``<model>-<style>-<k>shot`` names, e.g. ``L-faithful-3shot``; default: those of ``rubric``.
        rubric: the rule of thumb over the configurations, best first (``almost.feedback.Rubric``, e.g.
            ``"L-faithful-3shot > L-hhh-5shot > ..."``); recorded in the statistics, where the comparisons job
            reads it, so that it is written in one place.
        prompter: renders the few-shot prompts of each style.
        sampling: sampling settings (stop strings come from the prompter).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, models: dict[str, str], prompter: Prompter, output: str, configurations: list[str] | None = None,
                 rubric: str | None = None, sampling: SamplingConfig = SamplingConfig(), seed: int = 0) -> None:
        super().__init__(output, seed)
        if configurations is None and rubric is None:
            raise ValueError("PromptedResponsesJob needs configurations or a rubric")
        self.rubric = Rubric.parse(rubric) if rubric else None
        self.configs = [PromptedConfig.parse(name) for name in configurations or self.rubric.configs]
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
        return {"queries": len(records), "rubric": str(self.rubric) if self.rubric else None, "empty_responses": empty,
                "mean_response_chars": mean_chars}
