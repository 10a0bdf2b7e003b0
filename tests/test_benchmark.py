"""The training-step benchmark runs end to end (``--quick``) and writes results of the documented shape."""

import json
import math
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "train_step.py"


def test_quick_benchmark_writes_finite_positive_results(tmp_path):
    out = tmp_path / "quick.json"
    env = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, str(SCRIPT), "--quick", "--out", str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=170)
    assert proc.returncode == 0, proc.stderr[-3000:]
    res = json.loads(out.read_text())
    names = [c["name"] for c in res["configs"]]
    assert {"trl_ipo_full", "trl_ipo_down_proj", "bfpo_full_precomputed", "bfpo_down_proj_precomputed",
            "bfpo_down_proj_ref_model"} <= set(names)
    for c in res["configs"]:
        for key in ("tokens_per_s", "step_s", "peak_rss_mb", "achieved_flops", "model_flops_per_step"):
            assert math.isfinite(c[key]) and c[key] > 0, (c["name"], key, c[key])
        assert c["model"] == "tiny"
        assert 0.0 <= c["padding_fraction"] < 1.0
        assert c["tokens_per_s"] == c["tokens_per_step"] / c["step_s"]
    # down_proj-only runs train fewer parameters than full ones
    by = {c["name"]: c for c in res["configs"]}
    assert by["bfpo_down_proj_precomputed"]["trainable_params"] == by["trl_ipo_down_proj"]["trainable_params"]
    assert by["bfpo_down_proj_precomputed"]["trainable_params"] < by["bfpo_full_precomputed"]["trainable_params"]
    ratios = res["ratios_vs_trl"]
    assert ratios["bfpo_down_proj_precomputed"]["vs"] == "trl_ipo_down_proj"
    assert ratios["bfpo_full_precomputed"]["vs"] == "trl_ipo_full"
    for name, r in ratios.items():
        assert math.isfinite(r["tokens_per_s"]) and r["tokens_per_s"] > 0, name
        assert math.isfinite(r["peak_rss"]) and r["peak_rss"] > 0, name
    roof = res["machine"]["roofline_flops"]
    assert roof["bfloat16"] > 0 and roof["float32"] > 0
    assert res["settings"]["quick"] is True
