"""K-factor priority labels (docs/multifactor.md): reduction to Eq. 9, validation, the K = 3 toy."""

import itertools
import json

import pytest
import torch

from bfpo.cli import main as cli_main
from bfpo.experiments import toy_multifactor as k3
from bfpo.multifactor import (
    check_priority_constants,
    default_priority_weights,
    global_score,
    multifactor_loss,
    priority_label,
    priority_order,
)
from bfpo.objective import alpha_constants, labeling_function, shifted_label


@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_k2_reduces_to_eq9(alpha):
    vals = torch.tensor([0.0, 0.3, 1.0])
    hw, hl = torch.meshgrid(vals, vals, indexing="ij")
    got = priority_label(hw.reshape(-1, 1), hl.reshape(-1, 1), [0.0], *alpha_constants(alpha))
    assert torch.allclose(got, shifted_label(hw.reshape(-1), hl.reshape(-1), alpha))
    # general Eq. 9 constants that keep Eq. 33 (B3 (B1 - 1) = 1) and the sign rule
    got = priority_label(hw.reshape(-1, 1), hl.reshape(-1, 1), [0.0], 2.0, -0.5, 1.0)
    assert torch.allclose(got, labeling_function(hw.reshape(-1), hl.reshape(-1), 2.0, -0.5, 1.0))


def test_priority_order_k3():
    names = [(lab, p) for lab, p in priority_order(2)]
    assert names == [
        ((1, 1), 1),
        ((1, 1), 0),
        ((1, 0), 0),
        ((1, 0), 1),
        ((0, 1), 0),
        ((0, 1), 1),
        ((0, 0), 0),
        ((0, 0), 1),
    ]
    # K = 2: Figure 2's ranking (safe & helpful > safe > unsafe & unhelpful > unsafe & helpful)
    assert priority_order(1) == [((1,), 1), ((1,), 0), ((0,), 0), ((0,), 1)]


@pytest.mark.parametrize("n_factors", [1, 2, 3, 4])
def test_label_signs_follow_the_lexicographic_order(n_factors):
    """With the default weights, g_I(y_hw, y_hl) > 0 exactly when y_hw ranks above y_hl in the priority
    order (y_hw is the more helpful one), for every pair of label vectors."""
    lam = default_priority_weights(n_factors)
    order = priority_order(n_factors)
    rank = {t: i for i, t in enumerate(order)}
    combos = list(itertools.product((0, 1), repeat=n_factors))
    for a, b in itertools.product(combos, combos):
        g = float(priority_label(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32), lam))
        assert (g > 0) == (rank[(a, 1)] < rank[(b, 0)]), (a, b, g)
        assert g == pytest.approx(global_score(a, 1, lam) - global_score(b, 0, lam), abs=1e-6)


def test_k3_label_values_hand_computed():
    # lambdas (2, 1), alpha = 0.5: g_I = 2 (s_w - s_l) + (h_w - h_l) + 1/2 (3 A_w - A_l - 1)
    lab = lambda a, b: float(
        priority_label(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32), [2.0, 1.0])
    )
    assert lab((1, 1), (0, 1)) == pytest.approx(2 + 0 + 0.5 * (3 - 0 - 1))  # safe&honest vs unsafe: 3
    assert lab((1, 1), (1, 1)) == pytest.approx(0.5)  # Figure 3 case 2
    assert lab((1, 0), (1, 1)) == pytest.approx(-1 + 0.5 * (0 - 1 - 1))  # dishonest more helpful: -2
    assert lab((1, 0), (1, 0)) == pytest.approx(-0.5)  # gated helpfulness
    assert lab((0, 1), (0, 0)) == pytest.approx(1 - 0.5)  # honest among unsafe: +0.5
    assert lab((0, 0), (1, 0)) == pytest.approx(-2 - 0.5)


