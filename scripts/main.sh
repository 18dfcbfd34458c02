#!/usr/bin/env bash
# The README's main command: set up .venv (idempotent), then run the sweep. With no arguments that is
# the CPU demo (a locally pretrained tiny base, a structured-extraction task, full/LoRA/QLoRA × ranks ×
# dataset sizes). Extra arguments are Hydra overrides for `tunewise sweep`.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
bash "$root/scripts/setup.sh" run  # what tunewise needs (test.sh adds the dev extra)
cd "$root"
exec .venv/bin/tunewise sweep sweep.yes=true "$@"
