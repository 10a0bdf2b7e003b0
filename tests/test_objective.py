import math

import pytest
import torch

from bfpo.objective import (
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


def test_eq14_is_eq9_with_alpha_constants():
    for alpha in (-0.5, 0.0, 0.5, 1.3):
        rule = 0 < alpha < 1
        for hw in (0.0, 0.3, 1.0):
            for hl in (0.0, 0.7, 1.0):
                expected = 1.5 * hw - 0.5 * hl - alpha
                assert float(shifted_label(hw, hl, alpha, sign_rule=rule)) == pytest.approx(expected)
                assert float(labeling_function(hw, hl, *alpha_constants(alpha), sign_rule=rule)) == pytest.approx(
                    expected
                )


@pytest.mark.parametrize("alpha", [-0.5, 0.0, 1.0, 1.3])
def test_sign_rule_violation_is_an_error_that_lists_the_labels(alpha):
    """Section 3.1: cases 1-2 > 0 and cases 3-4 < 0, i.e. 0 < alpha < 1 for Eq. 14. The printed -0.5 of
    section 4.2 gives +2/+1.5/+0.5/0 and must be refused with the four labels in the message."""
    with pytest.raises(ValueError, match="sign rule") as e:
        shifted_label(1.0, 0.0, alpha)
    labels = case_label_values(*alpha_constants(alpha))
    for v in labels.values():
        assert f"{v:+g}" in str(e.value)
    with pytest.raises(ValueError, match="sign rule"):
        bfpo_loss(torch.zeros(1), torch.zeros(1), torch.zeros(1), torch.zeros(1), 1.0, 0.0, alpha=alpha)


def test_sign_rule_opt_out_warns():
    from bfpo.objective import LabelRuleWarning

    with pytest.warns(LabelRuleWarning, match="sign rule.*ablation"):
        out = shifted_label(torch.tensor([0.0]), torch.tensor([0.0]), alpha=0.0, sign_rule=False)
    assert float(out) == 0.0  # Table 4's alpha = 0: case 3 collapses to 0


@pytest.mark.parametrize("alpha,ok", [(0.01, True), (0.5, True), (0.99, True), (0.0, False), (1.0, False)])
def test_sign_rule_boundary_for_eq14(alpha, ok):
    from bfpo.objective import sign_rule_violations

    assert (sign_rule_violations(*alpha_constants(alpha)) == []) is ok


def test_eq33_violation_warns_but_runs():
    """Theorem 3.2 needs B3 (B1 - 1) = 1 (Eq. 33). B1 = 5, B3 = 0.5 keeps the order and the signs
    (+2, +1.5, -0.5, -1 with B2 = -1) but breaks Eq. 33: a warning, not an error."""
    import warnings

    from bfpo.objective import LabelRuleWarning

    with pytest.warns(LabelRuleWarning, match="Eq. 33"):
        v = labeling_function(torch.tensor([1.0, 0.0]), torch.tensor([1.0, 0.0]), b1=5.0, b2=-1.0, b3=0.5)
    assert v.tolist() == pytest.approx([1.5, -0.5])
    with warnings.catch_warnings():
        warnings.simplefilter("error", LabelRuleWarning)
        labeling_function(1.0, 0.0, b1=3.0, b2=-1.0, b3=0.5)


def test_figure3_values_and_ordering():
    vals = case_label_values(*alpha_constants(0.5))
    assert vals == pytest.approx({"safe_unsafe": 1.0, "safe_safe": 0.5, "unsafe_unsafe": -0.5, "unsafe_safe": -1.0})
    # Eq. 12 (alpha = 0): case 3 collapses to zero, as the paper says alpha is there to avoid
    vals0 = case_label_values(*alpha_constants(0.0))
    assert vals0["unsafe_unsafe"] == pytest.approx(0.0)
    for b1, b2, b3 in [(3, -1, 0.5), (1.5, 0.2, 2.0), (10, -3, 0.1)]:
        v = list(case_label_values(b1, b2, b3).values())
        assert v == sorted(v, reverse=True) and len(set(v)) == 4


@pytest.mark.parametrize("b1,b3,word", [(1.0, 0.5, "B1"), (0.5, 0.5, "B1"), (3.0, 0.0, "B3"), (3.0, -1.0, "B3")])
def test_invalid_constants_raise(b1, b3, word):
    with pytest.raises(ValueError, match=word):
        labeling_function(1.0, 0.0, b1=b1, b2=0.0, b3=b3, sign_rule=False)


@pytest.mark.parametrize("hw,hl,name", [(1.2, 0.0, "safe_hw"), (1.0, -0.1, "safe_hl"), (float("nan"), 1.0, "safe_hw")])
def test_labels_outside_unit_interval_raise(hw, hl, name):
    with pytest.raises(ValueError, match=name):
        shifted_label(torch.tensor([1.0, hw]), torch.tensor([0.0, hl]))


def test_soft_labels_are_linear():
    a = shifted_label(torch.tensor([0.25]), torch.tensor([0.5]), 0.5)
    assert float(a) == pytest.approx(1.5 * 0.25 - 0.5 * 0.5 - 0.5)


def test_global_reward_eq11():
    # g = (p_safe + E_s)(p_help + 1/2)
    assert float(global_reward(1.0, 0.5, a1=0.25)) == pytest.approx(1.25 * 1.0)
    assert float(global_reward(torch.tensor(0.0), torch.tensor(1.0), a1=0.5, a2=0.5)) == pytest.approx(0.75)


def _lp(*xs):
    return torch.tensor(xs, dtype=torch.float32)


def test_loss_values_hand_computed():
    pc, pr, rc, rr = _lp(-10.0, -5.0), _lp(-12.0, -4.0), _lp(-11.0, -5.0), _lp(-11.0, -5.0)
    # h = (pc - rc) - (pr - rr) = (1 - (-1), 0 - 1) = (2, -1)
    tau = 0.5
    out = bfpo_loss(pc, pr, rc, rr, torch.tensor([1.0, 0.0]), torch.tensor([0.0, 1.0]), tau=tau, alpha=0.5)
    # g_I = (1.0, -1.0); targets g/tau = (2, -2); losses (0, 1)
    assert out.losses.tolist() == pytest.approx([0.0, 1.0])
    assert out.targets.tolist() == pytest.approx([2.0, -2.0])
    assert out.chosen_rewards.tolist() == pytest.approx([0.5, 0.0])
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5, 0.5])
    assert out.margins.tolist() == pytest.approx([1.0, -0.5])
    d = dpo_loss(pc, pr, rc, rr, tau=tau)
    assert d.losses.tolist() == pytest.approx([math.log1p(math.exp(-1.0)), math.log1p(math.exp(0.5))])
    i = ipo_loss(pc, pr, rc, rr, tau=tau)
    assert i.losses.tolist() == pytest.approx([(2 - 1) ** 2, (-1 - 1) ** 2])


