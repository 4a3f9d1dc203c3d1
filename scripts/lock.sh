#!/usr/bin/env bash
# Refresh requirements/lock.txt: every package that `make setup` installs, pinned exactly.
# Run after changing a dependency in pyproject.toml, then run `make test-fresh` and commit both.
# Resolved for the CPU/CI machines (CPython 3.11, x86-64 manylinux). The torch stack stays pinned in
# pyproject.toml to what the GPU image runs (../shared/ENV_NOTES.md); the GPU machine gets its missing
# packages as wheels from ../shared/tools/gpu_wheels.sh, not from this lock.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
"$PY" -m uv --version >/dev/null 2>&1 || "$PY" -m pip install -q uv==0.13.9
"$PY" -m uv pip compile pyproject.toml --extra dev --python-version 3.11 \
  --python-platform x86_64-manylinux_2_28 --custom-compile-command "scripts/lock.sh" \
  -q -o requirements/lock.txt
echo "wrote requirements/lock.txt ($(grep -c '==' requirements/lock.txt) packages)"
