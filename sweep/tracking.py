"""`tracking=` and `tracking_uri=` for `tunewise sweep`: checked once, handed to every runner.

The runners (runners/tracking.py) read them from TUNEWISE_TRACKING, which worker processes and runner
processes inherit — as `offline` reaches them through TUNEWISE_OFFLINE. With `tracking=mlflow` the
MLflow store and the sweep's experiment are opened here first, so a missing package or a bad URI is
one clear message before any cell runs. The default store is MLflow's own default, a local SQLite
file (MLflow 3 no longer writes its file store `./mlruns` unless MLFLOW_ALLOW_FILE_STORE=true),
placed in the sweep's folder: `sqlite:///<sweep.dir>/mlflow.db`.
"""

from __future__ import annotations

import importlib.util
import json
import os
from pathlib import Path
from typing import Any

from advisor.errors import ConfigError, Problems
from runners.tracking import ENV

TRACKINGS = ("tensorboard", "mlflow", "none")
INSTALL = "pip install -e '.[tracking]' (or pip install mlflow-skinny)"


def default_uri(sweep_dir: Path) -> str:
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{sweep_dir.resolve() / 'mlflow.db'}"


def configure(d: dict[str, Any], p: Problems) -> None:
    """Check the keys, open the MLflow experiment when asked, set TUNEWISE_TRACKING for the runners."""
    to, uri = d.get("tracking", "tensorboard"), d.get("tracking_uri")
    if to not in TRACKINGS:
        p.add("tracking", to, "unknown tracking", TRACKINGS)
        return
    if uri is not None and not isinstance(uri, str):
        p.add("tracking_uri", uri, "must be an MLflow tracking URI (text) or null")
        return
    from sweep.settings import settings_from

    try:
        settings = settings_from(d)
    except ConfigError:  # the sweep reports its own settings' problems
        return
    matrix = d.get("matrix") or {}
    axes = list(matrix.get("axes") or {})
    if settings.seeds > 1:
        axes.append("seed")
    if settings.lr_trials > 1:
        axes.append("train.lr")
    s: dict[str, Any] = {"to": to, "sweep": str(settings.dir.resolve()), "axes": axes}
    if to == "mlflow":
        if importlib.util.find_spec("mlflow") is None:
            p.add(
                "tracking",
                to,
                f"needs the mlflow package, which is not installed: {INSTALL}; or tracking=tensorboard",
            )
            return
        s.update(uri=uri or default_uri(settings.dir), experiment=settings.dir.name)
        if not settings.dry_run:
            problem = open_experiment(s["uri"], s["experiment"], settings.dir)
            if problem:
                p.add("tracking_uri", s["uri"], problem)
                return
    os.environ[ENV] = json.dumps(s)


def open_experiment(uri: str, name: str, sweep_dir: Path) -> str | None:
    """Create the store and the experiment now (None), or say why it cannot be opened."""
    try:
        if uri.startswith("sqlite:///"):
            Path(uri.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        if uri.startswith("file:"):
            os.environ.setdefault("MLFLOW_ALLOW_FILE_STORE", "true")  # asked for by the user
        from mlflow import MlflowClient

        client = MlflowClient(tracking_uri=uri)
        if client.get_experiment_by_name(name) is None:
            client.create_experiment(name, tags={"tunewise.sweep": str(sweep_dir.resolve())})
    except Exception as e:  # MLflow's errors: a bad scheme, an unreachable server, a locked database
        first = (str(e).splitlines() or [type(e).__name__])[0]
        return f"cannot open the MLflow store ({type(e).__name__}: {first[:300]})"
    return None
