"""bfpo: Bi-Factorial Preference Optimization (Zhang et al., ICLR 2025) for safety and helpfulness."""

from bfpo.objective import (
    LossOutput,
    alpha_constants,
    bfpo_loss,
    case_label_values,
    dpo_loss,
    global_reward,
    ipo_loss,
    labeling_function,
    preference_loss,
    shifted_label,
)

__version__ = "0.1.0"

__all__ = [
    "LossOutput", "alpha_constants", "bfpo_loss", "case_label_values", "dpo_loss", "global_reward",
    "ipo_loss", "labeling_function", "preference_loss", "shifted_label",
]
