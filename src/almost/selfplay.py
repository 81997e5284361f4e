"""Reward-model-guided self-play (RMSP, ALMoST section 2.2): simulated conversations whose assistant turns
are picked by a reward model, used as demonstrations for SFT.

Starting from the initial queries, for up to ``turns`` assistant turns::

    1. the assistant samples ``n_samples`` answers to every open conversation;
    2. with a scorer, the highest-scoring answer is kept (rejection sampling); without one, the only sample;
    3. unless it was the last turn, the simulated user asks a follow-up question; a conversation whose
       follow-up is not a usable question ends there.

``n_samples = 1`` without a scorer is plain self-play, the paper's baseline. The model calls are passed in
as functions, so the loop is the same for any models, batch sizes and devices (and testable without any).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Callable, Sequence

from almost.records import Turn

# (histories ending with a user turn, n) -> n answers per history
AnswerFn = Callable[[Sequence[Sequence[Turn]], int], list[list[str]]]
# histories ending with an assistant turn -> one next user question per history
AskFn = Callable[[Sequence[Sequence[Turn]]], list[str]]
# (histories ending with a user turn, one answer each) -> reward of each answer
ScoreFn = Callable[[Sequence[Sequence[Turn]], Sequence[str]], list[float]]


@dataclass
class Conversation:
    messages: list[Turn]
    # scores (None without a scorer) of the kept answer, and of all samples, per assistant turn
    kept_scores: list[float | None] = field(default_factory=list)
    sample_scores: list[list[float | None]] = field(default_factory=list)
    samples: list[list[str]] = field(default_factory=list)  # every sampled answer, per assistant turn
    ended_by: str = "turns"  # "turns" (reached the limit) or why the user's follow-up was refused


def usable_question(text: str, role_tags: Sequence[str] = ("User:", "Assistant:")) -> str | None:
    """Why a simulated user's ``text`` cannot be the next turn (None if it can): empty, a role tag, no ending."""
    text = text.strip()
    if not text:
        return "empty_question"
    if any(tag in text for tag in role_tags):
        return "role_tag_in_question"
    if text[-1] not in "?.!":
        return "unfinished_question"
    return None


def best_of(scores: Sequence[float | None]) -> int:
    """Index of the highest score; the first one on ties; NaN or None (unjudged) never wins unless all are."""
    values = [math.nan if value is None else value for value in scores]
    best = 0
    for i, value in enumerate(values):
        if not math.isnan(value) and (math.isnan(values[best]) or value > values[best]):
            best = i
    return best


def self_play(queries: Sequence[str], answer: AnswerFn, ask: AskFn, score: ScoreFn | None = None,
              n_samples: int = 4, turns: int = 2) -> list[Conversation]:
    """One conversation per query (see the module docstring), in query order."""
    if n_samples < 1 or turns < 1:
        raise ValueError(f"n_samples and turns must be at least 1, got {n_samples} and {turns}")
    if n_samples > 1 and score is None:
        raise ValueError("sampling several answers needs a scorer to choose among them")
    conversations = [Conversation([Turn("user", q)]) for q in queries]
    open_ = list(conversations)
    for turn in range(turns):
        # 1.-2. the assistant answers every open conversation; the scorer keeps the best sample
        histories = [c.messages for c in open_]
        samples = answer(histories, n_samples)
        if score is not None:
            flat_histories = [h for h, s in zip(histories, samples) for _ in s]
            flat_scores = score(flat_histories, [text for s in samples for text in s])
            per_conversation = [flat_scores[i * n_samples:(i + 1) * n_samples] for i in range(len(open_))]
        else:
            per_conversation = [[None] * n_samples for _ in open_]
        for conversation, texts, scores in zip(open_, samples, per_conversation):
            best = best_of(scores) if score is not None else 0
            conversation.messages.append(Turn("assistant", texts[best]))
            conversation.kept_scores.append(scores[best])
            conversation.sample_scores.append(list(scores))
            conversation.samples.append(list(texts))
        if turn == turns - 1:
            break
        # 3. the simulated user follows up; a conversation without a usable question ends
        questions = ask([c.messages for c in open_])
        still_open = []
        for conversation, question in zip(open_, questions):
            problem = usable_question(question)
            if problem is None:
                conversation.messages.append(Turn("user", question.strip()))
                still_open.append(conversation)
            else:
                conversation.ended_by = problem
        open_ = still_open
        if not open_:
            break
    return conversations
