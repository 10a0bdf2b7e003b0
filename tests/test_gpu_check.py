"""``benchmarks/gpu_check.py`` (and ``gpu_check.sh``) and the scripts it runs agree on their flags.

* ``gpu_check.py --help`` and ``recipe_run.py --help`` list every setting of their dataclasses;
* every command line gpu_check BUILDS (its :func:`plan`, for the GPU run and the CPU smoke run) is read
  without error by the target script's own settings dataclass through ``bfpo.args.parse``, with the values
  gpu_check meant, and recipe_run's ``--set`` overrides are ``bfpo train`` settings;
* pytest's options reach the pytest step (after ``--``, or one as ``--pytest_args=-x``);
* without CUDA the script stops at once, and ``--cpu_smoke`` runs every step's plumbing into one file.
"""

import dataclasses
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bfpo.args import ConfigError, parse

ROOT = Path(__file__).resolve().parents[1]
BENCH = ROOT / "benchmarks"
sys.path.insert(0, str(BENCH))
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1"}

import gpu_check  # noqa: E402
import recipe_run  # noqa: E402
import scaling  # noqa: E402
import train_step  # noqa: E402

#: the settings dataclass each script gpu_check runs reads its command line with
TARGETS = {
    "train_step.py": train_step.TrainStepArguments,
    "recipe_run.py": recipe_run.RecipeRunArguments,
    "scaling.py": scaling.ScalingArguments,
}
#: what probe() reports on a CUDA machine with flash-attn: every step gpu_check can plan
GPU_ENV = {"cuda_available": True, "flash_attn": "2.7.0", "torch": torch.__version__}


def _help(main, capsys) -> str:
    with pytest.raises(SystemExit) as exit_:
        main(["--help"])
    assert exit_.value.code == 0
    return capsys.readouterr().out


@pytest.mark.parametrize(
    "main, dtype",
    [(gpu_check.main, gpu_check.GpuCheckArguments), (recipe_run.main, recipe_run.RecipeRunArguments)],
    ids=["gpu_check", "recipe_run"],
)
def test_help_lists_every_setting(main, dtype, capsys):
    text = _help(main, capsys)
    for f in dataclasses.fields(dtype):
        assert f"--{f.name}" in text, f.name
        assert f.metadata.get("help"), f"{dtype.__name__}.{f.name} has no help"
    assert "--config" in text and "--out " not in text


@pytest.mark.parametrize("smoke", [False, True], ids=["gpu", "cpu_smoke"])
def test_planned_commands_use_flags_the_target_scripts_accept(smoke, tmp_path):
    from bfpo.train.run import train_arguments

    steps = gpu_check.plan(sys.executable, str(tmp_path), smoke, GPU_ENV, [], 7)
    names = [s["name"] for s in steps]
    assert names[:2] == ["pytest", "benchmark"] and names[-1] == "scaling"
    assert {"recipe_sdpa_padded", "recipe_sdpa_packed", "recipe_flash_attention_2_packed"} <= set(names)
    for step in steps:
        cmd = step["cmd"]
        assert cmd[0] == sys.executable
        if step["name"] == "pytest":
            assert cmd[1:3] == ["-m", "pytest"]
            paths = [c.split("::")[0] for c in cmd[3:] if c.startswith("tests")]
            assert paths and all((ROOT / p).exists() for p in paths), cmd
            continue
        script = os.path.basename(cmd[1])
        assert cmd[1] == str(BENCH / script) and script in TARGETS, cmd
        (a,) = parse([TARGETS[script]], cmd[2:], prog=script)  # ConfigError on a flag the script lacks
        assert a.output_file == step["json"]
        if script == "train_step.py":
            assert a.quick is smoke
            assert a.models == (None if smoke else ["smollm2-135m"])
        elif script == "scaling.py":
            assert a.dry_run is smoke and a.steps == (None if smoke else 3)
        else:
            attn, layout = step["name"][len("recipe_") :].rsplit("_", 1)
            assert (a.attn, a.model, a.steps) == (attn, "tiny" if smoke else "smollm2-135m", 2 if smoke else 7)
            assert a.set == [f"padding_free={str(layout == 'packed').lower()}"]
            # what recipe_run passes on to `bfpo train`: the overrides are settings it has
            _, _, config, _ = train_arguments(recipe_run.train_argv(a.recipe, str(tmp_path), a.steps, a.set))
            assert config.padding_free is (layout == "packed") and config.max_steps == a.steps


