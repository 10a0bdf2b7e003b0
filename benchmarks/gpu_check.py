"""Everything issue 15 asks of a CUDA machine, in one command and one results file (run by gpu_check.sh).

Steps, each in its own process, each recorded (command, exit status, seconds, output tail) in ONE JSON file:

1. ``env``: nvidia-smi, torch/CUDA/transformers/TRL versions, and whether flash-attn and liger-kernel are
   installed;
2. ``pytest``: the test suite, including ``tests/test_cuda.py`` (which must not be skipped on CUDA);
3. ``benchmark``: ``benchmarks/train_step.py`` on the SmolLM2-135M shape: bfpo against TRL's DPOTrainer with
   its default fused LM head, and TRL with Liger's kernels where liger-kernel is installed;
4. ``recipe_*``: 20 steps of the paper recipe's settings (``benchmarks/recipe_run.py``), bf16 weights, with
   SDPA (padded and packed batches) and with flash-attention 2 where flash-attn is installed;
5. ``scaling``: the sequence-length / batch-size sweep (``benchmarks/scaling.py``), peak CUDA memory included.

Without CUDA it stops at once with exit status 2 and says so. ``--cpu_smoke`` runs the same plumbing on CPU
with a tiny model and a few steps (what ``tests/test_gpu_check.py`` does); its results say ``"smoke": true``.
The exit status is 0 only when every step passed.

    python benchmarks/gpu_check.py --output_file /tmp/gpu.json
    python benchmarks/gpu_check.py --cpu_smoke --only pytest recipe
    python benchmarks/gpu_check.py --pytest_args tests/test_cuda.py          # instead of the whole suite
    python benchmarks/gpu_check.py -- tests/test_cuda.py -k "not flash"      # pytest options: after --

Settings are read with ``bfpo.args.parse`` (``--help`` lists them; ``--config FILE.yaml`` works too). pytest's
own options start with ``-``, which the parser would take for its flags: put them after ``--`` (everything
after it is appended to ``pytest_args``), or give a single one as ``--pytest_args=-x``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import platform
import re
import shlex
import subprocess
import sys
import tempfile
import time
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from typing import Any, Dict, List, Optional, Sequence

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
BENCH = os.path.join(ROOT, "benchmarks")
ENV = {
    "HF_HUB_OFFLINE": "1",
    "HF_HUB_DISABLE_TELEMETRY": "1",
    "HF_DATASETS_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "TQDM_DISABLE": "1",
    "PYTORCH_NVML_BASED_CUDA_CHECK": "1",
}
NO_CUDA = (
    "gpu_check: no CUDA device is visible to torch ({detail}). This command is for a CUDA machine; "
    "nothing was run. Use --cpu_smoke to exercise its plumbing on CPU."
)


def probe(python: str) -> Dict[str, Any]:
    """Versions and devices as the benchmark's interpreter sees them (in a child: no CUDA context here)."""
    code = r"""
import importlib.util, json, os, platform
import torch, transformers
info = {"python": platform.python_version(), "torch": torch.__version__, "torch_cuda": torch.version.cuda,
        "transformers": transformers.__version__, "cuda_available": torch.cuda.is_available(),
        "devices": [torch.cuda.get_device_name(i) for i in range(torch.cuda.device_count())]
                   if torch.cuda.is_available() else [],
        "bf16_supported": torch.cuda.is_bf16_supported() if torch.cuda.is_available() else None}
for mod in ("trl", "flash_attn", "liger_kernel", "triton", "accelerate"):
    spec = importlib.util.find_spec(mod)
    if spec is None:
        info[mod] = None
        continue
    try:
        info[mod] = getattr(__import__(mod), "__version__", "installed")
    except Exception as e:  # installed but broken (e.g. a flash-attn wheel built for another torch)
        info[mod] = f"broken: {type(e).__name__}: {e}"
print(json.dumps(info))
"""
    proc = subprocess.run(
        [python, "-c", code], capture_output=True, text=True, env={**os.environ, **ENV}, cwd=ROOT, timeout=300
    )
    if proc.returncode != 0:
        return {"error": proc.stderr[-4000:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def nvidia_smi() -> Optional[str]:
    try:
        return subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total,driver_version,compute_cap", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=60,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None


def run_step(name: str, cmd: List[str], timeout: int, log_dir: str) -> Dict[str, Any]:
    """Run one step; its full output goes to ``log_dir/<name>.log``, its tail into the results."""
    print(f"[gpu_check] {name}: {' '.join(shlex.quote(c) for c in cmd)}", flush=True)
    t0 = time.perf_counter()
    log = os.path.join(log_dir, f"{name}.log")
    try:
        with open(log, "w") as f:
            proc = subprocess.run(
                cmd, stdout=f, stderr=subprocess.STDOUT, text=True, cwd=ROOT, env={**os.environ, **ENV}, timeout=timeout
            )
        rc = proc.returncode
    except subprocess.TimeoutExpired:
        rc = "timeout"
    with open(log) as f:
        text = f.read()
    step = {
        "command": cmd,
        "returncode": rc,
        "ok": rc == 0,
        "seconds": round(time.perf_counter() - t0, 1),
        "output_tail": text[-6000:],
    }
    print(f"[gpu_check] {name}: {'ok' if step['ok'] else 'FAILED (' + str(rc) + ')'} in {step['seconds']}s", flush=True)
    return step


def parse_junit(path: str) -> Dict[str, Any]:
    """Counts, and the names of failed and skipped tests (with the skip reason) from pytest's JUnit XML."""
    root = ET.parse(path).getroot()
    suites = [root] if root.tag == "testsuite" else list(root.iter("testsuite"))
    out: Dict[str, Any] = {k: sum(int(s.get(k, 0)) for s in suites) for k in ("tests", "failures", "errors", "skipped")}
    out["failed"], out["skipped_tests"], out["cuda_tests_run"], out["cuda_tests_skipped"] = [], {}, [], []
    for case in root.iter("testcase"):
        name = f"{case.get('classname')}::{case.get('name')}"
        if case.find("failure") is not None or case.find("error") is not None:
            out["failed"].append(name)
        skip = case.find("skipped")
        if skip is not None:
            out["skipped_tests"][name] = skip.get("message", "")
        if "test_cuda" in (case.get("classname") or ""):
            (out["cuda_tests_skipped"] if skip is not None else out["cuda_tests_run"]).append(name)
    return out


def read_json(path: str) -> Any:
    try:
        with open(path) as f:
            return json.load(f)
    except (OSError, ValueError) as e:
        return {"missing": f"{type(e).__name__}: {e}"}


def plan(
    python: str, work: str, smoke: bool, env: Dict[str, Any], pytest_args: List[str], steps: int
) -> List[Dict[str, Any]]:
    """The steps to run: name, command, timeout (s), and the JSON file the step writes (if any)."""
    out = []
    junit = os.path.join(work, "pytest.xml")
    tests = pytest_args or (["tests/test_cuda.py", "-k", "not flash"] if smoke else ["tests"])
    out.append(
        dict(
            name="pytest",
            cmd=[python, "-m", "pytest", "-q", "-rs", *tests, f"--junitxml={junit}"],
            timeout=600 if smoke else 3600,
            junit=junit,
        )
    )
    bench = os.path.join(work, "benchmark.json")
    if smoke:
        bench_args = [
            "--quick",
            "--configs",
            "bfpo_down_proj_precomputed",
            "trl_ipo_down_proj",
            "trl_ipo_down_proj_liger",
            "--warmup",
            "1",
            "--steps",
            "1",
        ]
    else:
        bench_args = ["--models", "smollm2-135m", "--warmup", "2", "--steps", "10"]
    out.append(
        dict(
            name="benchmark",
            cmd=[python, os.path.join(BENCH, "train_step.py"), "--output_file", bench, *bench_args],
            timeout=600 if smoke else 3600,
            json=bench,
        )
    )
    model, n = ("tiny", 2) if smoke else ("smollm2-135m", steps)
    attns = ["sdpa"] + (
        ["flash_attention_2"]
        if env.get("flash_attn") and not str(env["flash_attn"]).startswith("broken") and env.get("cuda_available")
        else []
    )
    for attn in attns:
        for packed in (False, True):
            name = f"recipe_{attn}_{'packed' if packed else 'padded'}"
            path = os.path.join(work, f"{name}.json")
            out.append(
                dict(
                    name=name,
                    cmd=[
                        python,
                        os.path.join(BENCH, "recipe_run.py"),
                        "--output_file",
                        path,
                        "--model",
                        model,
                        "--attn",
                        attn,
                        "--steps",
                        str(n),
                        "--set",
                        f"padding_free={str(packed).lower()}",
                    ],
                    timeout=600 if smoke else 1800,
                    json=path,
                )
            )
    scaling = os.path.join(work, "scaling.json")
    out.append(
        dict(
            name="scaling",
            cmd=[
                python,
                os.path.join(BENCH, "scaling.py"),
                "--output_file",
                scaling,
                *(["--dry_run"] if smoke else ["--steps", "3"]),
            ],
            timeout=600 if smoke else 3600,
            json=scaling,
        )
    )
    return out


STEPS = ("pytest", "benchmark", "recipe", "scaling")


@dataclass
class GpuCheckArguments:
    """Settings of ``gpu_check.py`` (``--help`` lists them)."""

    output_file: Optional[str] = field(
        default=None,
        metadata={
            "help": "the results file (default benchmarks/results/gpu_<device>.json; --cpu_smoke: "
            "benchmarks/results/gpu_check_smoke.json)"
        },
    )
    cpu_smoke: bool = field(default=False, metadata={"help": "run the plumbing on CPU with a tiny model"})
    python: str = field(
        default=sys.executable, metadata={"help": "interpreter for every step (default: the one running this)"}
    )
    steps: int = field(default=20, metadata={"help": "optimizer steps of each paper-recipe run"})
    only: Optional[List[str]] = field(
        default=None, metadata={"help": "only these steps (recipe: every recipe_* run)", "choices": STEPS}
    )
    pytest_args: List[str] = field(
        default_factory=list,
        metadata={
            "help": "pytest arguments instead of the whole suite, e.g. --pytest_args tests/test_cuda.py; "
            "values starting with - go after -- (gpu_check.py -- tests/test_cuda.py -k 'not flash') "
            "or, a single one, as --pytest_args=-x"
        },
    )

    def __post_init__(self):
        if self.steps < 1:
            raise ValueError(f"--steps must be >= 1, got {self.steps}")


def arguments(argv: Optional[Sequence[str]] = None) -> GpuCheckArguments:
    """The settings of a command line; whatever follows ``--`` is appended to ``pytest_args`` as is."""
    from bfpo.args import ConfigError, parse

    argv = list(sys.argv[1:] if argv is None else argv)
    rest: List[str] = []
    if "--" in argv:
        cut = argv.index("--")
        argv, rest = argv[:cut], argv[cut + 1 :]
    try:
        (a,) = parse([GpuCheckArguments], argv, prog="gpu_check.py", description=__doc__.split("\n")[0])
    except ConfigError as e:
        if "unknown setting" not in str(e):
            raise
        raise ConfigError(
            f"{e} (pytest's own options, such as -k or -x, go after --: gpu_check.py ... -- -k NAME)"
        ) from None
    a.pytest_args = [*a.pytest_args, *rest]
    return a


def main(argv: Optional[List[str]] = None) -> int:
    a = arguments(argv)
    started = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    env = probe(a.python)
    if "error" in env:
        print(
            f"gpu_check: the interpreter {a.python} cannot import torch/transformers:\n{env['error']}", file=sys.stderr
        )
        return 2
    if not a.cpu_smoke and not env["cuda_available"]:
        detail = f"torch {env['torch']}, built for CUDA {env['torch_cuda']}"
        print(NO_CUDA.format(detail=detail), file=sys.stderr)
        return 2
    env["nvidia_smi"] = nvidia_smi()
    env["platform"] = platform.platform()
    env["cpu"] = (
        next(
            (ln.split(":", 1)[1].strip() for ln in open("/proc/cpuinfo") if ln.startswith("model name")),
            platform.processor(),
        )
        if os.path.exists("/proc/cpuinfo")
        else platform.processor()
    )
    device = re.sub(r"[^a-z0-9]+", "_", (env["devices"] or ["cpu"])[0].lower()).strip("_")
    out_path = a.output_file or os.path.join(
        BENCH, "results", "gpu_check_smoke.json" if a.cpu_smoke else f"gpu_{device}.json"
    )
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], capture_output=True, text=True, cwd=ROOT).stdout.strip()
    except OSError:
        commit = None
    results: Dict[str, Any] = {"smoke": a.cpu_smoke, "started": started, "commit": commit, "env": env, "steps": {}}
    with tempfile.TemporaryDirectory(prefix="gpu-check-") as work:
        for step in plan(a.python, work, a.cpu_smoke, env, a.pytest_args, a.steps):
            if a.only and not any(step["name"].startswith(o) for o in a.only):
                continue
            r = run_step(step["name"], step["cmd"], step["timeout"], work)
            if "junit" in step and os.path.exists(step["junit"]):
                r["summary"] = parse_junit(step["junit"])
                if env["cuda_available"] and not r["summary"]["cuda_tests_run"]:
                    r["ok"] = False
                    r["problem"] = "CUDA is available but every test in tests/test_cuda.py was skipped"
            if "json" in step:
                r["result"] = read_json(step["json"])
            results["steps"][step["name"]] = r
        plots = results["steps"].get("scaling", {}).get("result", {}).get("plots", [])
        for name in plots:  # the plots are files; keep them next to the results file
            src = os.path.join(work, name)
            if os.path.exists(src):
                dst = os.path.join(
                    os.path.dirname(os.path.abspath(out_path)),
                    f"{os.path.splitext(os.path.basename(out_path))[0]}_{name.split('_', 1)[-1]}",
                )
                os.makedirs(os.path.dirname(dst), exist_ok=True)
                with open(src, "rb") as fi, open(dst, "wb") as fo:
                    fo.write(fi.read())
                results.setdefault("plots", []).append(os.path.relpath(dst, ROOT))
    results["finished"] = dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds")
    results["ok"] = bool(results["steps"]) and all(s["ok"] for s in results["steps"].values())
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    with open(out_path, "w") as f:
        json.dump(results, f, indent=1, default=str)
    failed = [n for n, s in results["steps"].items() if not s["ok"]]
    print(
        f"[gpu_check] results: {out_path}; " + ("all steps passed" if not failed else f"FAILED: {', '.join(failed)}"),
        flush=True,
    )
    return 0 if not failed else 1


if __name__ == "__main__":
    from bfpo.args import ConfigError

    try:
        sys.exit(main())
    except ConfigError as e:  # a setting it cannot use: the message, exit status 2 (as argparse's errors)
        print(f"gpu_check: {e}", file=sys.stderr)
        sys.exit(2)
