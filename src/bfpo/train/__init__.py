"""Training: BFPO / DPO / IPO preference stage and the SFT stage."""

from bfpo.train.config import BFPOConfig, load_recipe
from bfpo.train.trainer import BFPOTrainer

__all__ = ["BFPOConfig", "BFPOTrainer", "load_recipe"]
