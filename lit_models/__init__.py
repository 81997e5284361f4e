"""LightningModules: the training stages of the pipeline."""

from lit_models.dpo import DPOModule
from lit_models.ppo import PPOModule
from lit_models.reward_model import RewardModelModule
from lit_models.sft import SFTModule
from lit_models.strategy import FSDP2Strategy

__all__ = ["DPOModule", "PPOModule", "RewardModelModule", "SFTModule", "FSDP2Strategy"]
