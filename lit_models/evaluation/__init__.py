"""LightningModules of the evaluation commands (ALMoST section 3).

    python train.py test --config configs/eval/<task>.yaml
"""

from lit_models.evaluation.base import EvaluationModule
from lit_models.evaluation.hhh import HHHEvaluation
from lit_models.evaluation.perplexity import PerplexityEvaluation
from lit_models.evaluation.rm_accuracy import RewardAccuracyEvaluation
from lit_models.evaluation.truthfulqa import TruthfulQAEvaluation
from lit_models.evaluation.winrate import WinRateEvaluation

__all__ = ["EvaluationModule", "HHHEvaluation", "PerplexityEvaluation", "RewardAccuracyEvaluation",
           "TruthfulQAEvaluation", "WinRateEvaluation"]
