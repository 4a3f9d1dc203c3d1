#!/usr/bin/env bash
# What CI does, before you submit: clone the committed HEAD into a temporary folder, install from
# nothing (a new .venv from requirements/lock.txt) and run .ci/run there, with ../shared beside the
# clone when this checkout has one (as CI has it). Uncommitted changes are NOT tested: commit first.
#   make test-fresh            (or: bash scripts/test_fresh.sh [KEEP_DIR])
# Prints the install and test durations; the clone is removed afterwards unless KEEP_DIR is given.
set -euo pipefail
SRC=$(cd "$(dirname "$0")/.." && pwd)
DIR=${1:-$(mktemp -d /tmp/keyvid-fresh.XXXXXX)}
[ -n "$(git -C "$SRC" status --porcelain --untracked-files=no)" ] && echo "note: uncommitted changes are not part of this run" >&2
git clone -q "$SRC" "$DIR/keyvid"
[ -d "$SRC/../shared" ] && ln -s "$(cd "$SRC/../shared" && pwd)" "$DIR/shared"
cd "$DIR/keyvid"
echo "fresh clone of $(git rev-parse --short HEAD) in $DIR/keyvid ($(nproc) cores)"
start=$(date +%s)
status=0
bash .ci/run || status=$?
echo "test-fresh: .ci/run exited $status after $(( $(date +%s) - start )) s (install included)"
[ -n "${1:-}" ] || { cd /; rm -rf "$DIR"; }
exit $status
