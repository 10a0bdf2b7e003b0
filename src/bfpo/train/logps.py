"""Summed response log-probs from one forward pass, without the full (batch, seq, vocab) logits.

``add_response_logps_forward(model)`` patches the model's ``forward`` (as TRL's fused LM head does) so that
``model(input_ids, attention_mask, response_mask=mask)`` runs the backbone, projects ONLY the hidden states
of response positions through the LM head, in tiles of ``chunk_size`` tokens with activation checkpointing
(each tile's logits are recomputed in backward instead of stored), and returns the per-sequence SUM of
token log-probs (Eq. 5 uses sequence log-probs, not length-normalised ones).

Patching ``forward`` rather than calling sub-modules keeps DDP, FSDP and DeepSpeed wrappers in the loop.
Without ``response_mask`` the forward is the original one, so generation and saving are unchanged.
"""

from __future__ import annotations

import functools
import types
from dataclasses import dataclass
from typing import Optional

import torch
from torch.utils.checkpoint import checkpoint
from transformers.utils import ModelOutput

DEFAULT_CHUNK_SIZE = 1024


@dataclass
class ResponseLogpsOutput(ModelOutput):
    """``logps``: summed log-prob of each sequence's response tokens, float32 ``[batch]``;
    ``num_tokens``: response tokens per sequence."""

    logps: Optional[torch.Tensor] = None
    num_tokens: Optional[torch.Tensor] = None


def _logit_transform(config):
    text = config.get_text_config() if hasattr(config, "get_text_config") else config
    scale = getattr(text, "logit_scale", None) or 1.0
    softcap = getattr(text, "final_logit_softcapping", None)
    return float(scale), softcap


def _token_logps(hidden: torch.Tensor, targets: torch.Tensor, lm_head: torch.nn.Module, scale: float,
                 softcap: Optional[float]) -> torch.Tensor:
    logits = lm_head(hidden).float()
    if scale != 1.0:
        logits = logits * scale
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def response_logps_from_hidden(hidden: torch.Tensor, input_ids: torch.Tensor, response_mask: torch.Tensor,
                               lm_head: torch.nn.Module, chunk_size: int = DEFAULT_CHUNK_SIZE,
                               scale: float = 1.0, softcap: Optional[float] = None) -> ResponseLogpsOutput:
    """Per-sequence summed log p(token_t | tokens_<t) over positions t where ``response_mask`` is 1."""
    mask = response_mask[:, 1:].bool()
    rows = mask.nonzero(as_tuple=True)[0]
    h = hidden[:, :-1][mask]
    targets = input_ids[:, 1:][mask]
    pieces = []
    for start in range(0, h.shape[0], chunk_size):
        hc, tc = h[start:start + chunk_size], targets[start:start + chunk_size]
        if torch.is_grad_enabled() and hc.requires_grad:
            pieces.append(checkpoint(_token_logps, hc, tc, lm_head, scale, softcap, use_reentrant=False))
        else:
            pieces.append(_token_logps(hc, tc, lm_head, scale, softcap))
    token_logps = torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)
    logps = torch.zeros(input_ids.shape[0], dtype=torch.float32, device=hidden.device)
    logps = logps.index_add(0, rows, token_logps)
    if token_logps.numel() == 0:  # keep the graph connected for an empty batch
        logps = logps + 0.0 * hidden.sum()
    return ResponseLogpsOutput(logps=logps, num_tokens=mask.sum(-1))


def add_response_logps_forward(model, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Patch ``model.forward`` to accept ``response_mask=`` (see the module docstring). Idempotent."""
    if getattr(model, "_bfpo_logps_patched", False):
        return
    original_forward = model.forward
    scale, softcap = _logit_transform(model.config)

    @functools.wraps(type(model).forward)
    def forward(self, *args, response_mask=None, **kwargs):
        if response_mask is None:
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        backbone = self.base_model
        if backbone is self:
            raise TypeError(f"{type(self).__name__} exposes no backbone (base_model_prefix); cannot score "
                            "responses without full logits")
        hidden = backbone(*args, **kwargs).last_hidden_state
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        return response_logps_from_hidden(hidden, input_ids, response_mask, self.get_output_embeddings(),
                                          chunk_size, scale, softcap)

    model.forward = types.MethodType(forward, model)
    model._bfpo_logps_patched = True


def reference_logps_full_logits(model, input_ids: torch.Tensor, attention_mask: torch.Tensor,
                                response_mask: torch.Tensor) -> torch.Tensor:
    """The same quantity computed the plain way (full logits); used by tests to check the tiled path."""
    logits = model(input_ids=input_ids, attention_mask=attention_mask).logits[:, :-1].float()
    lp = torch.log_softmax(logits, -1).gather(-1, input_ids[:, 1:].unsqueeze(-1)).squeeze(-1)
    return (lp * response_mask[:, 1:]).sum(-1)