def test_no_flash_attention_step_without_flash_attn_or_cuda(tmp_path):
    for env in ({"cuda_available": True, "flash_attn": None}, {"cuda_available": False, "flash_attn": "2.7.0"}):
        names = [s["name"] for s in gpu_check.plan(sys.executable, str(tmp_path), False, env, [], 20)]
        assert not any("flash" in n for n in names) and "recipe_sdpa_packed" in names


def test_gpu_check_arguments():
    a = gpu_check.arguments([])
    assert (a.output_file, a.cpu_smoke, a.steps, a.only, a.pytest_args) == (None, False, 20, None, [])
    a = gpu_check.arguments(["--cpu-smoke", "--output_file", "/tmp/x.json", "--only", "pytest", "recipe"])
    assert a.cpu_smoke is True and a.output_file == "/tmp/x.json" and a.only == ["pytest", "recipe"]
    # pytest's options: everything after -- goes to pytest as is; a single one also as --pytest_args=-x
    a = gpu_check.arguments(["--cpu_smoke", "--pytest_args", "tests/test_cuda.py", "--", "-k", "not flash", "-x"])
    assert a.cpu_smoke is True and a.pytest_args == ["tests/test_cuda.py", "-k", "not flash", "-x"]
    assert gpu_check.arguments(["--pytest_args=-x"]).pytest_args == ["-x"]
    assert gpu_check.arguments(["--", "--lf"]).pytest_args == ["--lf"]
    junit_cmd = gpu_check.plan("py", "/w", True, {}, a.pytest_args, 2)[0]["cmd"]
    assert junit_cmd[5:9] == ["tests/test_cuda.py", "-k", "not flash", "-x"]
    with pytest.raises(ConfigError, match="go after --"):  # a pytest option before -- is not a setting: a hint
        gpu_check.arguments(["--pytest_args", "tests/test_cuda.py", "-k", "flash"])
    with pytest.raises(ConfigError, match="--out"):  # the old flag names the flag
        gpu_check.arguments(["--out", "/tmp/x.json"])
    with pytest.raises(ConfigError, match="benchmark"):
        gpu_check.arguments(["--only", "bench"])
    with pytest.raises(ConfigError, match="steps"):
        gpu_check.arguments(["--steps", "0"])


def test_recipe_run_arguments_are_checked_before_anything_runs():
    (a,) = parse([recipe_run.RecipeRunArguments], ["--output_file", "r.json"], prog="recipe_run.py")
    assert (a.model, a.attn, a.steps, a.recipe, a.set) == ("smollm2-135m", "sdpa", 20, recipe_run.DEFAULT_RECIPE, [])
    for argv, match in [
        ([], "output_file"),
        (["--output_file", "r.json", "--set", "padding_free"], "NAME=VALUE"),
        (["--output_file", "r.json", "--attn", "flash"], "flash_attention_2"),
        (["--output_file", "r.json", "--model", "llama"], "smollm2-135m"),
        (["--output_file", "r.json", "--out", "r.json"], "unknown setting.*--out"),
    ]:
        with pytest.raises(ConfigError, match=match):
            recipe_run.main(argv)
    flags = recipe_run.train_argv("r.yaml", "/w", 3, ["padding_free=true", "dtype=float32"])
    assert flags[:2] == ["--config", "r.yaml"] and flags[-4:] == ["--padding_free", "true", "--dtype", "float32"]


