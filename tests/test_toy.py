import json

import pytest
import torch

from bfpo.cli import main as cli_main
from bfpo.experiments import toy


def test_closed_form_ranking_and_values():
    p = toy.closed_form_bfpo(tau=1.0, alpha=0.5)
    assert toy.ranking(p) == [1, 3, 4, 2]
    assert sum(p) == pytest.approx(1.0)


@pytest.fixture(scope="module")
def illustrate_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("illustrate")
    assert (
        cli_main(["illustrate", "--output_dir", str(out), "--max_steps", "1800", "--seeds", "0", "1", "2", "3", "4"])
        == 0
    )
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
    assert (
        cli_main(
            ["illustrate", "--output_dir", str(tmp_path), "--max_steps", "300", "--seeds", "0", "1", "--taus", "1", "2"]
        )
        == 0
    )
    res = json.loads((tmp_path / "results.json").read_text())
    assert set(res["tau"]) == {"1.0", "2.0"}
    assert res["methods"] == res["tau"]["1.0"]["methods"]
    # BFPO targets scale with 1/tau: larger tau -> flatter optimum
    p1, p2 = res["tau"]["1.0"]["closed_form"]["bfpo"], res["tau"]["2.0"]["closed_form"]["bfpo"]
    assert max(p2) < max(p1)


@pytest.mark.parametrize(
    "argv,message",
    [
        (["--max_steps", "0"], "--max_steps"),
        (["--max_steps", "-1"], "max_steps must be >= 1"),
        (["--seeds", "1", "1"], "seeds must be distinct"),
        (["--safedpo_delta", "-1"], "safedpo_delta"),
        (["--methods", "priority"], "--experiment k3"),
        (["--experiment", "k3", "--taus", "1", "2"], "one tau"),
        (["--experiment", "k3", "--lambdas", "2"], "2 weights"),
    ],
)
def test_bad_arguments_rejected(tmp_path, capsys, argv, message):
    assert cli_main(["illustrate", "--output_dir", str(tmp_path / "x"), *argv]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_unknown_choice_is_refused_by_the_parser(tmp_path, capsys):
    try:
        code = cli_main(["illustrate", "--output_dir", str(tmp_path / "x"), "--methods", "dpo", "kto"])
    except SystemExit as e:  # argparse's own exit
        code = e.code
    assert code == 2 and "invalid choice: 'kto'" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_seeds_are_the_seeds_not_a_count():
    """Seed s samples with its own generator seeded s: seeds [3] reproduces the fourth of seeds [0, 1, 2, 3]."""
    cfg = toy.ToyConfig(max_steps=50, seeds=[0, 1, 2, 3], methods=["bfpo"])
    both = toy.train_method("bfpo", 1.0, cfg)
    alone = toy.train_method("bfpo", 1.0, toy.ToyConfig(max_steps=50, seeds=[3], methods=["bfpo"]))
    assert torch.allclose(both[:, 3], alone[:, 0], atol=1e-6)
    assert not torch.allclose(both[:, 0], alone[:, 0], atol=1e-3)
