"""Reward-model accuracy on human preferences in the HH-RLHF format (ALMoST section 3), with the
"longer response wins" baseline on the same pairs.

    python train.py test --config configs/eval/rm_accuracy.yaml --data.init_args.path=hh_rlhf_test.jsonl
"""

from __future__ import annotations

from lightning.pytorch.utilities import rank_zero_warn

from almost.chat import ChatTemplate, encode_prompt, encode_turn
from almost.evaluation import HHPair, longer_wins_accuracy, preference_accuracy, skip_counts
from almost.models import ModelSource, RewardModel
from almost.records import Turn
from almost.scorers import RewardModelScorer
from lit_models.evaluation.base import EvaluationModule, Row


def exchange_length(tokenizer, template: ChatTemplate, context: tuple[Turn, ...], response: str) -> int:
    """Ids in ``context`` followed by ``response`` as a closed assistant turn, before any truncation."""
    return len(encode_prompt(tokenizer, template, context)) + len(encode_turn(tokenizer, template,
                                                                              Turn("assistant", response)))


class RewardAccuracyEvaluation(EvaluationModule):
    """How often the reward model ``source`` scores the chosen response above the rejected one; batches from
    ``data_modules.evaluation.HHRLHFDataModule``.

    Each response is scored after the pair's shared prompt (``almost.evaluation.split_hh_pair``: the turns
    up to the last Assistant turn the two transcripts share) in the chat layout the reward model was trained
    on. Metrics, all over the scored pairs: ``accuracy`` (equal rewards count half), ``longer_wins_accuracy``
    (the chosen response has more characters; equal lengths count half), ``mean_margin`` (mean
    ``r_chosen - r_rejected``), ``n_pairs``, ``n_multi_turn`` (pairs whose responses hold more than one turn),
    ``truncated`` (sequences cut to ``sequence_limit``, itself a metric), and ``skipped_<reason>`` for the
    file's unusable pairs (left out of everything else).

    Args:
        max_length: longest scored sequence, lowered to the reward model's ``max_position_embeddings`` when
            that is smaller (with a warning); the prompt is cut from the left first, as in reward-model training.
    """

    task = "rm_accuracy"

    def __init__(self, source: ModelSource, out_dir: str, max_length: int = 1024,
                 template: ChatTemplate | None = None) -> None:
        super().__init__(source, out_dir, template)
        self.net: RewardModel | None = None

    def build_networks(self) -> None:
        self.net = RewardModel.load(self.source, self.tokenizer)

    @property
    def scorer(self) -> RewardModelScorer:
        """The scorer around ``net``: pairs encoded in the chat template, cut to ``sequence_limit``."""
        return RewardModelScorer.of_model(self.net, self.tokenizer, self.template, self.sequence_limit)

    @property
    def sequence_limit(self) -> int:
        """``max_length``, or the reward model's ``max_position_embeddings`` where that is smaller."""
        config = getattr(getattr(self.net, "backbone", None), "config", None)
        positions = getattr(config, "max_position_embeddings", None)
        return min(self.hparams.max_length, positions) if positions else self.hparams.max_length

    def on_test_start(self) -> None:
        if self.sequence_limit < self.hparams.max_length:
            rank_zero_warn(f"max_length={self.hparams.max_length} is more than the reward model's "
                           f"max_position_embeddings: sequences are cut to {self.sequence_limit} tokens")

    def evaluate_batch(self, batch: list) -> list[Row]:
        pairs: list[HHPair] = [item.record for item in batch]
        rewards = self.scorer.score([p.context for p in pairs for _ in range(2)],
                                    [response for p in pairs for response in (p.chosen, p.rejected)])
        rewards = list(zip(rewards[0::2], rewards[1::2]))
        limit = self.sequence_limit
        truncated = [sum(exchange_length(self.tokenizer, self.template, p.context, response) > limit
                         for response in (p.chosen, p.rejected)) for p in pairs]
        return [{"index": item.index, "chosen": p.chosen, "rejected": p.rejected, "chosen_reward": chosen,
                 "rejected_reward": rejected, "multi_turn": p.multi_turn, "truncated": cut}
                for item, p, (chosen, rejected), cut in zip(batch, pairs, rewards, truncated)]

    def summarize(self, rows: list[Row]) -> dict[str, float]:
        chosen, rejected = [r["chosen_reward"] for r in rows], [r["rejected_reward"] for r in rows]
        return {
            "accuracy": preference_accuracy(chosen, rejected),
            "longer_wins_accuracy": longer_wins_accuracy([r["chosen"] for r in rows], [r["rejected"] for r in rows]),
            "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(rows),
            "n_pairs": len(rows),
            "n_multi_turn": sum(r["multi_turn"] for r in rows),
            "truncated": sum(r["truncated"] for r in rows),
            "sequence_limit": self.sequence_limit,
            **skip_counts(getattr(self.trainer.datamodule, "skipped", [])),
        }
