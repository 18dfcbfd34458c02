"""Every cell's curves where people look: TensorBoard event files in its folder, and MLflow on request.

`attach(cfg, out_dir, hooks)` (one call in runners.cell.run_cell) wraps the caller's hooks. The step
loop only appends (step, loss, tokens, timing) to a list; the list is written every FLUSH_S seconds,
at every eval and at the end — so the loop does no I/O of its own. At the end (the `end` event,
after result.json is written) the measured peaks, throughput, wall time, dollars and the task metric
are logged, and the MLflow run is ended with the cell's status.

Settings come from the environment, as the sweep sets them (sweep/tracking.py; `tracking=` and
`tracking_uri=` in conf/config.yaml): TUNEWISE_TRACKING = JSON `{"to": "tensorboard" | "mlflow" |
"none", "uri": MLflow tracking URI, "experiment": name, "sweep": folder, "axes": [keys]}`; unset =
TensorBoard only. Scalars: train/loss, train/tokens, train/tokens_per_s (per step); eval/loss (per
eval); memory/*_gib, throughput/tokens_per_s, time/*_s, cost/usd, eval/<metric> (at the end).
A tracking backend that fails never fails the cell: a warning goes to stderr (OUT_DIR/runner.log).
"""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path
from typing import Any

from advisor.config.schema import RunConfig
from runners.hooks import Event, Hooks
from runners.result import Progress
from runners.tfevents import EventFile

ENV = "TUNEWISE_TRACKING"
FLUSH_S = 10.0
RUN_FILE = "mlflow_run.json"  # the cell's MLflow run id: a resumed cell logs into the same run
STATUS = {"complete": "FINISHED", "pruned": "KILLED", "oom": "FAILED", "failed": "FAILED"}
PARAM_SECTIONS = ("method", "train")  # logged whole, beside the keys below
PARAM_KEYS = (
    "model.name",
    "model.path",
    "data.path",
    "data.rows",
    "data.val_fraction",
    "gpu.name",
    "gpu.count",
    "parallel",
    "seed",
)


def settings() -> dict[str, Any]:
    raw = os.environ.get(ENV)
    if not raw:
        return {"to": "tensorboard"}
    try:
        s = json.loads(raw)
    except ValueError:
        s = {"to": raw}
    return s if isinstance(s, dict) else {"to": "tensorboard"}


def _warn(what: str, e: BaseException) -> None:
    print(f"tunewise tracking: {what}: {type(e).__name__}: {e}", file=sys.stderr)


def dotted(d: dict[str, Any], key: str) -> Any:
    cur: Any = d
    for part in key.split("."):
        if not isinstance(cur, dict) or part not in cur:
            return None
        cur = cur[part]
    return cur.get("name") if isinstance(cur, dict) else cur


def params(cfg: RunConfig) -> dict[str, str]:
    d = cfg.to_dict()
    out = {k: dotted(d, k) for k in PARAM_KEYS}
    for section in PARAM_SECTIONS:
        out.update({f"{section}.{k}": v for k, v in d[section].items()})
    out["train.lr"] = cfg.lr
    return {k: json.dumps(v) if isinstance(v, (list, dict)) else str(v) for k, v in out.items()}


def cell_params(cfg: RunConfig, axes: list[str]) -> dict[str, str]:
    """The cell's coordinates ({'method': 'lora', 'method.r': '16'}), from the sweep's axes."""
    d = {**cfg.to_dict(), "seed": cfg.seed}
    d["train"] = {**d["train"], "lr": cfg.lr}
    values = {k: dotted(d, k) for k in axes}
    return {
        k: json.dumps(v) if isinstance(v, (list, dict)) else str(v)
        for k, v in values.items()
        if v is not None
    }


def overrides(cfg: RunConfig, axes: list[str]) -> str:
    """The cell's coordinates as overrides (`method=lora method.r=16`)."""
    return " ".join(f"{k}={v}" for k, v in cell_params(cfg, axes).items())


def cell_name(out_dir: Path, sweep: str) -> str:
    """`<cell_id>` (or `<cell_id>/lr1`): the folder under the sweep's cells/."""
    try:
        return (
            str(out_dir.resolve().relative_to((Path(sweep) / "cells").resolve())) if sweep else out_dir.name
        )
    except ValueError:
        return out_dir.name


