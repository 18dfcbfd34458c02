"""Build (or confirm) the demo's assets without running a sweep: the pretrained base and the task data.

    .venv/bin/python scripts/build_demo_base.py [MODEL_DIR [DATA_FILE]]

Defaults: outputs/demo/base and outputs/demo/data/train.jsonl (what `tunewise sweep` uses). Cached
assets with a current version stamp are left alone; prints the base's build facts (held-out perplexity).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

from runners.demo.assets import STAMP, ensure_assets


def main(argv: list[str]) -> int:
    model_dir = argv[0] if argv else "outputs/demo/base"
    data_file = argv[1] if len(argv) > 1 else "outputs/demo/data/train.jsonl"
    ensure_assets(model_dir, data_file)
    print(json.dumps(json.loads((Path(model_dir) / STAMP).read_text()), indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
