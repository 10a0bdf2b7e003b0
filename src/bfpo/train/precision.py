"""Frozen linear weights kept in the autocast dtype (issue 15, "frozen weights kept in bf16").

Under bf16 autocast with float32 weights, every linear layer casts its weight to bf16 on every call, frozen
or not; in the paper recipe (only ``down_proj`` trainable) 80% of the weights are frozen, so most of those
casts redo the same work each step. :func:`cast_frozen_linear_weights` casts each frozen ``nn.Linear`` weight
once, in place, so autocast finds it already in bf16 and skips the copy.

It changes no number: autocast's cast rounds float32 to bf16 exactly as ``Tensor.to`` does, so forward and
backward are bit-identical (tested). Only weights that round-trip exactly (``w.to(bf16).float() == w``, as
weights loaded from a bf16 checkpoint do) are cast, so :func:`restore_frozen_linear_weights` gives back the
original float32 tensors bit for bit, and a saved model is unchanged. Embeddings (and weights tied to them),
norms, biases and trainable weights are left alone: they are not autocast matmul operands.

:class:`FrozenLinearWeightsCallback` applies this for the duration of ``Trainer.train()`` (after the optimizer
holds the trainable parameters; restored at the end of training, before the model is saved).
"""

from __future__ import annotations

from typing import Dict, List

import torch
from transformers import TrainerCallback


def frozen_linear_weights(model: torch.nn.Module) -> Dict[str, torch.nn.Parameter]:
    """Frozen float32 weights of ``nn.Linear`` modules, not tied to the input embeddings, by module name."""
    tied = set()
    emb = model.get_input_embeddings() if hasattr(model, "get_input_embeddings") else None
    if emb is not None:
        tied.add(id(emb.weight))
    out: Dict[str, torch.nn.Parameter] = {}
    for name, mod in model.named_modules():
        if isinstance(mod, torch.nn.Linear):
            w = mod.weight
            if type(w) is torch.nn.Parameter and not w.requires_grad and w.dtype == torch.float32 and id(w) not in tied:
                out[name] = w
    return out


def cast_frozen_linear_weights(model: torch.nn.Module, dtype: torch.dtype = torch.bfloat16) -> List[str]:
    """Cast, in place, every frozen linear weight that ``dtype`` represents exactly; return their names."""
    done = []
    seen = set()
    for name, w in frozen_linear_weights(model).items():
        if id(w) in seen:
            continue
        seen.add(id(w))
        low = w.data.to(dtype)
        if torch.equal(low.float(), w.data):
            w.data = low
            done.append(name)
    return done


def restore_frozen_linear_weights(model: torch.nn.Module, names: List[str]) -> None:
    """Undo :func:`cast_frozen_linear_weights` (exact: only exactly representable weights were cast)."""
    modules = dict(model.named_modules())
    for name in names:
        w = modules[name].weight
        w.data = w.data.float()


class FrozenLinearWeightsCallback(TrainerCallback):
    """Keep frozen linear weights in the autocast dtype while ``train()`` runs (bf16 runs only)."""

    def __init__(self, dtype: torch.dtype = torch.bfloat16):
        self.dtype = dtype
        self.cast: List[str] = []
        self._model = None

    def on_train_begin(self, args, state, control, model=None, **kwargs):
        if model is None or not getattr(args, "bf16", False) or self.dtype != torch.bfloat16:
            return
        base = model.get_base_model() if hasattr(model, "get_base_model") else model
        self._model = base
        self.cast = cast_frozen_linear_weights(base, self.dtype)

    def on_train_end(self, args, state, control, **kwargs):
        if self._model is not None:
            restore_frozen_linear_weights(self._model, self.cast)
            self.cast, self._model = [], None
