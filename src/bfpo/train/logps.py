"""Summed response log-probs from one forward pass, without the full (batch, seq, vocab) logits.

``add_response_logps_forward(model)`` patches the model's ``forward`` (as TRL's fused LM head does) so that
``model(input_ids, attention_mask, response_mask=mask)`` runs the backbone, projects ONLY the hidden states
of response positions through the LM head, in tiles of ``chunk_size`` tokens (a custom autograd function
keeps only each token's log-normaliser; backward recomputes a tile's logits and turns them in place into
the logits gradient), and returns the per-sequence SUM of token log-probs (Eq. 5 uses sequence log-probs,
not length-normalised ones).

Patching ``forward`` rather than calling sub-modules keeps DDP, FSDP and DeepSpeed wrappers in the loop.
Without ``response_mask`` the forward is the original one, so generation and saving are unchanged.

Padding-free batches (``PairCollator(padding_free=True)``): the 2B sequences are concatenated into one row
of real tokens with ``position_ids`` restarting at 0 for each sequence, ``seq_ids`` naming the sequence of
every token and ``cu_seqlens`` its boundaries. Transformers builds the block-diagonal causal mask from the
packed ``position_ids`` for any attention implementation; for ``sdpa``, :func:`enable_packed_sdpa` adds a
faster path: one causal SDPA call over the sequences laid out padded (no T x T mask; only attention sees
padding), chosen only when the private ``bfpo_cu_seqlens`` keyword reaches the attention function.
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


class _TiledTokenLogps(torch.autograd.Function):
    """log softmax(hidden @ W^T)[target] per token, in tiles of ``chunk`` tokens, saving only the
    log-normaliser: the backward recomputes each tile's logits and turns them in place into
    ``onehot(target) - softmax`` (times the incoming gradient), so no tile outlives its loop iteration.
    The projection runs in the autocast dtype (bf16 matmul), the softmax statistics in float32."""

    @staticmethod
    def forward(ctx, hidden, weight, targets, chunk, scale, softcap):
        dev = hidden.device.type
        cdt = torch.get_autocast_dtype(dev) if torch.is_autocast_enabled(dev) else hidden.dtype
        with torch.autocast(dev, enabled=False):
            w = weight.to(cdt)
            out = torch.empty(hidden.shape[0], dtype=torch.float32, device=hidden.device)
            lse = torch.empty_like(out)
            for s in range(0, hidden.shape[0], chunk):
                z = _transform(hidden[s : s + chunk].to(cdt) @ w.t(), scale, softcap)
                lse[s : s + chunk] = torch.logsumexp(z, dim=-1)
                out[s : s + chunk] = z.gather(-1, targets[s : s + chunk, None]).squeeze(-1) - lse[s : s + chunk]
        ctx.save_for_backward(hidden, weight, targets, lse)
        ctx.conf = (chunk, scale, softcap, cdt)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        hidden, weight, targets, lse = ctx.saved_tensors
        chunk, scale, softcap, cdt = ctx.conf
        need_h, need_w = ctx.needs_input_grad[0], ctx.needs_input_grad[1]
        grad_h = torch.empty_like(hidden) if need_h else None
        grad_w = torch.zeros(weight.shape, dtype=torch.float32, device=weight.device) if need_w else None
        g = grad_out.float()
        with torch.autocast(hidden.device.type, enabled=False):
            w = weight.to(cdt)
            for s in range(0, hidden.shape[0], chunk):
                h = hidden[s : s + chunk].to(cdt)
                z = _transform(h @ w.t(), scale, softcap)
                gc = g[s : s + chunk, None]
                if softcap:  # d(c*tanh(t/c))/dt = 1 - (z/c)^2, computed before z is overwritten
                    dcap = 1.0 - (z / softcap) ** 2
                p = z.sub_(lse[s : s + chunk, None]).exp_().mul_(-gc)  # -g * softmax
                p.scatter_add_(-1, targets[s : s + chunk, None], gc)  # + g * onehot(target)
                if softcap:
                    p.mul_(dcap)
                if scale != 1.0:
                    p.mul_(scale)
                p = p.to(cdt)
                if need_h:
                    grad_h[s : s + chunk] = (p @ w).to(hidden.dtype)
                if need_w:
                    grad_w += (p.t() @ h).float()
        return grad_h, (grad_w.to(weight.dtype) if need_w else None), None, None, None, None


def _transform(raw: torch.Tensor, scale: float, softcap: Optional[float]) -> torch.Tensor:
    z = raw.float()
    if scale != 1.0:
        z.mul_(scale)
    if softcap:
        z = torch.tanh(z / softcap) * softcap
    return z


def _token_logps(
    hidden: torch.Tensor,
    targets: torch.Tensor,
    lm_head: torch.nn.Module,
    scale: float,
    softcap: Optional[float],
    chunk_size: int = DEFAULT_CHUNK_SIZE,
) -> torch.Tensor:
    """Token log-probs through ``lm_head`` (a bias-free linear layer with a plain weight:
    :class:`_TiledTokenLogps`; any other head, or a weight that a wrapper gathers in the module's forward
    (DeepSpeed ZeRO-3 partitions, FSDP2 DTensors): its own forward per tile, with activation checkpointing)."""
    weight = getattr(lm_head, "weight", None)
    if (
        isinstance(lm_head, torch.nn.Linear)
        and lm_head.bias is None
        and type(weight) is torch.nn.Parameter
        and not hasattr(weight, "ds_id")
    ):
        return _TiledTokenLogps.apply(hidden, weight, targets, chunk_size, scale, softcap)
    pieces = []
    for start in range(0, hidden.shape[0], chunk_size):
        hc, tc = hidden[start : start + chunk_size], targets[start : start + chunk_size]
        if torch.is_grad_enabled() and hc.requires_grad:
            pieces.append(checkpoint(_module_token_logps, hc, tc, lm_head, scale, softcap, use_reentrant=False))
        else:
            pieces.append(_module_token_logps(hc, tc, lm_head, scale, softcap))
    return torch.cat(pieces) if pieces else hidden.new_zeros(0, dtype=torch.float32)


def _module_token_logps(hidden, targets, lm_head, scale, softcap):
    logits = lm_head(hidden).float()
    if scale != 1.0:
        logits = logits * scale
    if softcap:
        logits = torch.tanh(logits / softcap) * softcap
    return logits.gather(-1, targets.unsqueeze(-1)).squeeze(-1) - torch.logsumexp(logits, dim=-1)


def response_logps_from_hidden(
    hidden: torch.Tensor,
    input_ids: torch.Tensor,
    response_mask: torch.Tensor,
    lm_head: torch.nn.Module,
    chunk_size: int = DEFAULT_CHUNK_SIZE,
    scale: float = 1.0,
    softcap: Optional[float] = None,
    seq_ids: Optional[torch.Tensor] = None,
    num_seqs: Optional[int] = None,
) -> ResponseLogpsOutput:
    """Per-sequence summed log p(token_t | tokens_<t) over positions t where ``response_mask`` is 1.

    Rows are sequences, unless ``seq_ids`` (same shape as ``input_ids``) gives the sequence index of every
    token of a packed row; then there are ``num_seqs`` sequences (the response mask must be 0 on the first
    token of each sequence, so no target is predicted across a boundary).
    """
    mask = response_mask[:, 1:].bool()
    if seq_ids is None:
        rows = mask.nonzero(as_tuple=True)[0]
        num_seqs = input_ids.shape[0]
    else:
        rows = seq_ids[:, 1:][mask].long()
        if num_seqs is None:
            num_seqs = int(seq_ids.max()) + 1 if seq_ids.numel() else 0
    h = hidden[:, :-1][mask]
    targets = input_ids[:, 1:][mask]
    token_logps = _token_logps(h, targets, lm_head, scale, softcap, chunk_size)
    logps = torch.zeros(num_seqs, dtype=torch.float32, device=hidden.device)
    logps = logps.index_add(0, rows, token_logps)
    if token_logps.numel() == 0:  # keep the graph connected for an empty batch
        logps = logps + 0.0 * hidden.sum()
    num_tokens = mask.sum(-1) if seq_ids is None else torch.bincount(rows, minlength=num_seqs)
    return ResponseLogpsOutput(logps=logps, num_tokens=num_tokens)


PACKED_KWARG = "bfpo_cu_seqlens"
_PACKED_STATE = {"original": None}


@dataclass(frozen=True)
class PackedLayout:
    """Where each token of a packed row sits in a right-padded ``[num_seqs, max_len]`` layout."""

    bounds: tuple
    index: torch.Tensor  # [T]: flat position (seq * max_len + offset) of every packed token
    max_len: int

    @classmethod
    def from_bounds(cls, bounds, device) -> "PackedLayout":
        lens = [e - s for s, e in zip(bounds[:-1], bounds[1:])]
        width = max(lens) if lens else 0
        index = (
            torch.cat([torch.arange(n, device=device) + i * width for i, n in enumerate(lens)])
            if lens
            else torch.zeros(0, dtype=torch.long, device=device)
        )
        return cls(tuple(bounds), index, width)


def _packed_sdpa(module, query, key, value, attention_mask, *args, **kwargs):
    """``sdpa`` attention that, given ``bfpo_cu_seqlens`` (a :class:`PackedLayout` of the packed row),
    attends causally within each sequence; without it, the original ``sdpa`` function unchanged.

    Only attention sees a padded layout: q/k/v are scattered into ``[num_seqs, heads, max_len, dim]``, one
    causal SDPA call runs (right padding never precedes a real token, so a real query only sees real
    keys), and the real positions are gathered back. Every linear layer stays padding-free."""
    original = _PACKED_STATE["original"]
    layout = kwargs.pop(PACKED_KWARG, None)
    if layout is None or query.shape[0] != 1 or query.shape[2] != key.shape[2]:
        return original(module, query, key, value, attention_mask, *args, **kwargs)
    kwargs.pop("is_causal", None)
    n, width, idx = len(layout.bounds) - 1, layout.max_len, layout.index

    def to_padded(x):  # [1, H, T, D] -> [n, H, width, D]
        h, d = x.shape[1], x.shape[3]
        flat = x.new_zeros(n * width, h, d).index_copy(0, idx, x[0].transpose(0, 1))
        return flat.view(n, width, h, d).transpose(1, 2)

    out = original(module, to_padded(query), to_padded(key), to_padded(value), None, *args, is_causal=True, **kwargs)[
        0
    ]  # [n, width, H, D]
    return out.reshape(n * width, *out.shape[2:]).index_select(0, idx).unsqueeze(0), None


def hidden_device(model) -> torch.device:
    return model.get_input_embeddings().weight.device


def enable_packed_sdpa() -> None:
    """Route ``sdpa`` attention through :func:`_packed_sdpa` (process-wide, idempotent). Calls that do not
    carry ``bfpo_cu_seqlens`` behave exactly as before."""
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS, AttentionInterface

    if _PACKED_STATE["original"] is not None:
        return
    _PACKED_STATE["original"] = ALL_ATTENTION_FUNCTIONS["sdpa"]
    AttentionInterface.register("sdpa", _packed_sdpa)


def add_response_logps_forward(model, chunk_size: int = DEFAULT_CHUNK_SIZE) -> None:
    """Patch ``model.forward`` to accept ``response_mask=`` (see the module docstring). Idempotent."""
    if getattr(model, "_bfpo_logps_patched", False):
        return
    original_forward = model.forward
    scale, softcap = _logit_transform(model.config)

    enable_packed_sdpa()

    @functools.wraps(type(model).forward)
    def forward(self, *args, response_mask=None, seq_ids=None, cu_seqlens=None, **kwargs):
        if response_mask is None:
            return original_forward(*args, **kwargs)
        kwargs["use_cache"] = False
        kwargs.pop("labels", None)
        backbone = self.base_model
        if backbone is self:
            raise TypeError(
                f"{type(self).__name__} exposes no backbone (base_model_prefix); cannot score "
                "responses without full logits"
            )
        num_seqs = None
        if cu_seqlens is not None:  # padding-free: one packed row, sequences delimited by cu_seqlens
            if "position_ids" not in kwargs or seq_ids is None:
                raise ValueError("a packed batch (cu_seqlens) needs position_ids and seq_ids")
            bounds = [int(x) for x in cu_seqlens.tolist()]
            kwargs[PACKED_KWARG] = PackedLayout.from_bounds(bounds, hidden_device(self))
            kwargs["attention_mask"] = None
            num_seqs = len(bounds) - 1
        hidden = backbone(*args, **kwargs).last_hidden_state
        input_ids = kwargs["input_ids"] if "input_ids" in kwargs else args[0]
        return response_logps_from_hidden(
            hidden,
            input_ids,
            response_mask,
            self.get_output_embeddings(),
            chunk_size,
            scale,
            softcap,
            seq_ids=seq_ids,
            num_seqs=num_seqs,
        )

    model.forward = types.MethodType(forward, model)
    model._bfpo_logps_patched = True
