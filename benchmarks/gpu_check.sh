#!/usr/bin/env bash
# One command for a CUDA machine (issue 15): the test suite with the CUDA tests, the training-step benchmark
# against TRL (its fused LM head, and Liger's kernels where installed), 20 steps of the paper recipe's
# settings on a SmolLM2-size model in bf16 with SDPA and flash-attention 2 where installed, and the
# sequence-length / batch-size sweep, all written to ONE results file:
#
#   benchmarks/gpu_check.sh                      # -> benchmarks/results/gpu_<device>.json (+ scaling plots)
#   benchmarks/gpu_check.sh --output_file /tmp/gpu.json
#   benchmarks/gpu_check.sh --cpu_smoke          # the same plumbing on CPU, tiny model (what the tests run)
#   benchmarks/gpu_check.sh --only pytest -- tests/test_cuda.py -x   # pytest options after --
#   benchmarks/gpu_check.sh --help               # every setting (gpu_check.py reads them with bfpo.args.parse)
#
# Without CUDA (and without --cpu_smoke) it exits with status 2 and says why; it exits 1 if any step failed.
# Uses .venv/bin/python when the repo has one, else python3 (override with PYTHON=...).
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
python="${PYTHON:-}"
if [[ -z "$python" ]]; then
    if [[ -x "$root/.venv/bin/python" ]]; then python="$root/.venv/bin/python"; else python="python3"; fi
fi
if ! command -v "$python" >/dev/null 2>&1; then
    echo "gpu_check: no Python interpreter at '$python' (run scripts/setup.sh or set PYTHON=...)" >&2
    exit 2
fi
cd "$root"
exec "$python" "$root/benchmarks/gpu_check.py" --python "$python" "$@"
