"""`tunewise` — thin entry point: parse the command, compose the config once, call one function.

Logs go to stderr; stdout carries only the command's output (with `format=json`, exactly one JSON
document).
"""

from __future__ import annotations

import logging
import os
import sys

from advisor.errors import ConfigError

USAGE = """\
usage: tunewise COMMAND [key=value ...]

Which fine-tuning method (full, LoRA, QLoRA), rank and GPU fits your model, data and budget —
estimated before you spend, then measured.

commands:
  advise [overrides]        compare methods/ranks/GPUs: memory, time, cost, fit, budget
  sweep  [overrides]        run (or resume) the sweep of a matrix in sweep.dir
  report SWEEP_DIR          rebuild the recommendation report of a finished or running sweep
  data check|prepare [...]  check a dataset (problems, token statistics) / write a cleaned split
  export SWEEP_DIR to=TOOL  write the recommended cell as an axolotl, LLaMA-Factory or TRL config

Every command takes Hydra overrides (key=value, group=option), e.g.
  tunewise advise model=llama-3.1-70b data.rows=20000 budget.usd=100
  tunewise advise model=qwen2.5-7b gpu=rtx-4090 method=qlora train.seq_len=4096 format=json
  tunewise sweep matrix=method_rank_size model.path=/models/llama-3.2-1b gpu=a100-80gb data.path=train.jsonl
  tunewise advise from=axolotl.yaml gpu=rtx-4090          # your trainer's config, estimated
Run `tunewise COMMAND --help` for a command's keys.
"""


def _fail(e: ConfigError, header: str = "tunewise: bad input:", code: int = 2) -> int:
    print(header, file=sys.stderr)
    for p in e.problems:
        print(f"  - {p}", file=sys.stderr)
    return code


def main(argv: list[str] | None = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    if not argv or argv[0] in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    cmd, rest = argv[0], argv[1:]
    from runners import offline

    offline.configure(True)  # until a command's config says `offline=false`: nothing loads from the Hub
    from sweep.commands import COMMANDS

    if cmd not in COMMANDS:
        print(f"tunewise: unknown command {cmd!r} (allowed: {', '.join(COMMANDS)})\n", file=sys.stderr)
        print(USAGE, file=sys.stderr)
        return 2
    from sweep.errors import DISK_FULL, DiskFull, disk_full

    try:
        return COMMANDS[cmd](rest)
    except DiskFull as e:
        return _fail(e, "tunewise: stopped:", 1)
    except ConfigError as e:
        return _fail(e)
    except BrokenPipeError:  # `tunewise advise --help | head`: the reader left
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 0
    except OSError as e:  # a folder or file the user named that cannot be written, or a full disk
        where = e.filename or "a file tunewise writes"
        if e.errno in DISK_FULL:
            return _fail(disk_full(str(where), e.strerror or str(e)), "tunewise: stopped:", 1)
        if e.filename is None or not isinstance(
            e, (PermissionError, IsADirectoryError, NotADirectoryError, FileExistsError)
        ):
            raise
        return _fail(
            ConfigError(f"{where}: {e.strerror} (tunewise needs to write there; choose another path)")
        )
    except KeyboardInterrupt:
        print("tunewise: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
