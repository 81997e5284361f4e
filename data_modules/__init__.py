"""LightningDataModules: records -> tokenized, padded batches."""

from data_modules.comparisons import ComparisonDataModule
from data_modules.corpus import CorpusDataModule
from data_modules.demonstrations import DemonstrationDataModule
from data_modules.jobs import JobInputDataModule, RoundsDataModule
from data_modules.preference import PreferenceDataModule
from data_modules.prompts import PromptDataModule

__all__ = ["ComparisonDataModule", "CorpusDataModule", "DemonstrationDataModule", "JobInputDataModule",
           "PreferenceDataModule", "PromptDataModule", "RoundsDataModule"]
