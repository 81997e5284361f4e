"""The sandbox oracle as an ``almost.scorers.Scorer``: the gold judge of the sandbox world.

It judges evaluations and the labelled gold-reward controls, chosen by ``class_path`` like any scorer::

    reward: {class_path: almost.sandbox.scorer.OracleScorer, init_args: {world: runs/sandbox/world}}

The default pipeline never trains on it.
"""

from __future__ import annotations

from typing import Sequence

from almost.sandbox.build import load_world
from almost.sandbox.oracle import score as oracle_score
from almost.scorers import PromptLike, Scorer, as_history


class OracleScorer(Scorer):
    """The oracle's total score in [0, 1] of each answer to the last user turn of its prompt.

    Args:
        world: directory of a sandbox world (``python -m almost.sandbox.build``).
        unparseable_score: the score of an answer to a question the world did not generate (a garbled mined
            query); None leaves such answers unscored (the caller decides), a number scores them all alike.
    """

    def __init__(self, world: str, unparseable_score: float | None = None) -> None:
        self.world_dir, self.unparseable_score = world, unparseable_score
        self.world = load_world(world)
        self.unparseable = 0  # questions seen that the world could not parse

    def describe(self) -> dict:
        return {"class": type(self).__name__, "world": self.world_dir, "unparseable_score": self.unparseable_score}

    def score(self, prompts: Sequence[PromptLike], responses: Sequence[str]) -> list[float | None]:
        self._check(prompts, responses)
        scores: list[float | None] = []
        for prompt, response in zip(prompts, responses):
            query = self.world.parse(as_history(prompt)[-1].content)
            if query is None:
                self.unparseable += 1
                scores.append(self.unparseable_score)
            else:
                scores.append(oracle_score(query, response, self.world).total)
        return scores
