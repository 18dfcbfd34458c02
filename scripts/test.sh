#!/usr/bin/env bash
# The README's test command: set up .venv (idempotent), then run the tests (CPU only, no network).
# Extra arguments go to pytest, e.g. `bash scripts/test.sh -m slow` for the slower end-to-end tests.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh"
cd "$root"
exec .venv/bin/python -m pytest "$@"
