"""Generation jobs, run by ``python train.py predict``: synthetic feedback data (ALMoST sections 2.1-2.2), best-of-N
SFT data (RAFT) and self-rewarding preference pairs."""

from lit_models.jobs.base import GenerationJob, ShardWriter
from lit_models.jobs.best_of_n import BestOfNJob
from lit_models.jobs.comparisons import ComparisonJob
from lit_models.jobs.mining import QueryMiningJob
from lit_models.jobs.responses import PromptedResponsesJob
from lit_models.jobs.self_judge import SelfJudgeJob
from lit_models.jobs.selfplay import SelfPlayJob

__all__ = ["GenerationJob", "ShardWriter", "BestOfNJob", "ComparisonJob", "QueryMiningJob", "PromptedResponsesJob",
           "SelfJudgeJob", "SelfPlayJob"]
