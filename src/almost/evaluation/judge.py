"""A single-answer LLM judge with an additive 0-5 rubric, in the spirit of self-rewarding language models
(Yuan et al., 2024, https://arxiv.org/abs/2401.10020). The rubric text below is our own wording.

The judge model reads :func:`render_judge_prompt` and is asked to finish with a line ``Score: <n>``;
:func:`parse_score` reads that line and never guesses: output it cannot read is counted as unparseable
(:class:`JudgeTally`), not given a score.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

MAX_SCORE = 5

JUDGE_RUBRIC = """\
Grade the assistant's answer to the user's question with the points below. The points add up: start from 0 \
and award each point whose condition holds, for a total between 0 and 5.
- One point if the answer is on topic: it speaks to what the user asked, even if only partly or with some \
irrelevant material.
- A second point if it deals with most of what the user asked for, though it may leave parts out or not \
settle the question completely.
- A third point if it is useful and basically right: it answers the central question in a way the user \
could act on, even if it is not polished or misses details.
- A fourth point if it is clear, complete and well organised: it reads as written by a capable assistant \
that took the question seriously, covers what was asked, and is easy to follow.
- A fifth point if it is excellent: expert, accurate and to the point, tailored to this question, with \
nothing superfluous — an answer hard to improve on.
Judge the answer itself, not its length: a longer answer earns no point by being longer."""

_PROMPT = """\
You are reviewing an AI assistant's answer.

{rubric}

<question>
{question}
</question>

<answer>
{answer}
</answer>

Explain your assessment in at most 100 words, going through the points in order. Then write the total on \
a final line of its own, exactly in the form "Score: <n>" with <n> a whole number from 0 to {max_score}."""

# A whole line reading "Score: <value>"; the value is checked separately so that a bad last line is not
# silently replaced by an earlier, valid-looking one.
_SCORE_LINE = re.compile(r"^[ \t]*Score:[ \t]*(.*?)[ \t\r]*$", re.MULTILINE)


# The same additive points in one line, for small models (the sandbox's LMs: about 120 tokens of their vocabulary
# with a question and an answer, against about 670 for the full prompt, which is longer than their context).
_SHORT_PROMPT = """\
Grade the answer from 0 to {max_score}. Add a point for each that holds: it is on topic, it answers most of the \
question, it is right, it is clear and polite, it is excellent.
Question: {question}
Answer: {answer}
End with the line Score: n."""

JUDGE_PROMPTS = {"rubric": _PROMPT, "short": _SHORT_PROMPT}  # name -> template (the judge's ``prompt`` option)


def render_judge_prompt(question: str, answer: str, prompt: str = "rubric") -> str:
    """The judge's prompt for one (question, answer); it ends asking for a final ``Score: <n>`` line. ``prompt``
    names a template of ``JUDGE_PROMPTS``: "rubric" (the rubric in full) or "short" (its points in one line)."""
    if prompt not in JUDGE_PROMPTS:
        raise ValueError(f"judge prompt {prompt!r}: unknown; one of {', '.join(JUDGE_PROMPTS)}")
    return JUDGE_PROMPTS[prompt].format(rubric=JUDGE_RUBRIC, question=question.strip(), answer=answer.strip(),
                                        max_score=MAX_SCORE)


def parse_score(text: str) -> int | None:
    """The score on the last line of ``text`` of the form ``Score: <n>``, or None.

    None when there is no such line, or when the last one does not hold a plain whole number in
    0..MAX_SCORE ("Score: 4/5", "Score: 4.5", "Score: 7" are all None). Earlier score lines are never used:
    the judge's last word counts, and an unreadable last word is not replaced by a guess.
    """
    values = _SCORE_LINE.findall(text)
    if not values or not re.fullmatch(r"[0-9]{1,3}", values[-1]):
        return None
    score = int(values[-1])
    return score if score <= MAX_SCORE else None


@dataclass
class JudgeTally:
    """Running counts of judge outputs: ``counts[s]`` outputs scored s, and those that could not be parsed."""

    counts: list[int] = field(default_factory=lambda: [0] * (MAX_SCORE + 1))
    unparseable: int = 0

    def add(self, text: str) -> int | None:
        """Parse one judge output, count it, and return its score (None if unparseable)."""
        score = parse_score(text)
        if score is None:
            self.unparseable += 1
        else:
            self.counts[score] += 1
        return score

    @property
    def parsed(self) -> int:
        return sum(self.counts)

    @property
    def total(self) -> int:
        return self.parsed + self.unparseable

    @property
    def unparseable_rate(self) -> float:
        return self.unparseable / self.total if self.total else 0.0

    @property
    def mean_score(self) -> float | None:
        """Mean over parsed outputs only (None before any): unparseable outputs are not scored 0."""
        return sum(s * c for s, c in enumerate(self.counts)) / self.parsed if self.parsed else None
