"""Reward-model-guided self-play (RMSP, ALMoST section 2.2) and plain self-play: demonstrations for SFT.

    python train.py predict --config configs/sandbox/rmsp.yaml       # N = 4 samples, the RM keeps the best
    python train.py predict --config configs/sandbox/selfplay.yaml   # N = 1, no reward model (the baseline)

The assistant is a prompted vanilla LM (the best prompted configuration, e.g. ``L-faithful-5shot``); the user
is a prompted vanilla LM that asks follow-up questions. The loop is ``almost.selfplay.self_play``.
Output: ``Demonstration`` records (the conversations; ``meta`` keeps every sampled answer and the RM scores of
the kept ones) and statistics of the RM scores of kept vs all samples.
"""

from __future__ import annotations

import math
import statistics
from dataclasses import replace
from itertools import count
from typing import Any, Sequence

from almost.generation import SamplingConfig
from almost.prompting import Prompter
from almost.records import Demonstration, Prompt, Turn, write_jsonl
from almost.scorers import RewardModelScorer, Scorer
from almost.selfplay import Conversation, self_play
from lit_models.jobs.base import GenerationJob, load_models


def _mean_std(values: Sequence[float]) -> dict[str, float | None]:
    values = [v for v in values if v is not None and not math.isnan(v)]
    if not values:
        return {"mean": None, "std": None}
    return {"mean": statistics.fmean(values), "std": statistics.pstdev(values)}


class SelfPlayJob(GenerationJob):
    """Args:
        assistant: local Hugging Face directory of the assistant's vanilla LM.
        user: directory of the simulated user's vanilla LM (may be the same).
        prompter: renders the assistant's and the user's few-shot prompts.
        assistant_style, assistant_shots: the assistant's prompt (e.g. ``faithful``, 3).
        user_shots: demonstrations in the user's prompt (style ``user``).
        scorer: picks the best of ``n_samples`` answers: any ``almost.scorers.Scorer`` (RMSP: the reward model), or
            a saved reward model's directory (None: plain self-play).
        n_samples: answers sampled per assistant turn (``N``; 1 without a reward model).
        turns: assistant turns per conversation at most (``T``).
        sampling: sampling settings (stop strings come from the prompter).
        output, seed: see ``GenerationJob``.
    """

    def __init__(self, assistant: str, user: str, prompter: Prompter, output: str, assistant_style: str = "faithful",
                 assistant_shots: int = 3, user_shots: int = 2, scorer: Scorer | str | None = None, n_samples: int = 4,
                 turns: int = 2, sampling: SamplingConfig = SamplingConfig(), seed: int = 0) -> None:
        super().__init__(output, seed)
        if n_samples > 1 and scorer is None:
            raise ValueError("n_samples > 1 needs a scorer to choose among the samples")
        self.prompter = prompter
        self.assistant_style, self.assistant_shots, self.user_shots = assistant_style, assistant_shots, user_shots
        self.n_samples, self.turns = n_samples, turns
        self.answer_sampling = replace(sampling, stop_strings=prompter.stop_strings("assistant"))
        self.user_sampling = replace(sampling, stop_strings=prompter.stop_strings("user"))
        self.networks, self.tokenizers = load_models({"assistant": assistant, **({} if user == assistant else
                                                                                 {"user": user})})
        self.user_key = "assistant" if user == assistant else "user"
        self.scorer = RewardModelScorer(scorer) if isinstance(scorer, str) else scorer

    def run(self, items: list[tuple[int, Any]], seed: int) -> list[dict]:
        seeds = count(seed, 7919)  # a fresh seed for every model call of this batch

        def answer(histories, n):
            texts = [self.prompter.assistant_prompt(self.assistant_style, self.assistant_shots, h) for h in histories]
            samples = self.sample(self.networks["assistant"], self.tokenizers["assistant"], texts, n,
                                  self.answer_sampling, next(seeds))
            return [[g.text for g in per_history] for per_history in samples]

        def ask(histories):
            texts = [self.prompter.user_prompt(self.user_shots, h) for h in histories]
            samples = self.sample(self.networks[self.user_key], self.tokenizers[self.user_key], texts, 1,
                                  self.user_sampling, next(seeds))
            return [g.text for (g,) in samples]

        prompts: list[Prompt] = [record for _, record in items]
        conversations = self_play([p.prompt for p in prompts], answer, ask,
                                  self.scorer.score if self.scorer is not None else None, self.n_samples, self.turns)
        return [self._row(index, prompt, conversation)
                for (index, prompt), conversation in zip(items, conversations)]

    @staticmethod
    def _row(index: int, prompt: Prompt, conversation: Conversation) -> dict:
        messages = conversation.messages
        first_empty = next((i for i, t in enumerate(messages) if t.role == "assistant" and not t.content.strip()),
                           None)
        if first_empty is not None:  # keep the conversation up to its last non-empty answer
            messages = messages[:first_empty - 1]
        return {"index": index, "messages": [{"role": t.role, "content": t.content} for t in messages],
                "kept_scores": conversation.kept_scores, "sample_scores": conversation.sample_scores,
                "samples": conversation.samples,
                "ended_by": "empty_answer" if first_empty is not None else conversation.ended_by,
                "meta": prompt.meta}

    def finish(self, rows: list[dict]) -> dict:
        kept_rows = [row for row in rows if row["messages"]]
        demonstrations = [Demonstration([Turn(**m) for m in row["messages"]],
                                        {**row["meta"], "rm_scores": row["kept_scores"], "ended_by": row["ended_by"],
                                         "samples": row["samples"]})
                          for row in kept_rows]
        write_jsonl(self.output, demonstrations)
        ended_by: dict[str, int] = {}
        for row in rows:
            ended_by[row["ended_by"]] = ended_by.get(row["ended_by"], 0) + 1
        first_kept = [row["kept_scores"][0] for row in rows if row["kept_scores"]]
        first_all = [s for row in rows if row["sample_scores"] for s in row["sample_scores"][0]]
        return {
            "queries": len(rows), "demonstrations": len(demonstrations), "n_samples": self.n_samples,
            "turns": self.turns, "ended_by": ended_by,
            "assistant_turns_mean": statistics.fmean(sum(m["role"] == "assistant" for m in r["messages"])
                                                     for r in kept_rows) if kept_rows else 0.0,
            # first assistant turn: every conversation has one, so kept and all samples compare like for like
            "rm_score_kept": _mean_std(first_kept), "rm_score_all_samples": _mean_std(first_all),
        }