@pytest.mark.parametrize(
    "case,hw,hl,sign",
    [("safe_unsafe", 1, 0, 1), ("safe_safe", 1, 1, 1), ("unsafe_unsafe", 0, 0, -1), ("unsafe_safe", 0, 1, -1)],
)
def test_gradient_direction_per_figure3_case(case, hw, hl, sign):
    """At h = 0 (policy = reference), BFPO pushes the more helpful response up for cases 1-2 and down
    for cases 3-4 (alpha = 0.5)."""
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    ref = torch.tensor([-5.0])
    bfpo_loss(
        pc, pr, ref, ref, torch.tensor([float(hw)]), torch.tensor([float(hl)]), tau=0.1, alpha=0.5
    ).losses.sum().backward()
    # gradient descent moves log pi(y_hw) by -grad
    assert sign * (-pc.grad.item()) > 0
    assert sign * (pr.grad.item()) > 0


def test_bfloat16_inputs_computed_in_float32():
    pc = torch.tensor([-100.5, -3.0], dtype=torch.bfloat16)
    pr = torch.tensor([-101.0, -3.5], dtype=torch.bfloat16)
    ref = torch.tensor([-100.0, -3.0], dtype=torch.bfloat16)
    for name in ("bfpo", "dpo", "ipo"):
        out = preference_loss(name, pc, pr, ref, ref, 1.0, 0.0, tau=0.1)
        assert out.losses.dtype == torch.float32
        ref32 = preference_loss(name, pc.float(), pr.float(), ref.float(), ref.float(), 1.0, 0.0, tau=0.1)
        assert torch.allclose(out.losses, ref32.losses)


