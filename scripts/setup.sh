#!/usr/bin/env bash
# Create .venv in the repo root and install bfpo with its test extras. Idempotent: re-running does nothing
# unless pyproject.toml changed since the last successful install.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
stamp=".venv/.bfpo-installed"
want="$(sha256sum pyproject.toml | cut -d' ' -f1)"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x .venv/bin/bfpo ]; then
  exit 0
fi
[ -x .venv/bin/python ] || "$py" -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null 2>&1 || true
# torch first, pinned: a CPU build that lies on this kind of machine's disk (an unpinned torch pulls CUDA).
.venv/bin/python -m pip install -q "torch==${BFPO_TORCH_VERSION:-2.13.0}"
.venv/bin/python -m pip install -q -e ".[test]"
echo "$want" > "$stamp"
