"""The commands behind `tunewise`: each composes its config once and calls one plain function."""

from __future__ import annotations

import json
import sys
from pathlib import Path

from advisor.config import catalog
from advisor.config.schema import RunConfig
from advisor.errors import ConfigError
from sweep.compose import compose, given_keys

HELP = {
    "advise": (
        "tunewise advise [overrides]\n\n"
        "Estimate memory (allocated / reserved / device GiB), time, cost and fit for full, LoRA and QLoRA\n"
        "(or only `method=`), per-method minimum GPU count, the cheapest catalog GPU per method, the\n"
        "largest seq_len / micro-batch that fit, and a budget verdict. Defaults: model=llama-3.1-8b,\n"
        "gpu=a100-80gb, data.rows=10000, data.avg_tokens=512. `format=json` prints one JSON document;\n"
        "`breakdown=true` adds the memory components; `data.path=FILE` sizes the run from your data."
    ),
    "sweep": (
        "tunewise sweep [overrides]\n\n"
        "Run (or resume) the matrix `matrix=` in sweep.dir: the advisor prices every cell first, cells that\n"
        "cannot fit or would break budget.usd/budget.hours are skipped with reasons, the rest run one\n"
        "process per cell under Optuna with pruning. With no overrides: the CPU demo."
    ),
    "data": (
        "tunewise data check [overrides]    problems (with line numbers) and token statistics of data.path\n"
        "tunewise data prepare [overrides]  write a cleaned, deduplicated, seeded train/validation split\n"
        "                                   to data.out_dir (default outputs/data/<name>) with a manifest\n"
        "exit status: 0 clean (warnings alone: 0) · 1 problems found · 2 bad input"
    ),
    "report": "tunewise report SWEEP_DIR\n\nRebuild report.md / report.html of a finished or running sweep and print its summary.",
}


def _wants_help(args: list[str]) -> bool:
    return any(a in ("-h", "--help") for a in args)


def _print_help(cmd: str) -> None:
    print(HELP[cmd])
    if cmd != "report":
        print(
            "\nKeys (conf/config.yaml; groups: "
            + ", ".join(
                f"{g}=<{'|'.join(catalog.option_names(g)[:6])}{'|…' if len(catalog.option_names(g)) > 6 else ''}>"
                for g in ("model", "method", "gpu", "matrix")
            )
            + "):\n"
        )
        print((catalog.conf_dir() / "config.yaml").read_text())


def _split_format(args: list[str]) -> tuple[list[str], str]:
    fmt = "rich"
    for a in args:
        if a.startswith("format="):
            fmt = a.split("=", 1)[1]
    if fmt not in ("rich", "json"):
        raise ConfigError(f"format={fmt!r}: unknown output format (allowed: rich, json)")
    return args, fmt


def advise_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("advise")
        return 0
    args, fmt = _split_format(args)
    d = compose("advise", args)
    given = given_keys(args)
    cfg = RunConfig.from_dict(d)
    methods = (cfg.method.name,) if "method" in given else ("full", "lora", "qlora")
    from advisor.estimator.advise import advise

    tracer = None
    if cfg.advisor_mode == "trace":  # runners (torch) only when asked for: `import advisor` stays torch-free
        from runners.trace.tracer import trace_row as tracer
    doc = advise(cfg, methods=methods, given=given, tracer=tracer)
    if fmt == "json":
        print(json.dumps(doc, indent=2))
    else:
        from advisor.estimator.render import render_advise

        render_advise(doc, breakdown=bool(d.get("breakdown")))
    return 0


def sweep_cmd(args: list[str]) -> int:
    if _wants_help(args):
        _print_help("sweep")
        return 0
    from sweep.run import run_sweep

    return run_sweep(compose("config", args), args)


def report_cmd(args: list[str]) -> int:
    if _wants_help(args) or len(args) != 1:
        _print_help("report")
        return 0 if _wants_help(args) else 2
    sweep_dir = Path(args[0])
    if not (sweep_dir / "trials").is_dir():
        raise ConfigError(f"SWEEP_DIR={str(sweep_dir)!r}: not a sweep directory (no trials/ folder)")
    from reports.build import build_report

    paths = build_report(sweep_dir, print_summary=True)
    for p in paths:
        print(f"wrote {p}", file=sys.stderr)
    return 0


def data_cmd(args: list[str]) -> int:
    if _wants_help(args) or not args or args[0] not in ("check", "prepare"):
        _print_help("data")
        return 0 if _wants_help(args) else 2
    sub, rest = args[0], args[1:]
    rest, fmt = _split_format(rest)
    d = compose("advise", rest)
    cfg = RunConfig.from_dict(d)
    from advisor.data.command import run_data_command

    return run_data_command(sub, cfg, fmt=fmt)
