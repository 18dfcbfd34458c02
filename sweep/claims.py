"""Which worker runs which cell: one row per cell in a small table beside Optuna's, claimed atomically.

Why a table of our own: Optuna's ask/tell gives no atomic "take this grid point" operation (creating a
trial and then setting a user attr is two writes another worker can interleave). Here every cell has
one row `tunewise_cells(study, cell_id)` with a `version` counter, and every state change is a
compare-and-swap: `UPDATE … SET …, version = version + 1 WHERE study = ? AND cell_id = ? AND
version = <the version we read>`. Exactly one concurrent writer sees rowcount 1; the others see 0 and
move on. A single conditional UPDATE is atomic in SQLite (one writer at a time) and in PostgreSQL (row
lock, the WHERE re-checked after the first commit), so the same code works on any storage URL Optuna
takes, across processes and machines, without file locks.

The row also carries the owner (host, pid), a heartbeat (unix seconds, refreshed while the cell runs),
attempts and deaths (for the retry-once rule) and the spend (estimate while running, measured when
done) that the budget check sums across all workers.
"""

from __future__ import annotations

import os
import socket
import time
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa

TERMINAL = ("complete", "pruned", "infeasible", "over_budget", "failed", "oom")

_meta = sa.MetaData()
cells_table = sa.Table(
    "tunewise_cells",
    _meta,
    sa.Column("study", sa.String(512), primary_key=True),
    sa.Column("cell_id", sa.String(64), primary_key=True),
    sa.Column("status", sa.String(32), nullable=False),  # pending | running | a TERMINAL status
    sa.Column("host", sa.String(255)),
    sa.Column("pid", sa.Integer),
    sa.Column("heartbeat", sa.Float),  # unix seconds of the owner's last sign of life
    sa.Column("attempts", sa.Integer, nullable=False, default=0),  # runs started (Optuna trials)
    sa.Column("deaths", sa.Integer, nullable=False, default=0),  # attempts whose process died
    sa.Column("trial_number", sa.Integer),  # the Optuna trial of the current attempt
    sa.Column("usd", sa.Float),  # estimate while running, measured once terminal
    sa.Column("wall_s", sa.Float),  # measured wall-clock seconds once terminal
    sa.Column("version", sa.Integer, nullable=False, default=0),
)


@dataclass(frozen=True)
class Row:
    cell_id: str
    status: str
    host: str | None
    pid: int | None
    heartbeat: float | None
    attempts: int
    deaths: int
    trial_number: int | None
    usd: float | None
    wall_s: float | None
    version: int

    @property
    def terminal(self) -> bool:
        return self.status in TERMINAL


def me() -> tuple[str, int]:
    return socket.gethostname(), os.getpid()


def pid_alive(pid: int | None) -> bool:
    if not pid:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def driver_url(url: str) -> str:
    """`postgresql://` with the driver that is installed (SQLAlchemy 2.1 defaults to psycopg 3; the
    `postgres` extra installs psycopg2-binary)."""
    if url.startswith(("postgresql://", "postgres://")):
        import importlib.util

        if importlib.util.find_spec("psycopg") is None and importlib.util.find_spec("psycopg2") is not None:
            return "postgresql+psycopg2://" + url.split("://", 1)[1]
    return url


def make_engine(url: str) -> sa.Engine:
    url = driver_url(url)
    if url.startswith("sqlite"):
        return sa.create_engine(url, connect_args={"timeout": 60})
    return sa.create_engine(url, pool_pre_ping=True)


class Claims:
    """The cells table of one study."""

    def __init__(self, url: str, study: str):
        self.study = study
        self.engine = make_engine(url)
        for i in range(5):  # several workers creating the table at once race on first run
            try:
                _meta.create_all(self.engine, checkfirst=True)
                break
            except sa.exc.DBAPIError:
                if i == 4:
                    raise
                time.sleep(0.5 * (i + 1))

    def ensure(self, cell_ids: list[str]) -> None:
        """Insert a pending row for every cell not yet known (idempotent, safe under concurrency)."""
        known = set(self.rows())
        for cid in cell_ids:
            if cid in known:
                continue
            try:
                with self.engine.begin() as c:
                    c.execute(
                        cells_table.insert().values(
                            study=self.study, cell_id=cid, status="pending", attempts=0, deaths=0, version=0
                        )
                    )
            except sa.exc.IntegrityError:
                pass  # another worker inserted it first

    def rows(self) -> dict[str, Row]:
        t = cells_table
        with self.engine.connect() as c:
            res = c.execute(sa.select(t).where(t.c.study == self.study)).mappings().all()
        return {r["cell_id"]: Row(**{k: r[k] for k in Row.__dataclass_fields__}) for r in res}

    def get(self, cell_id: str) -> Row | None:
        return self.rows().get(cell_id)

    def cas(self, row: Row, **values: Any) -> bool:
        """Apply `values` to the cell only if nobody changed it since `row` was read."""
        t = cells_table
        stmt = (
            t.update()
            .where(t.c.study == self.study, t.c.cell_id == row.cell_id, t.c.version == row.version)
            .values(version=row.version + 1, **values)
        )
        with self.engine.begin() as c:
            return c.execute(stmt).rowcount == 1

    def owner_update(self, cell_id: str, host: str, pid: int, **values: Any) -> None:
        """Update a cell this process owns (heartbeat, trial number); no version bump: owners only."""
        t = cells_table
        stmt = (
            t.update()
            .where(
                t.c.study == self.study,
                t.c.cell_id == cell_id,
                t.c.host == host,
                t.c.pid == pid,
                t.c.status == "running",
            )
            .values(**values)
        )
        with self.engine.begin() as c:
            c.execute(stmt)

    def dispose(self) -> None:
        self.engine.dispose()


def is_dead(row: Row, timeout_s: float, now: float | None = None) -> bool:
    """A running cell whose owner is gone: heartbeat older than timeout_s and, on this host, pid gone."""
    if row.status != "running":
        return False
    now = time.time() if now is None else now
    stale = row.heartbeat is None or now - row.heartbeat > timeout_s
    host, _ = me()
    if row.host == host:
        return stale and not pid_alive(row.pid)
    return stale


def maybe_dead(row: Row) -> bool:
    """Running on this host with its pid gone, heartbeat not yet stale: wait for the timeout."""
    host, _ = me()
    return row.status == "running" and row.host == host and not pid_alive(row.pid)
