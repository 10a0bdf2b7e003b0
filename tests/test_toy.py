import json
import argparse

import pytest

from bfpo import toy
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
