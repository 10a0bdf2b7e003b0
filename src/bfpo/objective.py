"""The BFPO objective: the paper's math as small pure functions on tensors.

Everything here follows "Bi-Factorial Preference Optimization" (Zhang et al., ICLR 2025):

* :func:`labeling_function` is the label function g_I of Eq. 9 (general constants B1, B2, B3);
  :func:`shifted_label` is its alpha-shifted form used in practice (Eq. 14), which is Eq. 9 with
  ``B1 = 3, B2 = -2 * alpha, B3 = 1/2`` (see :func:`alpha_constants`). Both enforce section 3.1's sign
  rule by default (cases 1-2 of Figure 3 above 0, cases 3-4 below 0: 0 < alpha < 1 for Eq. 14) and warn
  when Eq. 33, ``B3 (B1 - 1) = 1``, does not hold (:func:`check_label_rules`).
* :func:`global_reward` is the bilinear global reward g of Eq. 10 / Eq. 11.
* :func:`bfpo_loss` is Eq. 15, :func:`dpo_loss` is Eq. 4 and :func:`ipo_loss` is the IPO loss of
  Azar et al.; :func:`safedpo_loss` is SafeDPO (Kim et al., arXiv 2505.20065, Eq. 12), the baseline
  that uses the same data as BFPO (docs/baselines.md). All of them take *summed* sequence log-probs of
  shape ``[batch]`` and return a :class:`LossOutput` with per-example losses and the implicit rewards
  ``tau * (log pi - log pi_ref)``.

No I/O and no model code lives here; losses are always computed in float32, whatever the input dtype
(bfloat16 log-probs are upcast), on whatever device the inputs live.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Dict, List, Tuple, Union

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


def _case_values(b1: float, b2: float, b3: float) -> Dict[str, float]:
    """The four Figure-3 values ``B3 * (B1 * hw - hl + B2)`` in plain floats (no validation)."""
    return {name: b3 * (b1 * hw - hl + b2) for name, (hw, hl) in CASES}


def sign_rule_violations(b1: float, b2: float, b3: float) -> List[str]:
    """The Figure-3 cases whose label breaks the sign rule of section 3.1.

    Section 3.1 asks that the more helpful response's log-ratio be pushed UP when it is safe (cases 1
    and 2: label > 0) and DOWN when it is unsafe (cases 3 and 4: label < 0). For Eq. 14 (B1 = 3,
    B3 = 1/2, B2 = -2 alpha) the labels are (1.5 - alpha, 1 - alpha, -alpha, -0.5 - alpha), so the rule
    holds exactly for 0 < alpha < 1.
    """
    vals = _case_values(b1, b2, b3)
    bad = [name for name in ("safe_unsafe", "safe_safe") if not vals[name] > 0]
    bad += [name for name in ("unsafe_unsafe", "unsafe_safe") if not vals[name] < 0]
    return bad


def check_label_rules(b1: float, b2: float, b3: float, sign_rule: bool = True) -> None:
    """Validate Eq. 9's constants against the paper's rules before any label is computed.

    * B1 > 1 and B3 > 0 (:func:`check_constants`): the order (1) > (2) > (3) > (4) of Figure 3.
    * The sign rule of section 3.1 (:func:`sign_rule_violations`): cases 1-2 above 0, cases 3-4 below 0.
      A violation raises ``ValueError`` listing the four labels; with ``sign_rule=False`` (for ablations
      such as Table 4's alpha = 0, where case 3 is exactly 0) it is a :class:`LabelRuleWarning` instead.
    * Eq. 33, ``B3 (B1 - 1) = 1``, which the equivalence of Theorem 3.2 (Appendix B.4) needs. Labels that
      break it are only a rescaled objective, so this is a warning, not an error.
    """
    check_constants(b1, b3)
    bad = sign_rule_violations(b1, b2, b3)
    if bad:
        labels = ", ".join(
            f"({i}) {name} {v:+g}" for i, (name, v) in enumerate(_case_values(b1, b2, b3).items(), start=1)
        )
        msg = (
            f"label constants B1={b1:g}, B2={b2:g}, B3={b3:g} give the Figure-3 labels {labels}; "
            f"case(s) {', '.join(bad)} break the sign rule of section 3.1 (cases 1-2 must be > 0, "
            "cases 3-4 < 0; for Eq. 14 that is 0 < alpha < 1)"
        )
        if sign_rule:
            raise ValueError(msg + ". Set the sign-rule opt-out (enforce_label_signs: false) for an ablation.")
        _warn_once(msg + "; allowed because the sign rule is switched off (ablation)")
    if abs(b3 * (b1 - 1.0) - 1.0) > 1e-9:
        _warn_once(
            f"label constants B1={b1:g}, B3={b3:g} break Eq. 33 (B3*(B1-1) = 1, here "
            f"{b3 * (b1 - 1.0):g}): Theorem 3.2's equivalence with the global reward does not hold as "
            "stated (the labels are a rescaled version of it)"
        )


class LabelRuleWarning(UserWarning):
    """Label constants that break a rule of the paper but were allowed (an ablation, or Eq. 33)."""


def _warn_once(msg: str) -> None:
    # the warnings module shows a given message once per call site by default, so a per-step loss
    # call does not flood the log, while tests can still catch it with ``pytest.warns``
    warnings.warn(msg, LabelRuleWarning, stacklevel=3)


def _as_label(x: Label, name: str, like: torch.Tensor | None = None) -> torch.Tensor:
    t = torch.as_tensor(x, device=None if like is None else like.device)
    t = t.to(torch.float32)
    if t.numel() and (bool(torch.any(t < 0)) or bool(torch.any(t > 1)) or bool(torch.any(torch.isnan(t)))):
        bad = t[(t < 0) | (t > 1) | torch.isnan(t)].flatten()[0].item()
        raise ValueError(f"{name} must be a safety label in [0, 1] (bool or soft float), got {bad}")
    return t


def labeling_function(
    safe_hw: Label, safe_hl: Label, b1: float = 3.0, b2: float = -1.0, b3: float = 0.5, sign_rule: bool = True
) -> torch.Tensor:
    """Label function g_I of Eq. 9: ``B3 * (B1 * I_safe(y_hw) - I_safe(y_hl) + B2)``.

    Args:
        safe_hw: safety label of the MORE helpful response y_hw, bool or float in [0, 1] (soft
            labels are allowed: the equivalence of Theorem 3.2 is linear in I_safe).
        safe_hl: safety label of the less helpful response y_hl.
        b1: weight of y_hw's safety, must be > 1.
        b2: shift that keeps the label away from zero (``-2 * alpha`` in Eq. 14).
        b3: overall scale, must be > 0.
        sign_rule: enforce section 3.1's sign rule (cases 1-2 > 0, cases 3-4 < 0) by raising
            ``ValueError``; ``False`` only warns (ablations). Eq. 33, ``B3 (B1 - 1) = 1``, which
            Theorem 3.2 needs, is checked too and warns when broken (see :func:`check_label_rules`).

    Returns:
        float32 tensor broadcast from the two labels. Defaults give Eq. 14 with alpha = 0.5, i.e. the
        labels (+1, +0.5, -0.5, -1) of the official recipe.
    """
    check_label_rules(b1, b2, b3, sign_rule)
    hw = _as_label(safe_hw, "safe_hw (I_safe of the more helpful response)")
    hl = _as_label(safe_hl, "safe_hl (I_safe of the less helpful response)", like=hw)
    return b3 * (b1 * hw - hl + b2)


def shifted_label(safe_hw: Label, safe_hl: Label, alpha: float = 0.5, sign_rule: bool = True) -> torch.Tensor:
    """The practical label of Eq. 14: ``3/2 I_safe(y_hw) - 1/2 I_safe(y_hl) - alpha``.

    The sign rule of section 3.1 holds for 0 < alpha < 1; the paper's section 4.2 value, printed as
    "-0.5", is read as the official recipe's alpha = +0.5 (labels +1, +0.5, -0.5, -1; see the README).
    """
    return labeling_function(safe_hw, safe_hl, *alpha_constants(alpha), sign_rule=sign_rule)


def case_label_values(b1: float = 3.0, b2: float = -1.0, b3: float = 0.5) -> Dict[str, float]:
    """The four label values of Figure 3 (right) for the given Eq. 9 constants.

    Keys follow :data:`CASES`: ``safe_unsafe`` (1), ``safe_safe`` (2), ``unsafe_unsafe`` (3),
    ``unsafe_safe`` (4); with valid constants the values are strictly decreasing in that order.
    """
    check_constants(b1, b3)
    return _case_values(b1, b2, b3)


def global_reward(
    p_safe: torch.Tensor | float, p_help: torch.Tensor | float, a1: float, a2: float = 0.5
) -> torch.Tensor:
    """Global reward of Eq. 10: ``g(y) = (p*_safe(y) + A1) * (p*_help(y > pi) + A2)``.

    With ``A1 = E_s`` (mean ground-truth safety under pi) and ``A2 = 1/2`` this is Eq. 11, the reward
    that Theorem 3.2 shows BFPO optimises with the label of Eq. 12.
    """
    return (torch.as_tensor(p_safe, dtype=torch.float32) + a1) * (torch.as_tensor(p_help, dtype=torch.float32) + a2)


def log_ratio_difference(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
) -> torch.Tensor:
    """h of Eq. 5: ``log [pi(y_w) pi_ref(y_l) / (pi(y_l) pi_ref(y_w))]`` in float32."""
    f = torch.float32
    return (policy_chosen_logps.to(f) - ref_chosen_logps.to(f)) - (
        policy_rejected_logps.to(f) - ref_rejected_logps.to(f)
    )


def _rewards(policy_logps: torch.Tensor, ref_logps: torch.Tensor, tau: float) -> torch.Tensor:
    return (tau * (policy_logps.to(torch.float32) - ref_logps.to(torch.float32))).detach()


def _check_tau(tau: float) -> None:
    if not tau > 0:
        raise ValueError(f"tau (the KL penalty coefficient) must be > 0, got {tau}")


def bfpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    safe_chosen: Label,
    safe_rejected: Label,
    tau: float = 0.01,
    alpha: float | None = 0.5,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
    sign_rule: bool = True,
) -> LossOutput:
    """BFPO loss of Eq. 15: ``(h_pi(y_hw, y_hl) - g_I(y_hw, y_hl) / tau)^2`` per example.

    ``chosen`` is always the MORE HELPFUL response y_hw, whatever its safety; the safety labels decide
    through g_I whether h is pushed up or down. With ``alpha`` given (default) g_I is Eq. 14;
    with ``alpha=None`` the general Eq. 9 with ``b1, b2, b3`` is used. ``sign_rule`` is passed to
    :func:`labeling_function`.
    """
    _check_tau(tau)
    if alpha is not None:
        b1, b2, b3 = alpha_constants(alpha)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    g = labeling_function(safe_chosen, safe_rejected, b1, b2, b3, sign_rule=sign_rule).to(h.device)
    target = torch.broadcast_to(g / tau, h.shape)
    return LossOutput(
        (h - target) ** 2,
        _rewards(policy_chosen_logps, ref_chosen_logps, tau),
        _rewards(policy_rejected_logps, ref_rejected_logps, tau),
        target,
    )


def dpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    tau: float = 0.1,
) -> LossOutput:
    """DPO loss of Eq. 4: ``-log sigmoid(tau * h)``, chosen = the win response y_w."""
    _check_tau(tau)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    return LossOutput(
        -F.logsigmoid(tau * h),
        _rewards(policy_chosen_logps, ref_chosen_logps, tau),
        _rewards(policy_rejected_logps, ref_rejected_logps, tau),
    )


def ipo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    tau: float = 0.1,
) -> LossOutput:
    """IPO loss (Azar et al., 2024): ``(h - 1 / (2 tau))^2``, chosen = the win response y_w."""
    _check_tau(tau)
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    target = torch.full_like(h, 1.0 / (2.0 * tau))
    return LossOutput(
        (h - target) ** 2,
        _rewards(policy_chosen_logps, ref_chosen_logps, tau),
        _rewards(policy_rejected_logps, ref_rejected_logps, tau),
        target,
    )


def safe_response_nll(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    chosen_tokens: torch.Tensor,
    rejected_tokens: torch.Tensor,
    safe_chosen: Label,
    safe_rejected: Label,
) -> torch.Tensor:
    """Per-pair negative log-likelihood per token of the response the global ranking puts first, when it
    is safe: an optional regulariser beside Eq. 15, *not part of the paper's objective*.

    Section 3.1's global order is safe & helpful > safe & unhelpful > unsafe & unhelpful > unsafe &
    helpful. With ``chosen`` = the more helpful response (y_hw) the response to imitate is y_hw in cases 1
    and 2 (it is safe) and y_hl in case 4 (y_hw is unsafe, y_hl safe). In case 3 both are unsafe and nothing
    is imitated (0). Soft labels weight the two sides by ``I_safe(y_hw)`` and ``(1 - I_safe(y_hw)) *
    I_safe(y_hl)``.

    Why: a preference loss on log-ratio differences can meet a case-4 target by lowering the unsafe
    answer's likelihood alone, and a case-2 target by lowering a refusal that safety pairs need; the NLL
    term keeps the safe response itself likely (the same idea as the NLL term of RPO, Pang et al. 2024,
    ``rpo_alpha`` in TRL, there on the chosen response). Log-probs are sums over response tokens; the
    token counts turn them into means, so long and short responses weigh alike.
    """
    hw = _as_label(safe_chosen, "safe_chosen (I_safe of the more helpful response)", like=policy_chosen_logps)
    hl = _as_label(safe_rejected, "safe_rejected (I_safe of the less helpful response)", like=policy_chosen_logps)
    nll_chosen = -policy_chosen_logps / chosen_tokens.clamp(min=1).to(policy_chosen_logps.dtype)
    nll_rejected = -policy_rejected_logps / rejected_tokens.clamp(min=1).to(policy_rejected_logps.dtype)
    return hw * nll_chosen + (1.0 - hw) * hl * nll_rejected


LOSSES = ("bfpo", "dpo", "ipo", "safedpo")


def preference_loss(
    name: str,
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    safe_chosen: Label = 1.0,
    safe_rejected: Label = 1.0,
    tau: float = 0.1,
    alpha: float | None = 0.5,
    b1: float = 3.0,
    b2: float = -1.0,
    b3: float = 0.5,
    sign_rule: bool = True,
    delta: float = 0.0,
) -> LossOutput:
    """Dispatch to :func:`bfpo_loss`, :func:`dpo_loss`, :func:`ipo_loss` or :func:`safedpo_loss` by name.

    The safety labels are used by ``bfpo`` and ``safedpo`` (both take ``chosen`` = the more helpful
    response); the label constants by ``bfpo`` only; ``delta`` (SafeDPO's safety margin, Eq. 12) by
    ``safedpo`` only.
    """
    args = (policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    if name == "bfpo":
        return bfpo_loss(
            *args, safe_chosen, safe_rejected, tau=tau, alpha=alpha, b1=b1, b2=b2, b3=b3, sign_rule=sign_rule
        )
    if name == "dpo":
        return dpo_loss(*args, tau=tau)
    if name == "ipo":
        return ipo_loss(*args, tau=tau)
    if name == "safedpo":
        return safedpo_loss(*args, safe_chosen, safe_rejected, tau=tau, delta=delta)
    raise ValueError(f"unknown loss {name!r}: expected one of {', '.join(LOSSES)}")


# ------------------------------------------------------------------------------------------ SafeDPO
def safedpo_transform(safe_hw: Label, safe_hl: Label) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """SafeDPO's safety-aware transformation T of the pairs (Kim et al., arXiv 2505.20065, section 3.2).

    SafeDPO writes h = 1 for UNSAFE; here, as everywhere in bfpo, labels are I_safe (1 = safe), so
    ``h_w = 1 - safe_hw``. T keeps a pair whose more helpful response is safe, swaps a pair whose more
    helpful response is unsafe and whose other response is safe, and discards a pair of two unsafe
    responses.

    Args:
        safe_hw: binary I_safe of the more helpful response y_hw (the data's y_w).
        safe_hl: binary I_safe of the less helpful response y_hl.

    Returns:
        ``(keep, swap, margin)`` as float32 tensors broadcast from the labels: ``keep`` is 0 for discarded
        pairs, ``swap`` is 1 where T exchanges the responses, and ``margin`` is the factor
        ``h~_l - h~_w`` of Eq. 12 after the transformation (1 for a safe-vs-unsafe pair, 0 otherwise).
    """
    hw = _as_label(safe_hw, "safe_hw (I_safe of the more helpful response)")
    hl = _as_label(safe_hl, "safe_hl (I_safe of the less helpful response)", like=hw)
    if bool(torch.any((hw != 0) & (hw != 1))) or bool(torch.any((hl != 0) & (hl != 1))):
        raise ValueError(
            "safedpo_transform needs binary safety labels (0 or 1); for soft labels use "
            "safedpo_loss, which takes the expectation over Bernoulli labels"
        )
    hw, hl = torch.broadcast_tensors(hw, hl)
    keep = 1.0 - (1.0 - hw) * (1.0 - hl)
    swap = (1.0 - hw) * hl
    margin = (hw - hl).abs()
    return keep, swap, margin


def safedpo_loss(
    policy_chosen_logps: torch.Tensor,
    policy_rejected_logps: torch.Tensor,
    ref_chosen_logps: torch.Tensor,
    ref_rejected_logps: torch.Tensor,
    safe_chosen: Label,
    safe_rejected: Label,
    tau: float = 0.1,
    delta: float = 0.0,
) -> LossOutput:
    """SafeDPO, Eq. 12 of Kim et al. (arXiv 2505.20065), on BFPO's pairs (``chosen`` = more helpful).

    Eq. 12 is DPO on the transformed pairs T(D) with a safety margin:
    ``-log sigmoid(beta h(y~_w, y~_l) - (h~_l - h~_w) Delta)`` (beta is our tau; h~ = 1 for UNSAFE). On a
    pair (y_hw, y_hl) with safety labels this is, per Figure-3 case:

    * (1) y_hw safe, y_hl unsafe: ``-log sigmoid(tau h - Delta)``;
    * (2) both safe: ``-log sigmoid(tau h)`` (plain DPO);
    * (3) both unsafe: 0 (T discards the pair);
    * (4) y_hw unsafe, y_hl safe: ``-log sigmoid(-tau h - Delta)`` (T swaps the pair),

    with ``h`` the log-ratio difference of Eq. 5 in the (y_hw, y_hl) order. ``delta = 0`` is Eq. 11.
    SafeDPO is defined for binary labels; soft labels in [0, 1] give the expectation of the loss over
    independent Bernoulli labels with those means (for 0/1 labels exactly Eq. 12). Discarded pairs
    contribute a loss of 0, so a batch mean is Eq. 12 scaled by the kept fraction (same optimum).

    ``chosen_rewards`` / ``rejected_rewards`` keep the input order (y_hw, y_hl); ``targets`` is ``None``.
    """
    _check_tau(tau)
    if not delta >= 0:
        raise ValueError(f"delta (SafeDPO's safety margin) must be >= 0, got {delta}")
    h = log_ratio_difference(policy_chosen_logps, policy_rejected_logps, ref_chosen_logps, ref_rejected_logps)
    hw = _as_label(safe_chosen, "safe_chosen (I_safe of the more helpful response)", like=h)
    hl = _as_label(safe_rejected, "safe_rejected (I_safe of the less helpful response)", like=h)
    kept_safe_unsafe = hw * (1.0 - hl)  # case (1), margin applies
    both_safe = hw * hl  # case (2)
    swapped = (1.0 - hw) * hl  # case (4), swapped, margin applies
    losses = (
        both_safe * -F.logsigmoid(tau * h)
        + kept_safe_unsafe * -F.logsigmoid(tau * h - delta)
        + swapped * -F.logsigmoid(-tau * h - delta)
    )
    return LossOutput(
        losses,
        _rewards(policy_chosen_logps, ref_chosen_logps, tau),
        _rewards(policy_rejected_logps, ref_rejected_logps, tau),
    )