def test_unknown_loss_and_bad_tau():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="unknown loss 'kto'"):
        preference_loss("kto", x, x, x, x)
    with pytest.raises(ValueError, match="tau"):
        bfpo_loss(x, x, x, x, 1.0, 1.0, tau=0.0)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16():
    x = torch.randn(4, device="cuda", dtype=torch.bfloat16)
    out = bfpo_loss(x, x - 1, x, x, torch.ones(4, device="cuda"), torch.zeros(4, device="cuda"))
    assert out.losses.device.type == "cuda" and out.losses.dtype == torch.float32


def _toy_optimum(alpha: float, tau: float = 1.0):
    """Closed-form optimum of Eq. 15 on section 3.4's toy: y1..y4 in helpfulness order, y1 and y3 safe,
    every ordered pair once, uniform reference (least squares of theta_i - theta_j = g_I / tau)."""
    safe = torch.tensor([1.0, 0.0, 1.0, 0.0], dtype=torch.float64)
    pairs = [(i, j) for i in range(4) for j in range(i + 1, 4)]  # i is the more helpful one
    design = torch.zeros(len(pairs), 4, dtype=torch.float64)
    for k, (i, j) in enumerate(pairs):
        design[k, i], design[k, j] = 1.0, -1.0
    hw, hl = safe[[i for i, _ in pairs]], safe[[j for _, j in pairs]]
    target = shifted_label(hw, hl, alpha, sign_rule=False).double() / tau
    theta = torch.linalg.lstsq(design, target[:, None]).solution[:, 0]
    return torch.softmax(theta, 0)


@pytest.mark.filterwarnings("ignore::bfpo.objective.LabelRuleWarning")
def test_printed_alpha_puts_harmful_helpful_above_harmful_unhelpful():
    """Why the recipes read section 4.2's "-0.5" as +0.5: on the toy, alpha = 0.5 recovers the global order
    y1 > y3 > y4 > y2 (unsafe & helpful last), while a literal -0.5 ranks y2 above y4."""
    p = _toy_optimum(0.5)
    assert p[0] > p[2] > p[3] > p[1]
    q = _toy_optimum(-0.5)
    assert q[0] > q[2] > q[1] > q[3]


def test_safe_response_nll_imitates_the_globally_first_safe_response():
    from bfpo.objective import safe_response_nll

    # cases 1, 2, 3, 4 (chosen = more helpful): sums of log-probs and response lengths
    chosen, rejected = torch.tensor([-4.0, -6.0, -8.0, -10.0]), torch.tensor([-3.0, -9.0, -2.0, -12.0])
    n_chosen, n_rejected = torch.tensor([2, 3, 4, 5]), torch.tensor([3, 3, 1, 4])
    safe_chosen, safe_rejected = torch.tensor([1.0, 1.0, 0.0, 0.0]), torch.tensor([0.0, 1.0, 0.0, 1.0])
    nll = safe_response_nll(chosen, rejected, n_chosen, n_rejected, safe_chosen, safe_rejected)
    # case 1 and 2: the chosen per token; case 3: nothing (both unsafe); case 4: the rejected (the safe refusal)
    assert torch.allclose(nll, torch.tensor([2.0, 2.0, 0.0, 3.0]))
    soft = safe_response_nll(chosen[:1], rejected[:1], n_chosen[:1], n_rejected[:1], 0.25, 1.0)
    assert torch.allclose(soft, torch.tensor([0.25 * 2.0 + 0.75 * 1.0]))


def test_safe_nll_weight_is_checked():
    from bfpo.train.config import BFPOConfig

    with pytest.raises(ValueError, match="safe_nll_weight must be >= 0"):
        BFPOConfig(output_dir="/tmp/unused", safe_nll_weight=-1.0)