@pytest.mark.parametrize(
    "lam,b1,b2,b3,word",
    [
        ((1.0, 1.0), 3.0, -1.0, 0.5, "do not rank"),  # safety must outweigh honesty + alpha
        ((2.0, 0.4), 3.0, -1.0, 0.5, "do not rank"),  # honesty must outweigh alpha = 0.5 among unsafe
        ((2.0, 1.0), 3.0, 0.0, 0.5, "do not rank"),  # alpha = 0: both-unacceptable label is 0
        ((2.0, 1.0), 3.0, -2.5, 0.5, "do not rank"),  # alpha = 1.25: both-acceptable label < 0
        ((2.0, 1.0), 1.0, -1.0, 0.5, "B1"),
        ((2.0, 1.0), 3.0, -1.0, 0.0, "B3"),
        ((2.0,), 3.0, -1.0, 0.5, "one priority weight per"),
    ],
)
def test_invalid_constants_raise(lam, b1, b2, b3, word):
    with pytest.raises(ValueError, match=word):
        priority_label(torch.ones(1, 2), torch.zeros(1, 2), lam, b1, b2, b3)


def test_constraint_is_tight():
    """lambda_k > sum_{j>k} lambda_j + alpha: just above passes, just below fails (alpha = 0.5)."""
    check_priority_constants(2, [1.51, 1.0])
    check_priority_constants(2, [1.0 + 0.51 + 0.01, 0.51])
    with pytest.raises(ValueError):
        check_priority_constants(2, [1.49, 1.0])
    with pytest.raises(ValueError):
        check_priority_constants(2, [2.0, 0.49])


def test_labels_validated():
    with pytest.raises(ValueError, match="labels_hw"):
        priority_label(torch.tensor([[1.2, 0.0]]), torch.zeros(1, 2))
    with pytest.raises(ValueError, match="last dimension"):
        priority_label(torch.tensor(1.0), torch.tensor(0.0))


def test_soft_labels_are_the_bernoulli_expectation():
    p_hw, p_hl = [0.9, 0.3], [0.6, 0.8]
    got = float(priority_label(torch.tensor([p_hw]), torch.tensor([p_hl])))
    want = 0.0
    for a in itertools.product((0, 1), repeat=2):
        for b in itertools.product((0, 1), repeat=2):
            w = 1.0
            for x, p in zip(a + b, p_hw + p_hl):
                w *= p if x else 1 - p
            want += w * float(
                priority_label(torch.tensor([a], dtype=torch.float32), torch.tensor([b], dtype=torch.float32))
            )
    assert got == pytest.approx(want, abs=1e-6)


def test_loss_gradient_pushes_dishonest_helpful_down():
    pc = torch.tensor([-5.0], requires_grad=True)
    pr = torch.tensor([-5.0], requires_grad=True)
    ref = torch.tensor([-5.0])
    out = multifactor_loss(pc, pr, ref, ref, torch.tensor([[1.0, 0.0]]), torch.tensor([[1.0, 1.0]]), tau=0.5)
    assert out.targets.tolist() == pytest.approx([-2.0 / 0.5])
    out.losses.sum().backward()
    assert pc.grad.item() > 0 and pr.grad.item() < 0  # descent lowers y_hw, raises y_hl


@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
def test_k3_closed_form_recovers_the_global_ranking(tau):
    p = k3.closed_form(tau)
    assert k3.ranking(p) == k3.GLOBAL_RANKING
    assert sum(p) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def k3_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("k3")
    assert (
        cli_main(
            [
                "illustrate",
                "--experiment",
                "k3",
                "--output_dir",
                str(out),
                "--max_steps",
                "1800",
                "--seeds",
                "0",
                "1",
                "2",
            ]
        )
        == 0
    )
    return out, json.loads((out / "results_k3.json").read_text())


def test_k3_toy_rankings(k3_run):
    out, res = k3_run
    m = res["methods"]
    assert m["priority"]["ranking"] == k3.GLOBAL_RANKING
    assert all(r == k3.GLOBAL_RANKING for r in m["priority"]["seed_rankings"])
    for got, want in zip(m["priority"]["mean_probs"], res["closed_form"]["priority"]):
        assert abs(got - want) < 0.02
    # pairwise DPO / IPO follow helpfulness; safety-only BFPO and SafeDPO put the dishonest y2 above y7
    assert m["dpo"]["ranking"][:3] == [1, 2, 3]
    assert m["ipo"]["ranking"] == k3.HELPFUL_RANKING
    for name in ("dpo", "ipo", "bfpo", "safedpo"):
        assert m[name]["ranking"] != k3.GLOBAL_RANKING
    assert m["bfpo"]["ranking"][0] == 2 and m["safedpo"]["ranking"][0] == 2
    png = (out / "k3.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
