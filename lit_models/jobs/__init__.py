"""Generation jobs, run by ``python train.py predict``: synthetic feedback data (ALMoST sections 2.1-2.2)."""

from lit_models.jobs.base import GenerationJob, ShardWriter
from lit_models.jobs.comparisons import ComparisonJob
from lit_models.jobs.mining import QueryMiningJob
from lit_models.jobs.responses import PromptedResponsesJob
from lit_models.jobs.selfplay import SelfPlayJob

__all__ = ["GenerationJob", "ShardWriter", "ComparisonJob", "QueryMiningJob", "PromptedResponsesJob", "SelfPlayJob"]
