"""What the jobs that sample an aligned policy share: zero-shot answers in the policy's own chat template, scored.

An aligned policy answers the query alone as a user turn in the chat template it was trained with (the template
saved beside its weights), as ``almost.sandbox.report.policy_answers`` prompts it: no few-shot prompt. Sampling
stops at the template's next user tag as well as at EOS.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from typing import Sequence

from almost.chat import encode_prompt
from almost.generation import SamplingConfig, generate
from almost.records import Turn
from almost.scorers import Scorer, resolve_template
from lit_models.jobs.base import GenerationJob, load_models


def mean_std(values: Sequence[float | None]) -> dict[str, float | None]:
    """Mean and population standard deviation of the scored values (None and NaN left out), with their count."""
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None, "n": 0}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values), "n": len(values)}


class PolicySamplingJob(GenerationJob):
    """Base of the jobs that sample ``n_samples`` zero-shot answers per query from ``policy``.

    Args:
        policy: local Hugging Face directory of the policy (exported by a training stage, with its chat template).
        n_samples: answers sampled per query.
        sampling: sampling settings; the template's ``"\\n<user tag>"`` is added to the stop strings.
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, policy: str, output: str, n_samples: int, sampling: SamplingConfig, seed: int) -> None:
        super().__init__(output, seed)
        if n_samples < 1:
            raise ValueError(f"n_samples must be at least 1, got {n_samples}")
        self.policy, self.n_samples = policy, n_samples
        self.template = resolve_template(policy, None)
        stop = f"\n{self.template.user_tag}"
        self.sampling = replace(sampling, stop_strings=tuple(dict.fromkeys((*sampling.stop_strings, stop))))
        self.networks, self.tokenizers = load_models({"policy": policy})

    def sample_answers(self, queries: Sequence[str], seed: int) -> list[list[str]]:
        """``n_samples`` answers to each query (one generation batch), in query order."""
        tokenizer = self.tokenizers["policy"]
        prompts = [encode_prompt(tokenizer, self.template, [Turn("user", q)]) for q in queries
                   for _ in range(self.n_samples)]
        generations = generate(self.networks["policy"], tokenizer, prompts, self.sampling,
                               batch_size=max(1, len(prompts)), seed=seed)
        self.generated_tokens += sum(len(g.token_ids) for g in generations)
        n = self.n_samples
        return [[g.text for g in generations[i * n:(i + 1) * n]] for i in range(len(queries))]

    @staticmethod
    def score_answers(scorer: Scorer, queries: Sequence[str], answers: Sequence[Sequence[str]]
                      ) -> list[list[float | None]]:
        """The scorer's score of every non-empty answer, in one call; an empty answer is not scored (None)."""
        flat = [(q, a) for q, per_query in zip(queries, answers) for a in per_query if a.strip()]
        scores = iter(scorer.score([q for q, _ in flat], [a for _, a in flat]) if flat else [])
        return [[next(scores) if a.strip() else None for a in per_query] for per_query in answers]
