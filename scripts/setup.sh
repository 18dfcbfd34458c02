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
stamp=.venv/.tunewise-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
  echo "[setup] installing tunewise and its dependencies into .venv" >&2
  quiet "${pip[@]}" install --no-compile -e ".[dev]"
  touch "$stamp"
fi
