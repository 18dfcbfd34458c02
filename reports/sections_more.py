"""Report sections 5 and 7: skipped and failed cells, reproducibility."""

from __future__ import annotations

from typing import Any

import yaml

from reports.context import Context
from reports.doc import Block, Bullets, Code, Heading, Para, Table
from reports.fmt import DASH, gib, label, pct, scrub, scrub_data, shq, strip_password, usd
from reports.records import dig, num
from reports.tables import value

SKIPPED_COLUMNS = {
    "measured.last_eval.fraction": "frac",
    "measured.last_eval.loss": "loss",
    "estimate.memory.device_gib": "dev",
    "estimate.cost.usd": "cost",
}
KEEP = ("method", "r", "rows", "extra", "seed", "configuration", "status", "reason", "attempts")


def skipped(ctx: Context) -> list[Block]:
    out: list[Block] = [Heading("Skipped and failed cells")]
    rows = []
    several = {c.configuration: c.trials > 1 for c in ctx.cells}
    recs = ctx.records.rename(columns=SKIPPED_COLUMNS)
    recs = recs[recs["status"] != "complete"]
    for t in recs[[*KEEP, *SKIPPED_COLUMNS.values()]].itertuples(index=False):
        name = label(str(t.method), value(t.r), value(t.rows), str(t.extra or "")) + (
            f" · seed {value(t.seed)}" if several[str(t.configuration)] else ""
        )
        frac, loss = value(t.frac), value(t.loss)
        kept = f"{loss:.3f} at {pct(frac or 0.0)} of training" if loss is not None else DASH
        dev, cost = value(t.dev), value(t.cost)
        est_s = ", ".join(x for x in (gib(dev) if dev else "", usd(cost) if cost is not None else "") if x)
        reason = scrub(str(value(t.reason) or "")) or DASH
        rows.append([name, str(t.status), reason, kept, est_s or DASH, str(t.attempts)])
    if not rows:
        out.append(Para("None: every cell completed."))
    else:
        out.append(
            Para(
                "Pruned cells keep their last evaluation; infeasible and over-budget cells never started "
                "(the advisor's estimate decided); running cells have not finished yet."
            )
        )
        out.append(
            Table(
                ["Cell", "Status", "Reason", "Last eval", "Estimate (device, cost)", "Attempts"],
                rows,
                "lllrrr",
            )
        )
    if ctx.sweep.unreadable:
        out.append(Para("Record files that could not be read (left out of this report):", note=True))
        out.append(Bullets([scrub(u) for u in ctx.sweep.unreadable]))
    return out


def _budget(meta: dict[str, Any]) -> str:
    b_usd, b_h = num(dig(meta, "budget", "usd")), num(dig(meta, "budget", "hours"))
    parts = [usd(b_usd) if b_usd is not None else "", f"{b_h:g} h" if b_h is not None else ""]
    return ", ".join(p for p in parts if p) or "none"


def reproducibility(ctx: Context) -> list[Block]:
    sw, meta = ctx.sweep, ctx.sweep.meta
    out: list[Block] = [Heading("Reproducibility")]
    prov = [t.provenance for t in sw.records if t.provenance]
    seeds = sorted({str(t.seed) for t in sw.records if t.seed is not None})
    devices = sorted({str(p.get("device")) for p in prov if p.get("device")})
    revs = sorted(
        {str(p.get("git_revision")) for p in prov if p.get("git_revision")}
        | ({str(meta["git_revision"])} if meta.get("git_revision") else set())
    )
    items = [
        f"Sweep folder: {scrub(str(meta.get('dir') or sw.settings.get('dir') or sw.dir.name))}",
        f"Created: {meta.get('created') or DASH}",
        f"Storage: {strip_password(scrub(str(meta.get('storage') or ''))) or DASH}",
        "Budget (whole sweep): " + _budget(meta),
        f"Seeds: {', '.join(seeds) or DASH}",
        f"Devices: {', '.join(scrub(d) for d in devices) or DASH}",
        f"Git revision: {', '.join(revs) or DASH}",
    ]
    out.append(Bullets(items))
    if meta.get("overrides"):
        out.append(Para("Command-line overrides:"))
        out.append(Code(" ".join(shq(scrub(str(o))) for o in meta["overrides"]), "sh"))
    if meta.get("matrix"):
        out.append(Para("Matrix:"))
        out.append(Code(yaml.safe_dump(scrub_data(meta["matrix"]), sort_keys=False).rstrip(), "yaml"))
    versions = meta.get("versions") or next((p.get("versions") for p in prov if p.get("versions")), None)
    if versions:
        out.append(Para("Versions:"))
        out.append(Code(yaml.safe_dump(scrub_data(versions), sort_keys=True).rstrip(), "yaml"))
    if sw.config:
        out.append(Para("Resolved base configuration:"))
        out.append(
            Code(yaml.safe_dump(scrub_data(sw.config), sort_keys=False, allow_unicode=True).rstrip(), "yaml")
        )
    return out
