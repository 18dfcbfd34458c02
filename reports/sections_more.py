"""Report sections 5 and 7: skipped and failed cells, reproducibility."""

from __future__ import annotations

import yaml

from reports.context import Context
from reports.doc import Bullets, Code, Heading, Para, Table
from reports.fmt import DASH, gib, label, pct, scrub, scrub_data, shq, strip_password, usd
from reports.records import dig, num


def skipped(ctx: Context) -> list:
    out: list = [Heading("Skipped and failed cells")]
    rows = []
    for c in ctx.sweep.cells:
        for t in c.trials:
            if t.status == "complete":
                continue
            name = label(t.method, t.r, t.rows) + (f" · seed {t.seed}" if len(c.trials) > 1 else "")
            last = t.last_eval
            kept = f"{last[1]:.3f} at {pct(last[0])} of training" if last else DASH
            est = t.estimate
            est_s = ", ".join(
                x
                for x in (
                    gib(num(dig(est, "memory", "device_gib"))) if dig(est, "memory", "device_gib") else "",
                    usd(num(dig(est, "cost", "usd"))) if dig(est, "cost", "usd") is not None else "",
                )
                if x
            )
            rows.append([name, t.status, scrub(t.reason) or DASH, kept, est_s or DASH, str(len(t.attempts))])
    if not rows:
        return out + [Para("None: every cell completed.")]
    out.append(
        Para(
            "Pruned cells keep their last evaluation; infeasible and over-budget cells never started "
            "(the advisor's estimate decided); running cells have not finished yet."
        )
    )
    out.append(
        Table(
            ["Cell", "Status", "Reason", "Last eval", "Estimate (device, cost)", "Attempts"], rows, "lllrrr"
        )
    )
    return out


def _budget(meta: dict) -> str:
    b_usd, b_h = num(dig(meta, "budget", "usd")), num(dig(meta, "budget", "hours"))
    parts = [usd(b_usd) if b_usd is not None else "", f"{b_h:g} h" if b_h is not None else ""]
    return ", ".join(p for p in parts if p) or "none"


def reproducibility(ctx: Context) -> list:
    sw, meta = ctx.sweep, ctx.sweep.meta
    out: list = [Heading("Reproducibility")]
    prov = [t.provenance for t in sw.trials if t.provenance]
    seeds = sorted({str(t.seed) for t in sw.trials if t.seed is not None})
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
