"""Model surgery before training: the selected layers theta' (Algorithm 1, line 2) and dropout off."""

from __future__ import annotations

import logging
import re
from typing import Sequence, Tuple

from bfpo.errors import UserInputError

logger = logging.getLogger(__name__)

#: The paper's choice (section 4.2): the second MLP layer of every block (Llama/Mistral naming).
PAPER_LAYERS = ("down_proj",)


def select_trainable(model, patterns: Sequence[str] | None) -> Tuple[int, int]:
    """Freeze every parameter, then unfreeze those whose name matches any regex in ``patterns``.

    ``patterns=None`` or an empty list leaves every parameter trainable. Each pattern must match at least
    one parameter name, else ``ValueError`` names the pattern and shows example names. Returns
    ``(trainable, total)`` parameter counts, which are also logged.
    """
    params = list(model.named_parameters())
    total = sum(p.numel() for _, p in params)
    if not patterns:
        for _, p in params:
            p.requires_grad_(True)
        logger.info("trainable parameters: all %d", total)
        return total, total
    if isinstance(patterns, str):  # one pattern, not its characters
        patterns = [patterns]
    compiled = [(pat, re.compile(pat)) for pat in patterns]
    for pat, rx in compiled:
        if not any(rx.search(name) for name, _ in params):
            examples = ", ".join(name for name, _ in params[:6])
            raise UserInputError(
                f"trainable pattern {pat!r} matches no parameter of {type(model).__name__}; "
                f"parameter names look like: {examples}, ..."
            )
    trainable = 0
    for name, p in params:
        on = any(rx.search(name) for _, rx in compiled)
        p.requires_grad_(on)
        trainable += p.numel() if on else 0
    logger.info(
        "trainable parameters: %d / %d (%.2f%%) matching %s",
        trainable,
        total,
        100.0 * trainable / max(total, 1),
        list(patterns),
    )
    return trainable, total


def disable_dropout(model) -> int:
    """Switch every dropout off: ``nn.Dropout`` modules, attention-probability dropout (the
    ``attention_dropout`` attribute Llama/Mistral-style attention passes to SDPA) and the config's
    ``*dropout*`` rates, so the policy at step 0 scores a pair exactly as the reference did (h = 0).

    TRL's DPOTrainer, torchtune and the reference DPO code do the same. Returns how many settings changed.
    """
    import torch

    changed = 0
    for module in model.modules():
        if isinstance(module, torch.nn.Dropout) and module.p != 0:
            module.p, changed = 0.0, changed + 1
        rate = getattr(module, "attention_dropout", None)
        if isinstance(rate, float) and rate != 0:
            module.attention_dropout, changed = 0.0, changed + 1
    config = getattr(model, "config", None)
    for key, value in (config.to_dict() if config is not None else {}).items():
        if "dropout" in key and isinstance(value, float) and value != 0:
            setattr(config, key, 0.0)
            changed += 1
    return changed


def upcast_trainable(model) -> int:
    """Keep the trainable parameters of a half-precision model in float32 (their master weights); the frozen
    ones stay in bf16/fp16 and autocast runs the matmuls in half precision. Returns how many were cast.

    An AdamW step moves a weight by about ``lr``; bf16 keeps 8 bits of mantissa, so at lr 5e-7 (the paper's)
    almost every update to a weight of magnitude ~1e-2 rounds to nothing without this.
    """
    import torch

    n = 0
    for p in model.parameters():
        if p.requires_grad and p.dtype in (torch.bfloat16, torch.float16):
            p.data = p.data.float()
            n += 1
    if n:
        logger.info("kept %d trainable parameter tensors in float32 (frozen ones stay in half precision)", n)
    return n
