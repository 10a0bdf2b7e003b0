import json

import pytest

from bfpo.experiments import toy
from bfpo.cli import main as cli_main


def test_closed_form_ranking_and_values():
    p = toy.closed_form_bfpo(tau=1.0, alpha=0.5)
    assert toy.ranking(p) == [1, 3, 4, 2]
    assert sum(p) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def illustrate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("illustrate")
    cli_main(["illustrate", "--out", str(out), "--steps", "1800", "--seeds", "5"])
    return out, json.loads((out / "results.json").read_text())


def test_illustrate_reproduces_figure4(illustrate_run):
    out, res = illustrate_run
    m = res["methods"]
    assert m["bfpo"]["ranking"] == [1, 3, 4, 2]
    # DPO and IPO follow helpfulness only
    assert m["dpo"]["ranking"] == [1, 2, 3, 4]
    assert m["ipo"]["ranking"] == [1, 2, 3, 4]
    for got, want in zip(m["bfpo"]["mean_probs"], res["closed_form"]["bfpo"]):
        assert abs(got - want) < 0.02
    # every seed of BFPO reaches the global ranking
    assert all(r == [1, 3, 4, 2] for r in m["bfpo"]["seed_rankings"])


def test_results_json_shape_and_files(illustrate_run):
    out, res = illustrate_run
    assert set(res) >= {"config", "methods", "closed_form"}
    for name in ("bfpo", "dpo", "ipo"):
        r = res["methods"][name]
        assert len(r["mean_probs"]) == 4 and len(r["std_probs"]) == 4
        assert sorted(r["ranking"]) == [1, 2, 3, 4]
        assert sum(r["mean_probs"]) == pytest.approx(1.0, abs=1e-5)
    assert len(res["closed_form"]["bfpo"]) == 4
    png = (out / "figure4.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 10_000


def test_several_tau_nest_under_tau(tmp_path):
    cli_main(["illustrate", "--out", str(tmp_path), "--steps", "300", "--seeds", "2", "--tau", "1", "2"])
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["tau"]) == {"1.0", "2.0"}
    assert res["methods"] == res["tau"]["1.0"]["methods"]
    # BFPO targets scale with 1/tau: larger tau -> flatter optimum
    p1, p2 = res["tau"]["1.0"]["closed_form"]["bfpo"], res["tau"]["2.0"]["closed_form"]["bfpo"]
    assert max(p2) < max(p1)


def test_bad_arguments_rejected(tmp_path):
    with pytest.raises(SystemExit, match="--steps"):
        cli_main(["illustrate", "--out", str(tmp_path), "--steps", "0"])


# ------------------------------------------------------------------ Theorem 3.2 and SafeDPO in the toy
@pytest.mark.parametrize("tau", [0.5, 1.0, 2.0])
@pytest.mark.parametrize("alpha", [0.25, 0.5, 0.75])
def test_theorem32_closed_forms_agree_in_the_toy(tau, alpha):
    """BFPO's least-squares optimum equals the MORL optimum pi_ref exp(g / tau) / Z with Eq. 10's g and
    Eq. 33's constants, also for a non-uniform reference."""
    b1, b2, b3 = toy.alpha_constants(alpha)
    for ref in (None, [0.1, 0.4, 0.2, 0.3]):
        check = toy.theorem32_check(tau, toy.SAFE, ref=ref, b1=b1, b2=b2, b3=b3)
        assert check["dependence"] == pytest.approx(0.0, abs=1e-12)
        assert check["max_abs"] < 1e-10
    assert toy.bfpo_optimum(tau, toy.SAFE, b1=b1, b2=b2, b3=b3) == pytest.approx(
        toy.closed_form_bfpo(tau, alpha), abs=1e-10)


def test_theorem32_values_alpha_half():
    # g = (I_safe - 1/2)(p_help + 1/2) with p_help = (7/8, 5/8, 3/8, 1/8): (0.6875, -0.5625, 0.4375, -0.3125)
    g = toy.global_reward_eq33(toy.SAFE, [0.25] * 4, *toy.alpha_constants(0.5))
    assert g.tolist() == pytest.approx([0.6875, -0.5625, 0.4375, -0.3125])
    assert toy.morl_optimum(1.0, toy.SAFE) == pytest.approx([0.4110, 0.1177, 0.3201, 0.1512], abs=1e-4)
    # Eq. 12 itself (alpha = 0): the theorem holds, but g ranks the unsafe y2 above y4
    check = toy.theorem32_check(1.0, toy.SAFE, b1=3.0, b2=0.0, b3=0.5)
    assert check["max_abs"] < 1e-10
    assert toy.ranking(check["morl"]) == [1, 3, 2, 4]


def test_theorem32_needs_eq33_and_independence():
    # Eq. 33 broken (B3 (B1 - 1) = 1/2): the optima differ
    broken = toy.theorem32_check(1.0, toy.SAFE, b1=2.0, b2=-0.5, b3=0.5)
    assert not broken["eq33_holds"] and broken["max_abs"] > 1e-2
    # safety correlated with helpfulness under mu: Appendix B.3's Eq. 29 -> 30 step does not hold
    dep = toy.theorem32_check(1.0, [1.0, 1.0, 1.0, 0.0, 0.0, 0.0])
    assert dep["dependence"] > 0.1 and dep["max_abs"] > 1e-2
    assert toy.ranking(dep["bfpo"])[:3] == toy.ranking(dep["morl"])[:3] == [1, 2, 3]


def test_illustrate_safedpo_and_theorem_block(illustrate_run):
    out, res = illustrate_run
    th = res["theorem_3_2"]
    assert th["closed_form_vs_morl_max_abs"] < 1e-10
    assert th["trained_bfpo_vs_morl_max_abs"] < 0.01
    s = res["methods"]["safedpo"]
    # SafeDPO puts y1 first and y3 second (every kept pair ranks them above the unsafe actions) ...
    assert s["ranking"][:2] == [1, 3]
    # ... and leaves less unsafe mass than BFPO's finite optimum
    unsafe = lambda p: p[1] + p[3]
    assert unsafe(s["mean_probs"]) < unsafe(res["methods"]["bfpo"]["mean_probs"])
