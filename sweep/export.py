"""`tunewise export SWEEP_DIR to=axolotl|llamafactory|trl [cell=ID] [out=FOLDER]`.

Writes the recommended cell (the report's pick: reports.recommend via reports.context) — or the
named one — as a config for the user's own trainer: every setting the cell ran with, the learning
rate the sweep settled on, the data path; plus the command that runs it and a `tunewise advise
from=…` command that gives the cell's estimate back. That check command is computed, not hoped for:
the exported file is read back here, and every setting the file cannot say (the card, the GPU count,
tunewise-only keys) is added to it as an override; `check_overrides` lists them.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from advisor.config.trainers import TOOLS
from advisor.config.trainers.written import Export
from advisor.errors import ConfigError
from sweep.compose import compose, flatten
from sweep.fromfile import expand, hydra_value

KEYS = ("to", "cell", "out")
USAGE = "tunewise export SWEEP_DIR to=axolotl|llamafactory|trl [cell=ID] [out=FOLDER]"
# keys that never change an estimate, or that name the same file differently (compared resolved)
IGNORED = ("notes", "resolved", "price.", "gpu.prices", "model.name", "model.config_path", "data.out_dir")
PATHS = ("model.path", "data.path", "data.val_path")


def parse(args: list[str]) -> tuple[Path, dict[str, str]]:
    where = [a for a in args if "=" not in a]
    if len(where) != 1:
        raise ConfigError(f"SWEEP_DIR: {USAGE} takes one sweep folder (got {len(where)})")
    opts: dict[str, str] = {}
    for a in args:
        if "=" in a:
            k, _, v = a.partition("=")
            if k not in KEYS:
                raise ConfigError(f"{a}: unknown key {k!r} (allowed: {', '.join(KEYS)})")
            opts[k] = v
    if opts.get("to") not in TOOLS:
        raise ConfigError(f"to={opts.get('to')!r}: which trainer to write for (allowed: {', '.join(TOOLS)})")
    sweep_dir = Path(where[0])
    if not (sweep_dir / "trials").is_dir():
        raise ConfigError(f"SWEEP_DIR={str(sweep_dir)!r}: not a sweep directory (no trials/ folder)")
    return sweep_dir, opts


def chosen(sweep_dir: Path, cell: str | None) -> tuple[str, RunConfig, str]:
    """(cell id, its config with the learning rate the sweep settled on, why this cell)."""
    from reports.context import build_context
    from reports.records import load

    sweep = load(sweep_dir)
    by_id = sweep.by_id
    if cell:
        rec = by_id.get(cell)
        if rec is None or not rec.config:
            raise ConfigError(
                f"cell={cell!r}: no such cell with a config in {sweep_dir} (cells: {', '.join(sorted(by_id))})"
            )
        lr, why = rec.lr, f"cell {cell} (named)"
    else:
        ctx = build_context(sweep, sweep_dir / "plots")
        pick = ctx.rec.pick
        found = next((c for c, r in ctx.pairs if r is pick), None)
        if pick is None or found is None or not found.chosen_ids:
            raise ConfigError(
                f"SWEEP_DIR={str(sweep_dir)!r}: no recommended cell yet (no complete cell); name one with cell=ID"
            )
        cell = found.chosen_ids[0]
        rec = by_id[cell]
        lr = found.lr if found.lr is not None else rec.lr
        why = f"the report's recommendation: {pick.label}"
    assert rec.config is not None  # a named cell without one was refused above; a picked one ran
    cfg = RunConfig.from_dict(rec.config)
    if lr is not None:
        cfg = cfg.replace(train={"lr": float(lr)})
    return cell, cfg, why


def resolved_format(cfg: RunConfig) -> RunConfig:
    """`data.format=auto` made the format the rows have (the first readable row's)."""
    if cfg.data.format != "auto" or not cfg.data.path:
        return cfg
    from advisor.data.dataset import iter_examples

    for _, ex, _ in iter_examples(cfg.data.path, cfg.data):
        if ex is not None:
            return cfg.replace(data={"format": str(ex.kind)})
    return cfg


def messages_jsonl(cfg: RunConfig) -> str:
    """data.path's rows as chat `messages` JSONL (what tunewise trains on: an instruction row becomes a
    user turn and an assistant turn), for trainers that read chat rows only."""
    from advisor.data.dataset import iter_examples

    assert cfg.data.path is not None
    lines = []
    for _, ex, _ in iter_examples(cfg.data.path, cfg.data):
        if ex is not None:
            msgs = [{"role": role, "content": content} for role, content in ex.messages]
            lines.append(json.dumps({"messages": msgs}, ensure_ascii=False))
    return "\n".join(lines) + "\n"


def _flat(cfg: RunConfig) -> dict[str, Any]:
    d = flatten(cfg.to_dict())
    d["train.lr"] = cfg.lr  # the effective rate, whichever key set it
    d["data.format"] = resolved_format(cfg).data.format  # `auto` is the format the rows have
    for k in PATHS:
        if d.get(k):
            d[k] = str(Path(d[k]).expanduser().resolve()) if Path(d[k]).expanduser().exists() else d[k]
    return {k: v for k, v in d.items() if not k.startswith(IGNORED) and not k.startswith(("train.lr_",))}


def check_overrides(cfg: RunConfig, config_file: Path, data_copy: bool = False) -> list[str]:
    """Overrides that, with from=config_file, build `cfg` again: the card, the count, and whatever
    else the file cannot say. `data_copy`: the file names the data reshaped (its path and format
    differ by design; the estimate must not)."""
    base = [f"gpu={cfg.gpu.name}"]
    if cfg.gpu.count > 1:
        base.append(f"gpu.count={cfg.gpu.count}")
    if cfg.price.tier == "override":
        base.append(f"gpu.usd_per_hour={cfg.price.usd_per_gpu_hour}")
    extra: list[str] = []
    want = _flat(cfg)
    if data_copy:
        want = {
            k: v
            for k, v in want.items()
            if k not in ("data.path", "data.format") and not k.startswith("data.fields.")
        }
    for _ in range(3):  # a group override (model=…) can bring more keys along: settle in a few rounds
        args, _src = expand([f"from={config_file}", *base, *extra])
        got = _flat(RunConfig.from_dict(compose("advise", args)))
        diff = [k for k in want if got.get(k) != want[k]]
        if not diff:
            return base + extra
        extra += [
            f"{k}={hydra_value(want[k])}" for k in diff if not any(e.startswith(f"{k}=") for e in extra)
        ]
    return base + extra


def write(sweep_dir: Path, opts: dict[str, str]) -> dict[str, Any]:
    """Write the export; return what was written and the commands (also what the CLI prints)."""
    cell, cfg, why = chosen(sweep_dir, opts.get("cell"))
    tool = opts["to"]
    folder = Path(opts.get("out") or sweep_dir / "export")
    folder.mkdir(parents=True, exist_ok=True)
    name = f"{tool}-{cell}"
    exp: Export = TOOLS[tool].export(resolved_format(cfg), name, folder)
    if exp.messages_file:
        exp.files[exp.messages_file] = messages_jsonl(cfg)
    paths = []
    for fname, text in exp.files.items():
        p = folder / fname
        if fname == "dataset_info.json" and p.is_file():  # several exports share LLaMA-Factory's index
            try:
                merged = {**json.loads(p.read_text()), **json.loads(text)}
                text = json.dumps(merged, indent=2) + "\n"
            except ValueError:
                pass
        p.write_text(text)
        paths.append(p)
    config_file = folder / exp.main
    check = check_overrides(cfg, config_file, exp.messages_file is not None)
    tool_keys = [o for o in check if not o.startswith(("gpu=", "gpu.count=", "gpu.usd_per_hour="))]
    return {
        "cell": cell,
        "why": why,
        "tool": tool,
        "files": [str(p) for p in paths],
        "config": str(config_file),
        "run": exp.command.format(config=shlex.quote(str(config_file))),
        "check": "tunewise advise " + " ".join(shlex.quote(a) for a in [f"from={config_file}", *check]),
        "not_in_file": tool_keys,
        "notes": [
            *exp.notes,
            f"data.rows={cfg.data.rows}: the trainer takes the first rows of the file; tunewise took them "
            "from a seeded shuffle after carving its validation rows",
        ],
    }


def export_cmd(args: list[str]) -> int:
    sweep_dir, opts = parse(args)
    out = write(sweep_dir, opts)
    print(f"exported {out['why']} (cell {out['cell']}) for {out['tool']}:", file=sys.stderr)
    for p in out["files"]:
        print(f"wrote {p}", file=sys.stderr)
    for n in out["notes"]:
        print(f"note: {n}", file=sys.stderr)
    if out["not_in_file"]:
        print(
            f"note: {out['tool']} has no place for {', '.join(out['not_in_file'])} (tunewise settings)",
            file=sys.stderr,
        )
    print(f"run:   {out['run']}")
    print(f"check: {out['check']}")
    return 0
