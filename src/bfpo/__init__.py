"""bfpo: Bi-Factorial Preference Optimization (Zhang et al., ICLR 2025) for safety and helpfulness.

The objective's functions are re-exported lazily (module ``__getattr__``), so ``import bfpo`` and
``bfpo --help`` do not import torch.
"""

from __future__ import annotations

import importlib
from typing import Any

# The one place the version is written: pyproject.toml reads it ([tool.setuptools.dynamic], without importing).
__version__ = "0.1.0"

__all__ = [
    "LossOutput",
    "alpha_constants",
    "bfpo_loss",
    "case_label_values",
    "dpo_loss",
    "global_reward",
    "ipo_loss",
    "labeling_function",
    "preference_loss",
    "shifted_label",
]


def __getattr__(name: str) -> Any:
    """Import :mod:`bfpo.objective` on first use of one of its names."""
    if name in __all__:
        value = getattr(importlib.import_module("bfpo.objective"), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'bfpo' has no attribute {name!r}")


def __dir__():
    return sorted(list(globals()) + __all__)
