"""The benchmarks measure what they say they measure, and their plumbing runs on CPU.

* ``train_step.py --quick``: the batch each trainer really sees (packed = no padding, TRL and the padded
  run pad to the longest sequence), the FLOP count against torch's own counter, the ratios it reports;
* ``scaling.py``: the least-squares fit it draws conclusions from, and the sweep's plan.

``gpu_check.sh`` and ``recipe_run.py`` are tested in ``tests/test_gpu_check.py``.
"""

import json
import math
import os
import statistics
import subprocess
import sys
from pathlib import Path

import pytest
import torch

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}


def _run(args, timeout, env=ENV):
    return subprocess.run(
        [sys.executable, *map(str, args)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout
    )


@pytest.mark.spawns
def test_quick_benchmark_measures_the_batches_each_trainer_sees(tmp_path):
    import train_step as ts

    out = tmp_path / "quick.json"
    proc = _run(
        [BENCH / "train_step.py", "--quick", "--warmup", "1", "--steps", "2", "--output_file", out], timeout=240
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    by = {c["name"]: c for c in res["configs"]}
    skipped = {c["name"] for c in ts.CONFIGS if ts.skip_reason(c)}
    assert set(by) == {c["name"] for c in ts.CONFIGS} - skipped
    # Liger's kernels are Triton kernels: without CUDA and liger-kernel those configs are skipped, with the reason
    assert set(res["skipped"]) == skipped
    if not torch.cuda.is_available():
        assert skipped == {"trl_ipo_full_liger", "trl_ipo_down_proj_liger"}
    pairs = ts.synthetic_pairs(ts.build_model("tiny").config.vocab_size)
    lens = [len(p["prompt_ids"]) + len(p[s]) for s in ("chosen_ids", "rejected_ids") for p in pairs]
    # the counts are those of the batches our collator really builds: packed (one row, no padding) and padded
    from bfpo.train.collator import PairCollator

    packed, padded = PairCollator(0, padding_free=True)(pairs), PairCollator(0)(pairs)
    for c in res["configs"]:
        assert c["tokens_per_step"] == sum(lens) == int(padded["attention_mask"].sum())
        assert c["response_tokens_per_step"] == int(padded["response_mask"].sum())
        if c["trainer"] == "bfpo":
            assert c["positions_per_step"] == (packed if c["padding_free"] else padded)["input_ids"].numel()
        # 1 warm-up step + 2 measured: the reported step time is the median of the measured ones only
        assert len(c["step_s_all"]) == 3 and all(t > 0 for t in c["step_s_all"])
        assert c["step_s"] == pytest.approx(statistics.median(c["step_s_all"][1:]))
        if c["padding_free"]:  # one packed row of real tokens
            assert c["positions_per_step"] == sum(lens) and c["padding_fraction"] == 0.0
        else:  # 16 rows padded to the longest sequence
            assert c["positions_per_step"] == 16 * max(lens) and c["padding_fraction"] > 0.1
        assert math.isfinite(c["peak_rss_mb"]) and c["peak_rss_mb"] > 50
        assert (c["peak_cuda_mb"] is not None) == torch.cuda.is_available()
    # the on-the-fly reference costs exactly one more forward than the precomputed one
    model = ts.build_model("tiny")
    fwd = sum(ts.forward_flops(model, pairs).values())
    assert by["bfpo_full_ref_model"]["model_flops_per_step"] == pytest.approx(
        by["bfpo_full_precomputed"]["model_flops_per_step"] + fwd
    )
    # with only down_proj trainable, fewer parameters and fewer FLOPs than the full fine-tune
    assert by["bfpo_down_proj_precomputed"]["trainable_params"] == by["trl_ipo_down_proj"]["trainable_params"]
    assert by["bfpo_down_proj_precomputed"]["trainable_params"] < by["bfpo_full_precomputed"]["trainable_params"]
    flops = {name: by[name]["model_flops_per_step"] for name in ("bfpo_down_proj_precomputed", "bfpo_full_precomputed")}
    assert flops["bfpo_down_proj_precomputed"] < flops["bfpo_full_precomputed"]
    # every ratio compares like with like: a TRL run training the same parameters of the same model
    ratios = res["ratios_vs_trl"]
    assert {"bfpo_down_proj_precomputed", "bfpo_full_precomputed", "bfpo_full_ref_model"} <= set(ratios)
    for name, r in ratios.items():
        ours, theirs = by[name.split("_vs_")[0]], by[r["vs"]]
        assert theirs["trainer"] == "trl", name
        if name.endswith("_vs_" + ts.TRL_USUAL):  # on purpose: the paper's recipe against TRL's usual full run
            assert ours["name"] == ts.PAPER_RECIPE and r["vs"] == ts.TRL_USUAL
        else:
            assert theirs["trainable_params"] == ours["trainable_params"], name
    assert ratios["bfpo_down_proj_precomputed"]["vs"] == "trl_ipo_down_proj"
    assert ratios["bfpo_full_precomputed"]["vs"] == "trl_ipo_full"
    assert res["machine"]["roofline_flops"]["bfloat16"] > 1e8 and "amx" in res["machine"]
    table = _run([BENCH / "train_step.py", "--table", out], timeout=120).stdout
    assert "| tiny | bfpo_down_proj_precomputed |" in table
    assert ("trl_ipo_full_liger: skipped" in table) == ("trl_ipo_full_liger" in skipped)


def test_forward_flop_count_matches_torch_flop_counter():
    """The linear-layer and LM-head FLOPs the benchmark divides by step time are what torch counts for a
    packed forward with our LM head (attention is counted separately: it runs on a padded layout)."""
    import train_step as ts
    from torch.utils.flop_counter import FlopCounterMode

    from bfpo.train.collator import PairCollator, model_inputs
    from bfpo.train.logps import add_response_logps_forward

    model = ts.build_model("tiny")
    add_response_logps_forward(model, chunk_size=64)
    pairs = ts.synthetic_pairs(model.config.vocab_size, n=2, min_len=20, max_len=40, min_prompt=4, max_prompt=12)
    batch = PairCollator(0, padding_free=True)(pairs)
    with torch.no_grad(), FlopCounterMode(display=False) as counter:
        model(**model_inputs(batch))
    counted = {str(op): n for op, n in counter.get_flop_counts()["Global"].items()}
    matmul = sum(n for op, n in counted.items() if "scaled_dot_product" not in op)
    expected = ts.forward_flops(model, pairs)
    assert matmul == expected["linear"] + expected["lm_head"]


def test_linear_fit():
    from scaling import fits, linear_fit

    f = linear_fit([1, 2, 3, 4], [12, 14, 16, 18])
    assert f["slope"] == pytest.approx(2) and f["intercept"] == pytest.approx(10) and f["r2"] == pytest.approx(1)
    noisy = linear_fit([1, 2, 3, 4], [1, 3, 2, 4])
    assert 0 < noisy["r2"] < 1 and noisy["slope"] == pytest.approx(0.8)
    with pytest.raises(ValueError):
        linear_fit([1, 1], [2, 3])
    pts = [
        dict(series="a", tokens_per_step=t, positions_per_step=2 * t, peak_rss_mb=100 + t / 1024)
        for t in (1000, 2000, 4000)
    ] + [dict(series="b", tokens_per_step=1000, positions_per_step=1000, peak_rss_mb=5)]
    out = fits(pts)
    assert set(out) == {"a"}  # one x value cannot be fitted
    assert out["a"]["tokens_per_step"]["kb_per_unit"] == pytest.approx(1.0)
    assert out["a"]["positions_per_step"]["kb_per_unit"] == pytest.approx(0.5)


def test_scaling_plan_covers_both_sweeps_for_both_trainers():
    import scaling

    pts = scaling.plan()
    for trainer in ("bfpo", "trl"):
        seq = [p for p in pts if p["series"] == trainer and p["sweep"] == "seq_len"]
        assert sorted(p["max_len"] for p in seq) == [256, 512, 1024, 2048]
        assert {p["pairs"] for p in seq} == {4}
        batch = [p for p in pts if p["series"] == trainer and (p["sweep"] == "batch" or p["max_len"] == 1024)]
        assert sorted(p["pairs"] for p in batch) == [2, 4, 8]
    assert {p["model"] for p in pts if p["series"] == "bfpo_vocab8k"} == {"smollm2-135m-4l-v8k"}


def test_generation_speed_times_every_cell_and_names_the_machine(tmp_path):
    import generation_speed

    from bfpo.testing import save_tiny_model

    out = tmp_path / "speed.json"
    argv = ["--model_name_or_path", str(save_tiny_model(tmp_path / "tiny")), "--prompts", "3", "--max_new_tokens"]
    res = generation_speed.main(
        argv + ["2", "--batch_sizes", "1", "3", "--precisions", "float32", "--output_file", str(out)]
    )
    assert json.loads(out.read_text()) == res and res["prompts"] == 3
    assert [(c["bf16"], c["batch_size"]) for c in res["cells"]] == [(False, 1), (False, 3)]
    assert all(c["seconds"] > 0 and c["seconds_per_answer"] == c["seconds"] / 3 for c in res["cells"])
    assert res["machine"]["cpu_capability"] and res["native_bf16"] in (True, False)
    with pytest.raises(SystemExit, match="fp16"):
        generation_speed.main(argv + ["2", "--precisions", "fp16", "--output_file", str(out)])
