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
# pip installs with --no-compile and the modules are byte-compiled afterwards on every core at once
# (compiled()): pip compiles one file at a time. Never skip compiling: where PYTHONDONTWRITEBYTECODE is
# set (this project's machines set it) nothing compiles on import either, and every runner process
# — one per cell — would compile torch, transformers and peft from source (measured on 2 cores: a demo
# cell's start + load 10.9 s without .pyc files, 4.1 s with them; compiling all of .venv: 19 s)
pip=(.venv/bin/python -m pip -q --disable-pip-version-check)
installed=0
compiled() {
  local sp
  sp="$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')"
  # exit status 1 only means some file is not Python 3.11 source (templates, tests of other versions)
  .venv/bin/python -m compileall -q -j 0 "$sp" advisor runners sweep reports >/dev/null 2>&1 || true
}
# (this machine's pip mirror config prints one harmless "Location … is ignored" warning per package)
quiet() { "$@" 2> >(grep -v "is ignored: it is neither" >&2); }
if ! .venv/bin/python -c "import torch" >/dev/null 2>&1; then
  echo "[setup] installing torch==2.13.0" >&2
  quiet "${pip[@]}" install --no-compile "torch==2.13.0"
  installed=1
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
    installed="$stamp_run"
  fi
elif ! fresh "$stamp_dev"; then
  echo "[setup] installing tunewise, its dependencies and the dev extra into .venv" >&2
  quiet "${pip[@]}" install --no-compile -e ".[dev]"
  installed="$stamp_dev"
fi
stamp_pyc=.venv/.tunewise-compiled  # also compiles a .venv set up before the set-up compiled
if [ "$installed" != 0 ] || [ ! -f "$stamp_pyc" ]; then
  echo "[setup] byte-compiling .venv" >&2
  compiled
  case "$installed" in 0 | 1) ;; *) touch "$installed" ;; esac # stamped once compiled: a set-up cut short reruns
  touch "$stamp_pyc"
fi