class MlflowRun:
    """One MLflow run per cell folder (resumed when the folder holds its id)."""

    def __init__(self, cfg: RunConfig, out_dir: Path, s: dict[str, Any]):
        from mlflow import MlflowClient

        if str(s.get("uri") or "").startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # the user asked for a file store
        self.client = MlflowClient(tracking_uri=s.get("uri"))
        name = str(s.get("experiment") or "tunewise")
        exp = self.client.get_experiment_by_name(name)
        exp_id = exp.experiment_id if exp is not None else self.client.create_experiment(name)
        saved = out_dir / RUN_FILE
        run_id = None
        if saved.is_file():
            run_id = json.loads(saved.read_text()).get("run_id")
        if run_id is None:
            sweep = str(s.get("sweep") or "")
            cell = cell_name(out_dir, sweep)
            tags = {
                "tunewise.sweep": sweep,
                "tunewise.cell": cell,
                "tunewise.overrides": overrides(cfg, list(s.get("axes") or [])),
            }
            run = self.client.create_run(exp_id, run_name=cell, tags=tags)
            run_id = run.info.run_id
            saved.write_text(json.dumps({"run_id": run_id, "uri": s.get("uri")}))
            from mlflow.entities import Param

            values = {**params(cfg), **cell_params(cfg, list(s.get("axes") or []))}
            self.client.log_batch(run_id, params=[Param(k, v[:6000]) for k, v in values.items()])
        self.run_id = run_id

    def log(self, rows: list[tuple[int, float, dict[str, float]]]) -> None:
        from mlflow.entities import Metric

        metrics = [
            Metric(k, float(v), int(wall * 1000), step)
            for step, wall, values in rows
            for k, v in values.items()
            if v is not None
        ]
        for i in range(0, len(metrics), 1000):  # MLflow takes at most 1000 metrics per batch
            self.client.log_batch(self.run_id, metrics=metrics[i : i + 1000])

    def end(self, status: str) -> None:
        self.client.set_tag(self.run_id, "tunewise.status", status)
        self.client.set_terminated(self.run_id, STATUS.get(status, "FAILED"))


class Tracker:
    def __init__(self, cfg: RunConfig, out_dir: Path, s: dict[str, Any]):
        self.out_dir = out_dir
        self.pending: list[tuple[int, float, dict[str, float]]] = []  # (step, unix time, scalars)
        self.steps: list[tuple[int, float | None, int, int, float, float]] = []
        self.last = time.monotonic()
        self.tb: EventFile | None = None
        self.mlflow: MlflowRun | None = None
        try:
            self.tb = EventFile(out_dir)
        except OSError as e:
            _warn(f"no TensorBoard events in {out_dir}", e)
        if s.get("to") == "mlflow":
            try:
                self.mlflow = MlflowRun(cfg, out_dir, s)
            except Exception as e:  # a missing package, an unreachable server: the cell runs on
                _warn("no MLflow run for this cell", e)

    def step(self, p: Progress) -> None:
        """After every optimizer step: remember it (the loop does no I/O here but every FLUSH_S)."""
        self.steps.append((p.step, p.loss, p.train_tokens, p.timed_tokens, p.timed_s, time.time()))
        if time.monotonic() - self.last >= FLUSH_S:
            self.flush()

    def event(self, ev: Event) -> None:
        if ev["type"] == "eval":
            self.flush()
            self.pending.append((ev["step"], time.time(), {"eval/loss": ev["eval_loss"]}))
            self.flush()
        elif ev["type"] == "end":
            self.flush()
            self.finish(ev["status"])

    def flush(self) -> None:
        self.last = time.monotonic()
        for step, loss, tokens, timed_tokens, timed_s, wall in self.steps:
            values: dict[str, float] = {"train/tokens": float(tokens)}
            if loss is not None:
                values["train/loss"] = loss
            if timed_s:
                values["train/tokens_per_s"] = timed_tokens / timed_s
            self.pending.append((step, wall, values))
        self.steps.clear()
        rows, self.pending = self.pending, []
        if self.tb is not None:
            for step, wall, values in rows:
                self.tb.scalars(step, values, wall)
            self.tb.flush()
        if self.mlflow is not None and rows:
            try:
                self.mlflow.log(rows)
            except Exception as e:
                _warn("MLflow logging failed", e)

    def finish(self, status: str) -> None:
        """The cell's measurements (result.json, just written) as scalars at its last step."""
        try:
            m = (json.loads((self.out_dir / "result.json").read_text()) or {}).get("measured") or {}
        except (OSError, ValueError):
            m = {}
        values: dict[str, float] = {
            f"memory/{k}": m[k]
            for k in ("allocated_gib", "reserved_gib", "device_gib", "rss_gib")
            if m.get(k) is not None
        }
        if m.get("tokens_per_s") is not None:
            values["throughput/tokens_per_s"] = m["tokens_per_s"]
        values.update({f"time/{k}_s": v for k, v in (m.get("wall_s") or {}).items()})
        if m.get("usd") is not None:
            values["cost/usd"] = m["usd"]
        if m.get("metric") is not None:
            values[f"eval/{m.get('metric_name') or 'metric'}"] = m["metric"]
        self.pending.append((int(m.get("steps") or 0), time.time(), values))
        self.flush()
        if self.tb is not None:
            self.tb.close()
        if self.mlflow is not None:
            try:
                self.mlflow.end(status)
            except Exception as e:
                _warn("MLflow could not end the run", e)


def attach(cfg: RunConfig, out_dir: Path, hooks: Hooks) -> Hooks:
    """`hooks` with the cell's tracking added (unchanged with tracking `none`)."""
    s = settings()
    if s.get("to") == "none":
        return hooks
    t = Tracker(cfg, out_dir, s)

    def emit(ev: Event) -> None:
        if hooks.emit is not None:
            hooks.emit(ev)
        t.event(ev)

    def on_step(p: Progress) -> None:
        if hooks.on_step is not None:
            hooks.on_step(p)
        t.step(p)

    return Hooks(control=hooks.control, emit=emit, on_step=on_step, keepalive=hooks.keepalive)
