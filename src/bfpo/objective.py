"""The BFPO objective: the paper's math as small pure functions on tensors.

Everything here follows "Bi-Factorial Preference Optimization" (Zhang et al., ICLR 2025):

* :func:`labeling_function` is the label function g_I of Eq. 9 (general constants B1, B2, B3);
  :func:`shifted_label` is its alpha-shifted form used in practice (Eq. 14), which is Eq. 9 with
  ``B1 = 3, B2 = -2 * alpha, B3 = 1/2`` (see :func:`alpha_constants`).
* :func:`global_reward` is the bilinear global reward g of Eq. 10 / Eq. 11.
* :func:`bfpo_loss` is Eq. 15, :func:`dpo_loss` is Eq. 4 and :func:`ipo_loss` is the IPO loss of
  Azar et al. All three take *summed* sequence log-probs of shape ``[batch]`` and return a
  :class:`LossOutput` with per-example losses and the implicit rewards ``tau * (log pi - log pi_ref)``.

No I/O and no model code lives here; losses are always computed in float32, whatever the input dtype
(bfloat16 log-probs are upcast), on whatever device the inputs live.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, Tuple, Union

import torch
import torch.nn.functional as F

Label = Union[torch.Tensor, float, int, bool]

#: The four pair cases of Figure 3, keyed by (I_safe(y_hw), I_safe(y_hl)), in the paper's order of
#: label value: (1) safe & more helpful vs unsafe, (2) both safe, (3) both unsafe, (4) unsafe & more
#: helpful vs safe.
CASES: Tuple[Tuple[str, Tuple[int, int]], ...] = (
    ("safe_unsafe", (1, 0)),
    ("safe_safe", (1, 1)),
    ("unsafe_unsafe", (0, 0)),
    ("unsafe_safe", (0, 1)),
)


@dataclass(frozen=True)
class LossOutput:
    """Per-example results of a preference loss.

    Attributes:
        losses: per-example loss, float32, shape ``[batch]``.
        chosen_rewards: implicit reward ``tau * (log pi(y_w) - log pi_ref(y_w))`` (detached).
        rejected_rewards: the same for ``y_l`` (detached).
        targets: the regression target of h for squared losses (``g_I / tau`` for BFPO,
            ``1 / (2 tau)`` for IPO), ``None`` for DPO.
    """

    losses: torch.Tensor
    chosen_rewards: torch.Tensor
    rejected_rewards: torch.Tensor
    targets: torch.Tensor | None = None

    @property
    def margins(self) -> torch.Tensor:
        """Reward margin ``chosen_rewards - rejected_rewards`` (= tau * h)."""
        return self.chosen_rewards - self.rejected_rewards


def alpha_constants(alpha: float) -> Tuple[float, float, float]:
    """Constants (B1, B2, B3) of Eq. 9 that give the alpha-shifted label of Eq. 14.

    ``3/2 I(y_hw) - 1/2 I(y_hl) - alpha = 1/2 * (3 I(y_hw) - I(y_hl) - 2 alpha)``.
    """
    return 3.0, -2.0 * float(alpha), 0.5


def check_constants(b1: float, b3: float) -> None:
    """Raise ``ValueError`` unless B1 > 1 and B3 > 0 (the ordering of Figure 3 needs both).

    Case (1) minus case (2) equals B3, and case (2) minus case (3) equals B3 * (B1 - 1), so the
    order (1) > (2) > (3) > (4) of Figure 3 holds exactly when B3 > 0 and B1 > 1.
    """
    if not b3 > 0:
        raise ValueError(
            f"B3 must be > 0, got B3={b3}: B3 is the gap between case (1) safe-vs-unsafe and case (2) "
            "safe-vs-safe of Figure 3, so B3 <= 0 breaks the label ordering"
        )
    if not b1 > 1:
        raise ValueError(
            f"B1 must be > 1, got B1={b1}: case (2) (both safe) minus case (3) (both unsafe) equals "
            "B3*(B1-1), so B1 <= 1 breaks the label ordering of Figure 3"
        )


def _as_label(x: Label, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x, device=None if like is None else like.device)
    t = t.to(torch.float32)
    if t.numel() and (bool(torch.any(t < 0)) or bool(torch.any(t > 1)) or bool(torch.any(torch.isnan(t)))):
        bad = t[(t < 0) | (t > 1) | torch.isnan(t)].flatten()[0].item()
        raise ValueError(f"{name} must be a safety label in [0, 1] (bool or soft float), got {bad}")
    return t


def labeling_function(safe_hw: Label, safe_hl: Label, b1: float = 3.0, b2: float = -1.0,
                      b3: float = 0.5) -> torch.Tensor:
    """Label function g_I of Eq. 9: ``B3 * (B1 * I_safe(y_hw) - I_safe(y_hl) + B2)``.

    Args:
        safe_hw: safety label of the MORE helpful response y_hw, bool or float in [0, 1] (soft
            labels are allowed: the equivalence of Theorem 3.2 is linear in I_safe).
        safe_hl: safety label of the less helpful response y_hl.
        b1: weight of y_hw's safety, must be > 1.
        b2: shift that keeps the label away from zero (``-2 * alpha`` in Eq. 14).
        b3: overall scale, must be > 0.

    Returns:
        float32 tensor broadcast from the two labels. Defaults give Eq. 14 with alpha = 0.5.
    """
    check_constants(b1, b3)
    hw = _as_label(safe_hw, "safe_hw (I_safe of the more helpful response)")
    hl = _as_label(safe_hl, "safe_hl (I_safe of the less helpful response)", like=hw)
    return b3 * (b1 * hw - hl + b2)


def shifted_label(safe_hw: Label, safe_hl: Label, alpha: float = 0.5) -> torch.Tensor:
    """The practical label of Eq. 14: ``3/2 I_safe(y_hw) - 1/2 I_safe(y_hl) - alpha``."""
    return labeling_function(safe_hw, safe_hl, *alpha_constants(alpha))


def case_label_values(b1: float = 3.0, b2: float = -1.0, b3: float = 0.5) -> Dict[str, float]:
    """The four label values of Figure 3 (right) for the given Eq. 9 constants.

    Keys follow :data:`CASES`: ``safe_unsafe`` (1), ``safe_safe`` (2), ``unsafe_unsafe`` (3),
    ``unsafe_safe`` (4); with valid constants the values are strictly decreasing in that order.
    """
    return {name: float(labeling_function(hw, hl, b1, b2, b3)) for name, (hw, hl) in CASES}


def global_reward(p_safe: torch.Tensor | float, p_help: torch.Tensor | float, a1: float,
                  a2: float = 0.5) -> torch.Tensor:
    """Global reward of Eq. 10: ``g(y) = (p*_safe(y) + A1) * (p*_help(y > pi) + A2)``.

    With ``A1 = E_s`` (mean ground-truth safety under pi) and ``A2 = 1/2`` this is Eq. 11, the reward
    that Theorem 3.2 shows BFPO optimises with the label of Eq. 12.
    """
    return (torch.as_tensor(p_safe, dtype=torch.float32) + a1) * (
        torch.as_tensor(p_help, dtype=torch.float32) + a2)


def log_ratio_difference(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                         ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor) -> torch.Tensor:
    """h of Eq. 5: ``log [pi(y_w) pi_ref(y_l) / (pi(y_l) pi_ref(y_w))]`` in float32."""
    f = torch.float32
    return (policy_chosen_logps.to(f) - ref_chosen_logps.to(f)) - (
        policy_rejected_logps.to(f) - ref_rejected_logps.to(f))


def _rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, tau: float) -> torch.Tensor:
    return (tau * (policy_logps.to(torch.float32) - ref_logps.to(torch.float32))).detach()


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau (the KL penalty coefficient) must be > 0, got {tau}")


def bfpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
              ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
              safe_chosen: Label, safe_rejected: Label, tau: float = 0.01,
              alpha: float | None = 0.5, b1: float = 3.0, b2: float = -1.0,
              b3: float = 0.5) -> LossOutput:
    """BFPO loss of Eq. 15: ``(h_pi(y_hw, y_hl) - g_I(y_hw, y_hl) / tau)^2`` per example.

    ``chosen`` is always the MORE HELPFUL response y_hw, whatever its safety; the safety labels decide
    through g_I whether h is pushed up or down. With ``alpha`` given (default) g_I is Eq. 14;
    with ``alpha=None`` the general Eq. 9 with ``b1, b2, b3`` is used.
    """
    _check_tau(tau)
    if alpha is not None:
        b1, b2, b3 = alpha_constants(alpha)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps)
    g = labeling_function(safe_chosen, safe_rejected, b1, b2, b3).to(h.device)
    target = torch.broadcast_to(g / tau, h.shape)
    return LossOutput((h - target) ** 2, _rewards(policy_chosen_logps, ref_chosen_logps, tau),
                      _rewards(policy_rejected_logps, ref_rejected_logps, tau), target)


def dpo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             tau: float = 0.1) -> LossOutput:
    """DPO loss of Eq. 4: ``-log sigmoid(tau * h)``, chosen = the win response y_w."""
    _check_tau(tau)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps)
    return LossOutput(-F.logsigmoid(tau * h), _rewards(policy_chosen_logps, ref_chosen_logps, tau),
                      _rewards(policy_rejected_logps, ref_rejected_logps, tau))


def ipo_loss(policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
             ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
             tau: float = 0.1) -> LossOutput:
    """IPO loss (Azar et al., 2024): ``(h - 1 / (2 tau))^2``, chosen = the win response y_w."""
    _check_tau(tau)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps,
                             ref_rejected_logps)
    target = torch.full_like(h, 1.0 / (2.0 * tau))
    return LossOutput((h - target) ** 2, _rewards(policy_chosen_logps, ref_chosen_logps, tau),
                      _rewards(policy_rejected_logps, ref_rejected_logps, tau), target)


LOSSES = ("bfpo", "dpo", "ipo")


def preference_loss(name: str, policy_chosen_logps: torch.Tensor, policy_rejected_logps: torch.Tensor,
                    ref_chosen_logps: torch.Tensor, ref_rejected_logps: torch.Tensor,
                    safe_chosen: Label = 1.0, safe_rejected: Label = 1.0, tau: float = 0.1,
                    alpha: float | None = 0.5, b1: float = 3.0, b2: float = -1.0,
                    b3: float = 0.5) -> LossOutput:
    """Dispatch to :func:`bfpo_loss`, :func:`dpo_loss` or :func:`ipo_loss` by name.

    The safety labels and label constants are used by ``bfpo`` only.
    """
    args = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if name == "bfpo":
        return bfpo_loss(*args, safe_chosen, safe_rejected, tau=tau, alpha=alpha, b1=b1, b2=b2, b3=b3)
    if name == "dpo":
        return dpo_loss(*args, tau=tau)
    if name == "ipo":
        return ipo_loss(*args, tau=tau)
    raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")
