"""The commands behind `tunewise`: each composes its config once and calls one plain function."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

from advisor.config import catalog
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError, Problems
from runners import offline
from sweep import fromfile, tracking
from sweep.compose import compose, documented_defaults, given_keys, override_value

HELP = {
    "advise": (
        "tunewise advise [overrides]\n\n"
        "Estimate memory (allocated / reserved / device GiB), time, cost and fit for full, LoRA and QLoRA\n"
        "(or only `method=`), per-method minimum GPU count, the cheapest catalog GPU per method, the\n"
        "largest seq_len / micro-batch that fit, and a budget verdict. `format=json` prints one JSON\n"
        "document; `breakdown=true` adds the memory components; `data.path=FILE` sizes the run from your data."
    ),
    "sweep": (
        "tunewise sweep [overrides]\n\n"
        "Run (or resume) the matrix `matrix=` in sweep.dir: the advisor prices every cell first, cells that\n"
        "cannot fit or would break budget.usd/budget.hours are skipped with reasons, the rest run one\n"
        "process per cell under Optuna with pruning. With no overrides: the CPU demo. A real model\n"
        "(model.path) needs its data: data.path=FILE."
    ),
    "data": (
        "tunewise data check [overrides]    problems (with line numbers) and token statistics of data.path\n"
        "tunewise data prepare [overrides]  write a cleaned, deduplicated, seeded train/validation split\n"
        "                                   to data.out_dir (default outputs/data/<name>) with a manifest\n"
        "exit status: 0 clean (warnings alone: 0) · 1 problems found · 2 bad input"
    ),
    "report": "tunewise report SWEEP_DIR\n\nRebuild report.md / report.html of a finished or running sweep and print its summary.",
    "export": (
        "tunewise export SWEEP_DIR to=axolotl|llamafactory|trl [cell=ID] [out=FOLDER]\n\n"
        "Write the recommended cell (or cell=ID) as a config for that trainer (every setting the cell ran\n"
        "with, the sweep's learning rate, the data path) into out (default SWEEP_DIR/export), and print\n"
        "the command that runs it and the `tunewise advise from=…` command that gives its estimate back."
    ),
}
# The primary config each command composes (conf/<name>.yaml) and the sections its --help leaves out.
CONFIG = {"advise": "advise", "sweep": "config", "data": "advise"}
NOT_READ = {
    "advise": ("sweep.", "matrix.", "tracking"),
    "data": ("sweep.", "matrix.", "tracking", "from"),
    "sweep": (),
}
OUTPUT_FORMATS = ("rich", "json")  # `format=`
DATA_SUBCOMMANDS = ("check", "prepare")


def _wants_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in args)


def _shown(key: str, value: Any) -> str:
    if key == "gpu.prices":  # one row per provider, not the whole catalog entry
        rows = ", ".join(f"{r['provider']} {r['usd_per_gpu_hour']}" for r in value)
        return f"[{rows}]  # USD per GPU-hour (per core when per_core); price.provider=NAME picks one"
    return override_value(value)


def _print_help(cmd: str) -> None:
    print(HELP[cmd])
    if cmd not in CONFIG:
        return
    print("\nGroups (group=option):")
    for g in ("model", "method", "gpu", "data", "matrix"):
        names = catalog.option_names(g)
        print(f"  {g}=<{'|'.join(names[:8])}{'|…' if len(names) > 8 else ''}>")
    print(f"\nKeys with their defaults (conf/{CONFIG[cmd]}.yaml composed; change any with key=value):\n")
    for key, value, doc in documented_defaults(CONFIG[cmd]):
        if key.startswith(NOT_READ[cmd]):
            continue
        shown = _shown(key, value)
        print(f"  {key}={shown}" + (f"  # {doc}" if doc and "  # " not in shown else ""))


def _offline(d: dict[str, Any], p: Problems) -> None:
    """`offline` (true by default): this process and the runners it starts download nothing."""
    value = d.get("offline", True)
    if not isinstance(value, bool):
        p.add("offline", value, "must be true (no downloads) or false (Hub and kernel downloads allowed)")
        return
    offline.configure(value)


def _load(config_name: str, args: list[str]) -> tuple[dict[str, Any], RunConfig]:
    """Compose, check the output keys and build the RunConfig: every problem in one ConfigError."""
    d = compose(config_name, args)
    p = Problems()
    _offline(d, p)
    if d.get("format") not in OUTPUT_FORMATS:
        p.add("format", d.get("format"), "unknown output format", OUTPUT_FORMATS)
    if not isinstance(d.get("breakdown"), bool):
        p.add("breakdown", d.get("breakdown"), "must be true or false")
    cfg = None
    try:
        cfg = RunConfig.from_dict(d)
    except ConfigError as e:
        p.extend(e.problems)
    p.raise_if_any()
    assert cfg is not None  # else a problem was raised above
    return d, cfg


def advise_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("advise")
        return 0
    args, source = fromfile.expand(args)  # from=PATH: a trainer config's settings, the command line's on top
    d, cfg = _load(CONFIG["advise"], args)
    given = given_keys(args)
    methods = (cfg.method.name,) if "method" in given else ("full", "lora", "qlora")
    from advisor.estimator.advise import advise

    tracer: Callable[[RunConfig], dict[str, Any]] | None = None
    if cfg.advisor_mode == "trace":  # runners (torch) only when asked for: `import advisor` stays torch-free
        from runners.trace.tracer import trace_row

        tracer = trace_row
    doc = advise(cfg, methods=methods, given=given, tracer=tracer)
    if source is not None:
        doc["query"].update(source=source.to_dict(), notes=doc["query"]["notes"] + source.notes())
    if d["format"] == "json":
        print(json.dumps(doc, indent=2))
    else:
        from advisor.estimator.render import render_advise

        render_advise(doc, breakdown=d["breakdown"])
    return 0


def sweep_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("sweep")
        return 0
    from sweep.run import run_sweep

    args, source = fromfile.expand(args, fromfile.matrix_axes(args))
    d = compose(CONFIG["sweep"], args)
    p = Problems()
    _offline(d, p)
    tracking.configure(d, p)
    p.raise_if_any()
    if source is not None:
        fromfile.print_notes(source)
    return run_sweep(d, args)


def report_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("report")
        return 0
    if len(args) != 1:
        raise ConfigError(f"SWEEP_DIR: `tunewise report` takes one sweep folder (got {len(args)} arguments)")
    sweep_dir = Path(args[0])
    if not (sweep_dir / "trials").is_dir():
        raise ConfigError(f"SWEEP_DIR={str(sweep_dir)!r}: not a sweep directory (no trials/ folder)")
    from advisor.trials.store import read_records
    from reports.build import build_report

    paths = build_report(sweep_dir, print_summary=True)
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    unreadable = read_records(sweep_dir)[1]  # what build_report could neither read nor rebuild
    if unreadable:
        print("tunewise: the report leaves out cells whose records are unreadable:", file=sys.stderr)
        for u in unreadable:
            print(f"  - {sweep_dir / u}", file=sys.stderr)
        return 1
    return 0


def data_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("data")
        return 0
    if not args or args[0] not in DATA_SUBCOMMANDS:
        what = f"data {args[0]!r}: unknown subcommand" if args else "data: no subcommand"
        raise ConfigError(f"{what} (allowed: {', '.join(DATA_SUBCOMMANDS)})")
    d, cfg = _load(CONFIG["data"], args[1:])
    from advisor.data.command import run_data_command

    return run_data_command(args[0], cfg, fmt=d["format"])


def export_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("export")
        return 0
    from sweep.export import export_cmd as run_export

    return run_export(args)


COMMANDS: dict[str, Callable[[list[str]], int]] = {
    "advise": advise_cmd,
    "sweep": sweep_cmd,
    "report": report_cmd,
    "data": data_cmd,
    "export": export_cmd,
}
