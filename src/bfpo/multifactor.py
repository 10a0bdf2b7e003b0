"""Priority-ordered labels for K factors: BFPO's label function (Eq. 9) beyond safety and helpfulness.

The paper leaves "more objectives (beyond just two)" to future work (section 6). This module generalises
Figure 3's ordering to K factors ordered by priority, for example safety > honesty > helpfulness: the
K - 1 higher factors come as binary (or soft) per-response labels ``I_k(y)``, highest priority first,
and the lowest factor, helpfulness, as the pair order (``y_hw`` is the more helpful response), exactly
as in BFPO. The derivation and its constraints are in ``docs/multifactor.md``; in short:

* Eq. 9 is the difference of a bilinear reward across the pair: with ``p = 1`` for y_hw and 0 for y_hl,
  ``g_I(y_hw, y_hl) = G(I(y_hw), 1) - G(I(y_hl), 0)`` for
  ``G(s, p) = B3 (s + B2 / (B1 - 1)) ((B1 - 1) p + 1)``.
* For K factors, ``s`` becomes the joint acceptability ``A(y) = prod_k I_k(y)`` (helpfulness is a virtue
  only for a response that passes every higher factor, Figure 2's principle), and each factor adds a
  priority term ``lambda_k I_k(y)``:
  ``G(I, p) = sum_k lambda_k I_k + B3 (A + B2 / (B1 - 1)) ((B1 - 1) p + 1)``, so
  ``g_I = sum_k lambda_k (I_k(y_hw) - I_k(y_hl)) + B3 (B1 A(y_hw) - A(y_hl) + B2)``   (K-factor label).
* For K = 2 and ``lambda = (0,)`` this is Eq. 9 exactly.
* :func:`check_priority_constants` enumerates every response type and checks that G ranks them in the
  priority order: lexicographic in the factors, then more helpful first only when every factor passes.
  It holds exactly when B1 > 1, B3 > 0, ``-(B1 - 1) < B2 < 0`` (Eq. 9's sign rule) and, for every factor
  k that has a higher factor above it or a lower factor below it,
  ``lambda_k > sum_{j > k} lambda_j - B3 B2``.

Soft labels in [0, 1] are accepted: the label is linear in each ``I_k`` and in A, so with independent
Bernoulli labels the expected label is the label at the means (``E[A] = prod_k E[I_k]``).
"""

from __future__ import annotations

import itertools
from typing import List, Optional, Sequence, Tuple

import torch

from bfpo.objective import Label, LossOutput, _check_tau, _rewards, check_constants, log_ratio_difference

Type = Tuple[Tuple[int, ...], int]  # (factor labels, highest priority first; helpfulness p)


def default_priority_weights(n_factors: int) -> List[float]:
    """Default lambdas for ``n_factors`` labelled factors (K - 1): ``(0,)`` for one factor (Eq. 9 itself),
    else powers of two ``(2^(K-2), ..., 2, 1)``, which satisfy the constraints for any Eq. 14 alpha in (0, 1)."""
    if n_factors < 1:
        raise ValueError(f"need at least one labelled factor above helpfulness, got {n_factors}")
    if n_factors == 1:
        return [0.0]
    return [float(2 ** (n_factors - 1 - k)) for k in range(n_factors)]


def priority_order(n_factors: int) -> List[Type]:
    """Every response type, best first: factor labels compared lexicographically (1 beats 0, highest
    priority first); within equal labels the more helpful (p = 1) first only if every factor passes."""
    types = []
    for labels in itertools.product((1, 0), repeat=n_factors):
        acceptable = all(labels)
        types += [(labels, 1), (labels, 0)] if acceptable else [(labels, 0), (labels, 1)]
    return types


def global_score(
    labels: Sequence[float], p: float, lambdas: Sequence[float], b1: float = 3.0, b2: float = -1.0, b3: float = 0.5
) -> float:
    """``G(I, p)`` of the module docstring: the pairwise global reward whose difference is the label."""
    acc = 1.0
    for x in labels:
        acc *= float(x)
    return sum(lam * float(x) for lam, x in zip(lambdas, labels)) + b3 * (acc + b2 / (b1 - 1.0)) * (
        (b1 - 1.0) * p + 1.0
    )


