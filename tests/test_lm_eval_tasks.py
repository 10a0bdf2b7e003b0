"""Discriminative benchmark: metric extraction, Disc. Avg. (Table 6) and an offline lm-eval run."""

from pathlib import Path

import pytest

from bfpo.eval.lm_eval_tasks import DISC_TASKS, aggregate_disc, extract_results, metric_for, run_discriminative

FIXTURE = Path(__file__).parent / "fixtures" / "lm_eval_task"

# Table 6, Zephyr column, in DISC_TASKS order (percent); the paper's Disc. Avg. is 59.05.
ZEPHYR = [62.02, 39.00, 72.38, 68.37, 69.71, 56.98, 73.59, 91.30, 51.00, 33.00, 45.21, 46.00]


def test_aggregate_reproduces_table6_disc_avg():
    values = {t: v / 100 for t, v in zip(DISC_TASKS, ZEPHYR)}
    assert aggregate_disc(values) == pytest.approx(59.05, abs=0.005)
    assert aggregate_disc(values, crows="inverted") == pytest.approx(57.04, abs=0.005)


def test_aggregate_validates():
    assert aggregate_disc({"winogrande": 0.5, "toxigen": 1.0}) == pytest.approx(75.0)
    assert aggregate_disc({"crows_pairs_english": 0.6}, crows="inverted") == pytest.approx(40.0)
    with pytest.raises(ValueError, match="toxigen"):
        aggregate_disc({"toxigen": 55.1})
    with pytest.raises(ValueError, match="at least one"):
        aggregate_disc({})
    with pytest.raises(ValueError, match="crows"):
        aggregate_disc({"toxigen": 0.5}, crows="flipped")


def test_extract_results_picks_the_paper_metrics():
    raw = {
        "crows_pairs_english": {
            "likelihood_diff,none": 3.2,
            "pct_stereotype,none": 0.62,
            "pct_stereotype_stderr,none": 0.01,
        },
        "toxigen": {"acc,none": 0.45, "acc_norm,none": 0.43, "acc_stderr,none": 0.02},
    }
    out = extract_results(raw, ["crows_pairs_english", "toxigen"])
    assert out["tasks"] == {
        "crows_pairs_english": {"metric": "pct_stereotype", "value": 0.62},
        "toxigen": {"metric": "acc", "value": 0.45},
    }
    assert out["disc_avg"] == pytest.approx(53.5)
    assert metric_for("winogrande") == "acc"
    with pytest.raises(KeyError, match="'toxigen' has no 'acc'"):
        extract_results({"toxigen": {"acc_norm,none": 0.4}}, ["toxigen"])
    with pytest.raises(KeyError, match="no result for task 'winogrande'"):
        extract_results(raw, ["winogrande"])


def test_offline_local_task_on_tiny_model(tmp_path, monkeypatch):
    pytest.importorskip("lm_eval")
    from lm_eval.tasks import TaskManager

    from bfpo.testing import save_tiny_model

    manager = TaskManager(include_path=str(FIXTURE))
    missing = [t for t in DISC_TASKS + ["bfpo_tiny_ethics"] if t not in manager.all_tasks]
    assert not missing, f"not in lm-eval's registry: {missing}"

    model_dir = save_tiny_model(tmp_path / "tiny")
    monkeypatch.chdir(FIXTURE)  # the task's data_files path is relative to this folder
    out = run_discriminative(
        model_dir, tasks=["bfpo_tiny_ethics"], include_path=FIXTURE, batch_size=2, task_manager=manager
    )
    assert set(out["tasks"]) == {"bfpo_tiny_ethics"}
    result = out["tasks"]["bfpo_tiny_ethics"]
    assert result["metric"] == "acc" and 0.0 <= result["value"] <= 1.0
    # 6 rows: accuracy is a multiple of 1/6
    assert result["value"] * 6 == pytest.approx(round(result["value"] * 6))
    assert out["disc_avg"] == pytest.approx(100 * result["value"])

    with pytest.raises(ValueError, match="does not know task"):
        run_discriminative(model_dir, tasks=["no_such_task_xyz"], task_manager=manager)
    with pytest.raises(FileNotFoundError, match="no config.json"):
        run_discriminative(tmp_path, tasks=["bfpo_tiny_ethics"])


def test_hub_unreachable_error_says_what_to_do(tmp_path, monkeypatch):
    lm_eval = pytest.importorskip("lm_eval")
    (tmp_path / "config.json").write_text("{}")

    def offline(**kwargs):
        raise ConnectionError("Couldn't reach 'allenai/winogrande' on the Hub (OfflineModeIsEnabled)")

    class Registry:
        all_tasks = ["winogrande"]

    monkeypatch.setattr(lm_eval, "simple_evaluate", offline)
    with pytest.raises(ConnectionError, match="winogrande.*run once with the hub reachable"):
        run_discriminative(tmp_path, tasks=["winogrande"], task_manager=Registry())
