"""Reward-model accuracy on human preferences in the HH-RLHF format (ALMoST section 3), with the
"longer response wins" baseline on the same pairs.

    python train.py test --config configs/eval/rm_accuracy.yaml --data.init_args.path=hh_rlhf_test.jsonl
"""

from __future__ import annotations

from almost.chat import ChatTemplate, encode_exchange
from almost.evaluation import HHPair, longer_wins_accuracy, preference_accuracy
from almost.models import ModelSource, RewardModel
from lit_models.evaluation.base import EvaluationModule, Row
from lit_models.evaluation.scoring import load_reward_model, reward_scores


class RewardAccuracyEvaluation(EvaluationModule):
    """How often the reward model ``source`` scores the chosen response above the rejected one; batches from
    ``data_modules.evaluation.HHRLHFDataModule``.

    Each response is scored after the pair's context (the turns before the final Assistant turn) in the chat
    layout the reward model was trained on. Metrics: ``accuracy`` (equal rewards count half),
    ``longer_wins_accuracy`` (the chosen response has more characters; equal lengths count half),
    ``mean_margin`` (mean ``r_chosen - r_rejected``), ``n_pairs`` and ``n_contexts_differ`` (pairs whose
    transcripts differ before the last turn; scored with the chosen transcript's context).

    Args:
        max_length: longest scored sequence; the context is cut from the left first, as in reward-model training.
    """

    task = "rm_accuracy"

    def __init__(self, source: ModelSource, out_dir: str, max_length: int = 1024,
                 template: ChatTemplate = ChatTemplate()) -> None:
        super().__init__(source, out_dir, template)
        self.net: RewardModel | None = None

    def build_networks(self) -> None:
        self.net = load_reward_model(self.source, self.tokenizer)

    def evaluate_batch(self, batch: list) -> list[Row]:
        pairs: list[HHPair] = [item.record for item in batch]
        sequences = [encode_exchange(self.tokenizer, self.template, p.context, response, self.hparams.max_length)
                     for p in pairs for response in (p.chosen, p.rejected)]
        rewards = reward_scores(self.net, sequences, self.tokenizer.pad_token_id).view(len(pairs), 2).tolist()
        return [{"index": item.index, "chosen": p.chosen, "rejected": p.rejected, "chosen_reward": chosen,
                 "rejected_reward": rejected, "contexts_differ": p.contexts_differ}
                for item, p, (chosen, rejected) in zip(batch, pairs, rewards)]

    def summarize(self, rows: list[Row]) -> dict[str, float]:
        chosen, rejected = [r["chosen_reward"] for r in rows], [r["rejected_reward"] for r in rows]
        return {
            "accuracy": preference_accuracy(chosen, rejected),
            "longer_wins_accuracy": longer_wins_accuracy([r["chosen"] for r in rows], [r["rejected"] for r in rows]),
            "mean_margin": sum(c - r for c, r in zip(chosen, rejected)) / len(rows),
            "n_pairs": len(rows),
            "n_contexts_differ": sum(r["contexts_differ"] for r in rows),
        }
