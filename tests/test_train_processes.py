"""Runs that need separate processes: SIGKILL + resume equivalence, and a 2-process (gloo) run."""

import contextlib
import json
import os
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest
from safetensors.torch import load_file

from bfpo.testing import save_tiny_model

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "OMP_NUM_THREADS": "1", "HF_HUB_OFFLINE": "1", "HF_HUB_DISABLE_TELEMETRY": "1"}


def overrides(tmp_path, model_dir, out):
    return [
        "--model_name_or_path",
        str(model_dir),
        "--output_dir",
        str(out),
        "--ref_cache_dir",
        str(tmp_path / "cache"),
        "--safety_source",
        str(ROOT / "recipes/data/tiny_safety.jsonl"),
        "--helpful_source",
        str(ROOT / "recipes/data/tiny_helpful.jsonl"),
        "--disable_tqdm",
        "true",
        "--max_steps",
        "12",
        "--save_steps",
        "3",
        "--logging_steps",
        "3",
    ]


KILLER = textwrap.dedent("""
    import os, signal, sys
    from transformers import TrainerCallback
    from bfpo.train.run import train_arguments, train_preference

    class KillAt(TrainerCallback):
        def on_step_end(self, args, state, control, **kw):
            if state.global_step == 5:
                os.kill(os.getpid(), signal.SIGKILL)

    model_args, data_args, config, _ = train_arguments(["--config"] + sys.argv[1:])
    train_preference(model_args, config, data_args=data_args, callbacks=[KillAt()])
""")


@pytest.mark.slow  # ~30 s: four processes that each import torch and transformers
def test_sigkill_then_resume_matches_uninterrupted_run(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    recipe = str(ROOT / "recipes/tiny_bfpo.yaml")
    cli = [sys.executable, "-m", "bfpo.cli", "train", "--config", recipe]
    full = tmp_path / "full"
    subprocess.run(cli + overrides(tmp_path, model_dir, full), check=True, env=ENV, capture_output=True)

    killed = tmp_path / "killed"
    script = tmp_path / "killer.py"
    script.write_text(KILLER)
    proc = subprocess.run(
        [sys.executable, str(script), recipe] + overrides(tmp_path, model_dir, killed), env=ENV, capture_output=True
    )
    assert proc.returncode == -9, proc.stderr.decode()[-2000:]
    assert (killed / "checkpoint-3").is_dir() and not (killed / "model.safetensors").exists()
    # restarting without --resume refuses to clobber the checkpoints
    again = subprocess.run(cli + overrides(tmp_path, model_dir, killed), env=ENV, capture_output=True)
    assert again.returncode != 0 and b"--resume" in again.stderr
    subprocess.run(
        cli + overrides(tmp_path, model_dir, killed) + ["--resume"], check=True, env=ENV, capture_output=True
    )
    a, b = load_file(full / "model.safetensors"), load_file(killed / "model.safetensors")
    assert a.keys() == b.keys()
    for k in a:
        assert (a[k] - b[k]).abs().max().item() < 1e-6, k


@pytest.mark.spawns  # torch.distributed.run starts two training processes: 8.5 s here on 2 cores
def test_two_process_gloo_run_is_buffered_and_in_sync(tmp_path):
    model_dir = save_tiny_model(tmp_path / "model")
    out = tmp_path / "ddp"
    import socket

    with socket.socket() as sock:  # a free port, so parallel runs on this machine never collide
        sock.bind(("127.0.0.1", 0))
        port = str(sock.getsockname()[1])
    cmd = [
        sys.executable,
        "-m",
        "torch.distributed.run",
        "--nproc_per_node",
        "2",
        "--master_port",
        port,
        "-m",
        "bfpo.cli",
        "train",
        "--config",
        str(ROOT / "recipes/tiny_bfpo.yaml"),
    ]
    ov = overrides(tmp_path, model_dir, out) + ["--max_steps", "4", "--save_strategy", "no"]
    proc = subprocess.run(cmd + ov, env=ENV, capture_output=True, timeout=300)
    assert proc.returncode == 0, proc.stderr.decode()[-3000:]
    ranks = [json.loads((out / "ranks" / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert all(r["world_size"] == 2 for r in ranks)
    assert ranks[0]["param_checksum"] == pytest.approx(ranks[1]["param_checksum"], rel=1e-9, abs=1e-9)
    for r in ranks:
        steps = {c["step"] for c in r["composition"]}
        assert steps == {0, 1, 2, 3}
        assert all(c["safety"] == c["helpful"] == 2 for c in r["composition"])
    assert (out / "model.safetensors").is_file()


@pytest.mark.parametrize("fails", [False, True])
def test_commands_destroy_the_process_group_on_success_and_on_error(tmp_path, fails):
    # a gloo rank that exits with its group still alive can abort after the model was saved, failing the run
    import torch.distributed as dist

    from bfpo.train.model_io import closing_process_group

    dist.init_process_group("gloo", init_method=f"file://{tmp_path / 'store'}", rank=0, world_size=1)
    try:
        with pytest.raises(RuntimeError, match="boom") if fails else contextlib.nullcontext():
            with closing_process_group():
                assert dist.is_initialized()
                if fails:
                    raise RuntimeError("boom")
        assert not dist.is_initialized()
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()
