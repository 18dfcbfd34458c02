#!/usr/bin/env bash
# Create .venv in the repository root and install tunewise into it (editable).
# torch==2.13.0 is installed first only when the environment has no torch: a looser spec would pull
# several GB of CUDA wheels; a GPU user's own torch (pre-installed in .venv) is kept.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"
py="${PYTHON:-python3}"
if [ ! -x .venv/bin/python ]; then
  "$py" -m venv .venv
fi
# --no-compile: no byte-compiling of every installed module at install time (measured on 2 cores: the
# set-up's CPU time 77 s → 36 s); Python compiles the modules a run imports on first use instead
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
# (this machine's pip mirror config prints one harmless "Location … is ignored" warning per package)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0" >&2
  quiet "${pip[@]}" install --no-compile "torch==2.13.0"
fi
# `setup.sh` installs the dev extra too (tests, lint, the trainers' own schemas, TensorBoard/MLflow
# readers); `setup.sh run` (scripts/main.sh) only what `tunewise` needs, and a later `setup.sh` adds
# the rest
want="${1:-dev}"
stamp_dev=.venv/.tunewise-installed
stamp_run=.venv/.tunewise-installed-run
fresh() { [ -f "$1" ] && [ ! pyproject.toml -nt "$1" ]; }
if [ "$want" = run ]; then
  if ! fresh "$stamp_dev" && ! fresh "$stamp_run"; then
    echo "[setup] installing tunewise and its dependencies into .venv" >&2
    quiet "${pip[@]}" install --no-compile -e "."
    touch "$stamp_run"
  fi
elif ! fresh "$stamp_dev"; then
  echo "[setup] installing tunewise, its dependencies and the dev extra into .venv" >&2
  quiet "${pip[@]}" install --no-compile -e ".[dev]"
  touch "$stamp_dev"
fi