@pytest.mark.spawns
def test_gpu_check_sh_help_names_the_new_flags_and_rejects_old_ones():
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--help"], cwd=ROOT, env=ENV, capture_output=True, text=True, timeout=120
    )
    assert proc.returncode == 0, proc.stderr[-2000:]
    for flag in ("--output_file", "--cpu_smoke", "--pytest_args", "--only", "--steps", "--python"):
        assert flag in proc.stdout
    # an unknown flag (the old --out): exit status 2 before anything runs, the message naming it
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--out", "x.json"], cwd=ROOT, env=ENV, capture_output=True, text=True
    )
    assert proc.returncode == 2 and "gpu_check: " in proc.stderr and "--out" in proc.stderr
    assert "Traceback" not in proc.stderr and not (ROOT / "x.json").exists()


@pytest.mark.spawns
def test_gpu_check_without_cuda_fails_clearly(tmp_path):
    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA")
    out = tmp_path / "gpu.json"
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--output_file", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert proc.returncode == 2
    assert "no CUDA device is visible to torch" in proc.stderr and "--cpu_smoke" in proc.stderr
    assert not out.exists()


@pytest.mark.slow  # ~80 s on 2 cores: the whole gpu_check pipeline on CPU (scripts/test -m slow runs it)
def test_gpu_check_cpu_smoke_writes_one_results_file(tmp_path):
    import yaml

    out = tmp_path / "smoke.json"
    proc = subprocess.run(
        ["bash", str(BENCH / "gpu_check.sh"), "--cpu_smoke", "--output_file", str(out)],
        cwd=ROOT,
        env=ENV,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    res = json.loads(out.read_text())
    assert res["smoke"] is True and res["ok"] is True and res["env"]["torch"] == torch.__version__
    steps = res["steps"]
    assert {"pytest", "benchmark", "recipe_sdpa_padded", "recipe_sdpa_packed", "scaling"} <= set(steps)
    # the CUDA tests were collected (and, without a GPU, skipped)
    summary = steps["pytest"]["summary"]
    assert summary["tests"] > 0 and (summary["cuda_tests_run"] or summary["cuda_tests_skipped"])
    if not torch.cuda.is_available():
        assert summary["cuda_tests_skipped"] and not summary["cuda_tests_run"]
    bench = steps["benchmark"]["result"]
    assert {"bfpo_down_proj_precomputed", "trl_ipo_down_proj"} <= {c["name"] for c in bench["configs"]}
    if not torch.cuda.is_available():
        assert "trl_ipo_down_proj_liger" in bench["skipped"]
    recipe = yaml.safe_load((ROOT / "recipes" / "paper_mistral_bfpo.yaml").read_text())  # a flat file of settings
    for name in ("recipe_sdpa_padded", "recipe_sdpa_packed"):
        r = steps[name]["result"]
        assert r["steps"] == 2 and r["loss_finite"] and len(r["losses"]) == 2
        assert r["settings"]["tau"] == recipe["tau"] and r["settings"]["alpha"] == recipe["alpha"]
        assert r["settings"]["trainable"] == ["down_proj"] and r["param_dtype"] == "bfloat16"
        assert r["activation_checkpointing"] and r["padding_free"] == name.endswith("packed")
    scaling = steps["scaling"]["result"]
    assert {p["series"] for p in scaling["points"]} == {"bfpo", "trl", "bfpo_vocab8k"}
    assert all(math.isfinite(p["tokens_per_s"]) and p["peak_rss_mb"] > 0 for p in scaling["points"])
    assert set(scaling["fits"]["peak_rss_mb"]) == {"bfpo", "trl", "bfpo_vocab8k"}
    assert len(res["plots"]) == 2  # the sweep's plots, next to the results file
    for plot in res["plots"]:
        assert (ROOT / plot).parent.resolve() == tmp_path.resolve() and (ROOT / plot).stat().st_size > 1000