def check_priority_constants(
    n_factors: int, lambdas: Sequence[float], b1: float = 3.0, b2: float = -1.0, b3: float = 0.5
) -> None:
    """Raise ``ValueError`` unless the constants give the priority order (the K-factor Figure 3).

    B1 > 1 and B3 > 0 as for g_I (:func:`bfpo.objective.check_constants`); then every response type is
    scored with :func:`global_score` and the scores must strictly decrease along :func:`priority_order`.
    The message names the first two types out of order and the closed-form conditions.
    """
    if len(lambdas) != n_factors:
        raise ValueError(
            f"need one priority weight per labelled factor: {n_factors} factor(s), "
            f"got {len(lambdas)} weight(s) {list(lambdas)}"
        )
    check_constants(b1, b3)
    order = priority_order(n_factors)
    scores = [global_score(lab, p, lambdas, b1, b2, b3) for lab, p in order]
    for (t1, s1), (t2, s2) in zip(zip(order, scores), zip(order[1:], scores[1:])):
        if not s1 > s2:
            raise ValueError(
                f"priority weights {list(lambdas)} with B1={b1:g}, B2={b2:g}, B3={b3:g} do not rank "
                f"{_name(t1)} (score {s1:+.4g}) above {_name(t2)} (score {s2:+.4g}). The order holds when "
                "-(B1-1) < B2 < 0 (Eq. 9's sign rule) and lambda_k > sum_{j>k} lambda_j - B3*B2 for every "
                "factor k except, when K = 2, the only one"
            )


def _name(t: Type) -> str:
    labels, p = t
    return "(" + ",".join(str(x) for x in labels) + f"; {'more' if p else 'less'} helpful)"


def priority_label(
    labels_hw: Label,
    labels_hl: Label,
    lambdas: Optional[Sequence[float]] = None,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
) -> torch.Tensor:
    """The K-factor label ``sum_k lambda_k (I_k(y_hw) - I_k(y_hl)) + B3 (B1 A(y_hw) - A(y_hl) + B2)``.

    Args:
        labels_hw: labels of the MORE helpful response, shape ``[..., K - 1]``, highest priority first,
            each in [0, 1] (1 = passes the factor, e.g. safe, honest).
        labels_hl: the same for the less helpful response.
        lambdas: priority weights, one per labelled factor (default :func:`default_priority_weights`).
        b1, b2, b3: the constants of Eq. 9 applied to the joint acceptability A = prod_k I_k.

    Returns:
        float32 tensor of shape ``[...]``. For K = 2 with ``lambdas = (0,)`` it equals
        :func:`bfpo.objective.labeling_function` of the single factor.
    """
    hw = torch.as_tensor(labels_hw, dtype=torch.float32)
    hl = torch.as_tensor(labels_hl, dtype=torch.float32, device=hw.device)
    if hw.dim() == 0 or hl.dim() == 0:
        raise ValueError("labels_hw / labels_hl need a last dimension of size K - 1 (one label per factor)")
    if hw.shape[-1] != hl.shape[-1]:
        raise ValueError(f"labels_hw has {hw.shape[-1]} factor(s) and labels_hl {hl.shape[-1]}")
    for name, t in (("labels_hw", hw), ("labels_hl", hl)):
        bad = (t < 0) | (t > 1) | torch.isnan(t)
        if bool(bad.any()):
            raise ValueError(f"{name} must hold per-factor labels in [0, 1], got {t[bad].flatten()[0].item()}")
    n = hw.shape[-1]
    lam = default_priority_weights(n) if lambdas is None else [float(x) for x in lambdas]
    check_priority_constants(n, lam, b1, b2, b3)
    weights = torch.tensor(lam, dtype=torch.float32, device=hw.device)
    priority = ((hw - hl) * weights).sum(-1)
    return priority + b3 * (b1 * hw.prod(-1) - hl.prod(-1) + b2)


def multifactor_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    labels_chosen: Label,
    labels_rejected: Label,
    tau: float = 0.1,
    lambdas: Optional[Sequence[float]] = None,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
) -> LossOutput:
    """Eq. 15 with the K-factor label: ``(h(y_hw, y_hl) - g_I / tau)^2``; ``chosen`` is the more helpful
    response, ``labels_*`` have shape ``[batch, K - 1]``."""
    _check_tau(tau)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    g = priority_label(labels_chosen, labels_rejected, lambdas, b1, b2, b3).to(h.device)
    target = torch.broadcast_to(g / tau, h.shape)
    return LossOutput(
        (h - target) ** 2,
        _rewards(policy_chosen_logps, ref_chosen_logps, tau),
        _rewards(policy_rejected_logps, ref_rejected_logps, tau),
        target,
    )
