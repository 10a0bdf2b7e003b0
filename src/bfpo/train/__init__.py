"""Training: BFPO / DPO / IPO preference stage and the SFT stage."""

from bfpo.train.config import BFPOConfig, DataArguments, ModelArguments
from bfpo.train.trainer import BFPOTrainer

__all__ = ["BFPOConfig", "BFPOTrainer", "DataArguments", "ModelArguments"]
