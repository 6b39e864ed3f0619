#!/usr/bin/env bash
# ruff (lint and format), mypy as pyproject.toml configures it (strict for the
# shared package and the modem worker) plus --strict on common/ alone, and the
# import contracts when .importlinter exists. Tools from .venv (make test).
# Paths given as arguments narrow ruff to them and leave out the whole-tree
# mypy run and the import contracts:  make lint PATHS='common tests/common'
set -euo pipefail
cd "$(dirname "$0")/.."
bin=.venv/bin
[ -x "$bin/ruff" ] || { echo "no .venv with the lint tools: run 'make test' (or scripts/test.sh) once first" >&2; exit 1; }

paths=("${@:-.}")
status=0
run() { echo "+ $*" >&2; "$@" || status=1; }
run "$bin/ruff" check "${paths[@]}"
run "$bin/ruff" format --check "${paths[@]}"
run "$bin/mypy" --strict common/smsgw_common
if [ $# -eq 0 ]; then
  run "$bin/mypy"
  if [ -f .importlinter ]; then
    run "$bin/lint-imports"
  fi
fi
exit "$status"
