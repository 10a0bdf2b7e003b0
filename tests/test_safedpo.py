"""SafeDPO (Kim et al., arXiv 2505.20065, Eq. 11-12) on BFPO's pairs: values, transformation, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from bfpo.objective import dpo_loss, safedpo_loss, safedpo_transform

# the four Figure-3 cases as (I_safe(y_hw), I_safe(y_hl))
HW = torch.tensor([1.0, 1.0, 0.0, 0.0])
HL = torch.tensor([0.0, 1.0, 0.0, 1.0])


def _softplus(x: float) -> float:
    return math.log1p(math.exp(x))


def test_transformation_T_per_case():
    keep, swap, margin = safedpo_transform(HW, HL)
    # (1) safe vs unsafe: kept, margin; (2) both safe: kept; (3) both unsafe: discarded; (4) swapped, margin
    assert keep.tolist() == [1.0, 1.0, 0.0, 1.0]
    assert swap.tolist() == [0.0, 0.0, 0.0, 1.0]
    assert margin.tolist() == [1.0, 0.0, 0.0, 1.0]
    with pytest.raises(ValueError, match="binary"):
        safedpo_transform(torch.tensor([0.5]), torch.tensor([1.0]))


def test_eq12_values_hand_computed():
    # h = 2 for every pair (chosen log-ratio +1, rejected -1), tau = 0.5 so tau*h = 1, Delta = 1
    pc, pr = torch.full((4,), -9.0), torch.full((4,), -11.0)
    ref = torch.full((4,), -10.0)
    out = safedpo_loss(pc, pr, ref, ref, HW, HL, tau=0.5, delta=1.0)
    want = [
        _softplus(-(1.0 - 1.0)),  # (1) -log sig(tau h - Delta) = log 2
        _softplus(-1.0),  # (2) -log sig(tau h)
        0.0,  # (3) discarded
        _softplus(-(-1.0 - 1.0)),
    ]  # (4) swapped: -log sig(-tau h - Delta) = log(1 + e^2)
    assert out.losses.tolist() == pytest.approx(want)
    assert want[0] == pytest.approx(math.log(2.0)) and want[3] == pytest.approx(math.log1p(math.e**2))
    # implicit rewards keep the input order (y_hw, y_hl)
    assert out.chosen_rewards.tolist() == pytest.approx([0.5] * 4)
    assert out.rejected_rewards.tolist() == pytest.approx([-0.5] * 4)
    assert out.targets is None


def test_equals_dpo_on_explicitly_transformed_pairs():
    """Eq. 12 written on T(D) (swap the log-probs, drop both-unsafe pairs) gives the same losses."""
    g = torch.Generator().manual_seed(0)
    pc, pr, rc, rr = (torch.randn(64, generator=g) * 3 - 20 for _ in range(4))
    hw = torch.randint(0, 2, (64,), generator=g).float()
    hl = torch.randint(0, 2, (64,), generator=g).float()
    tau, delta = 0.1, 2.5
    got = safedpo_loss(pc, pr, rc, rr, hw, hl, tau=tau, delta=delta).losses
    keep, swap, margin = safedpo_transform(hw, hl)
    s = swap.bool()
    w_pol, l_pol = torch.where(s, pr, pc), torch.where(s, pc, pr)
    w_ref, l_ref = torch.where(s, rr, rc), torch.where(s, rc, rr)
    h_t = (w_pol - w_ref) - (l_pol - l_ref)
    want = keep * -F.logsigmoid(tau * h_t - margin * delta)
    assert torch.allclose(got, want, atol=1e-6)
    # both safe and delta = 0: plain DPO (Eq. 4)
    ones = torch.ones(64)
    assert torch.allclose(
        safedpo_loss(pc, pr, rc, rr, ones, ones, tau=tau).losses, dpo_loss(pc, pr, rc, rr, tau=tau).losses
    )


def test_bso_logistic_restatement_is_eq12():
    """BSO (arXiv 2605.12339) as restated in a third-party implementation: log R = -(beta h + C (s_w - s_l)),
    s = 1 for UNSAFE, per-pair loss log(1 + R) for the logistic generator. On T(D) that is Eq. 12 with C = Delta."""
    g = torch.Generator().manual_seed(1)
    h = torch.randn(32, generator=g) * 5
    hw = torch.randint(0, 2, (32,), generator=g).float()
    hl = torch.randint(0, 2, (32,), generator=g).float()
    zeros = torch.zeros(32)
    tau, c = 0.2, 3.0
    keep, swap, _ = safedpo_transform(hw, hl)
    h_t = torch.where(swap.bool(), -h, h)
    s_w = torch.where(swap.bool(), 1 - hl, 1 - hw)  # unsafe indicator of the transformed winner
    s_l = torch.where(swap.bool(), 1 - hw, 1 - hl)
    log_r = -(tau * h_t + c * (s_w - s_l))
    bso = keep * torch.log1p(torch.exp(log_r))
    ours = safedpo_loss(h, zeros, zeros, zeros, hw, hl, tau=tau, delta=c).losses
    assert torch.allclose(ours, bso, atol=1e-5)


@pytest.mark.parametrize("hw,hl,direction", [(1, 0, 1), (1, 1, 1), (0, 0, 0), (0, 1, -1)])
def test_gradient_direction_per_case(hw, hl, direction):
    """At h = 0: SafeDPO raises y_hw in cases 1-2, lowers it in case 4, and ignores case 3 (both unsafe);
    BFPO (test_objective) lowers y_hw in case 3 as well."""
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    ref = torch.tensor([-5.0])
    safedpo_loss(
        pc, pr, ref, ref, torch.tensor([float(hw)]), torch.tensor([float(hl)]), tau=0.1, delta=1.0
    ).losses.sum().backward()
    if direction == 0:
        assert pc.grad.item() == 0.0 and pr.grad.item() == 0.0
    else:
        assert direction * (-pc.grad.item()) > 0 and direction * pr.grad.item() > 0


def test_margin_strengthens_the_safe_unsafe_push():
    """The gradient on a safe-vs-unsafe pair grows with Delta (sigma(Delta - tau h) at fixed h)."""
    grads = []
    for delta in (0.0, 1.0, 5.0):
        pc = torch.tensor([-5.0], requires_grad=True)
        ref = torch.tensor([-5.0])
        safedpo_loss(pc, ref, ref, ref, 1.0, 0.0, tau=0.1, delta=delta).losses.sum().backward()
        grads.append(-pc.grad.item())
    assert grads[0] < grads[1] < grads[2]
    assert grads[0] == pytest.approx(0.1 * 0.5)  # tau * sigmoid(0)


def test_soft_labels_are_the_bernoulli_expectation():
    pc, pr, ref = torch.tensor([-4.0]), torch.tensor([-6.0]), torch.tensor([-5.0])
    p_hw, p_hl = 0.7, 0.2
    got = float(safedpo_loss(pc, pr, ref, ref, p_hw, p_hl, tau=0.3, delta=1.5).losses)
    want = 0.0
    for hw, w_hw in ((1.0, p_hw), (0.0, 1 - p_hw)):
        for hl, w_hl in ((1.0, p_hl), (0.0, 1 - p_hl)):
            want += w_hw * w_hl * float(safedpo_loss(pc, pr, ref, ref, hw, hl, tau=0.3, delta=1.5).losses)
    assert got == pytest.approx(want)


def test_bad_arguments():
    x = torch.zeros(2)
    with pytest.raises(ValueError, match="delta"):
        safedpo_loss(x, x, x, x, 1.0, 0.0, delta=-1.0)
    with pytest.raises(ValueError, match="tau"):
        safedpo_loss(x, x, x, x, 1.0, 0.0, tau=0.0)
    with pytest.raises(ValueError, match="safe_chosen"):
        safedpo_loss(x, x, x, x, 1.5, 0.0)


def test_bfloat16_inputs_computed_in_float32():
    pc = torch.tensor([-100.5, -3.0], dtype=torch.bfloat16)
    pr = torch.tensor([-101.0, -3.5], dtype=torch.bfloat16)
    ref = torch.tensor([-100.0, -3.0], dtype=torch.bfloat16)
    out = safedpo_loss(pc, pr, ref, ref, torch.tensor([0.0, 1.0]), torch.tensor([1.0, 0.0]), delta=1.0)
    assert out.losses.dtype == torch.float32


def test_dispatch_by_name():
    from bfpo.objective import LOSSES, preference_loss

    assert "safedpo" in LOSSES
    g = torch.Generator().manual_seed(2)
    pc, pr, rc, rr = (torch.randn(8, generator=g) - 10 for _ in range(4))
    hw, hl = torch.tensor([1.0, 0.0] * 4), torch.tensor([0.0, 1.0, 1.0, 0.0] * 2)
    got = preference_loss("safedpo", pc, pr, rc, rr, hw, hl, tau=0.2, alpha=None, delta=3.0)
    assert torch.equal(got.losses, safedpo_loss(pc, pr, rc, rr, hw, hl, tau=0.2, delta=3.0).losses)
