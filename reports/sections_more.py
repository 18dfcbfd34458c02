"""Report sections 4–7: advisor calibration, skipped and failed cells, deployment, reproducibility."""

from __future__ import annotations

from typing import Any

import yaml

from reports import plots
from reports.context import Context
from reports.doc import Bullets, Code, Figure, Heading, Para, Table
from reports.fmt import (
    DASH,
    duration,
    gib,
    label,
    pct,
    scrub,
    scrub_data,
    shq,
    signed_pct,
    size_bytes,
    strip_password,
    usd,
)
from reports.records import Trial, dig, num

OFF_BY = 0.15  # estimates off by more than this share of the measured value are called out
VLLM_RANKS = (8, 16, 32, 64, 128, 256, 320, 512)  # --max-lora-rank values vLLM accepts
SERVE_ADAPTERS = (1, 8, 32)  # adapter counts shown in the serving-memory table


def _quantities(t: Trial, is_cpu: bool) -> list[tuple[str, float | None, float | None, str]]:
    """(name, predicted, measured, unit) pairs that design.md says compare on this device."""
    est, m = t.estimate, t.measured
    mem = est.get("memory") or {}
    q = [("allocated", num(mem.get("allocated_gib")), num(m.get("allocated_gib")), "GiB")]
    if is_cpu:
        q.append(("device vs RSS", num(mem.get("device_gib")), num(m.get("rss_gib")), "GiB"))
    else:
        q.append(("reserved", num(mem.get("reserved_gib")), num(m.get("reserved_gib")), "GiB"))
        q.append(("device", num(mem.get("device_gib")), num(m.get("device_gib")), "GiB"))
    if t.status == "complete":
        train_s = num((m.get("wall_s") or {}).get("train")) if isinstance(m.get("wall_s"), dict) else None
        q.append(("train time", num(dig(est, "time", "hours")), train_s / 3600 if train_s else None, "h"))
        q.append(("cost", num(dig(est, "cost", "usd")), num(m.get("usd")), "$"))
    return q


def _show(v: float | None, unit: str) -> str:
    return {"GiB": gib, "h": duration, "$": usd}[unit](v)


def calibration(ctx: Context) -> list:
    out: list = [Heading("Advisor calibration")]
    mem_note = (
        "On the CPU the measured peak of live tensor bytes compares with the estimate's allocated GiB, "
        "and process RSS with its device GiB."
        if ctx.is_cpu
        else "allocated/reserved compare with torch's max_memory_allocated/max_memory_reserved; device with nvidia-smi."
    )
    out.append(
        Para(
            f"Error = (predicted − measured) / measured. {mem_note} Train time compares with the "
            "measured training wall time; cost with the measured dollars of the whole run (load, train, eval)."
        )
    )
    rows, flagged = [], []
    pairs: dict[str, list[tuple[float, float, str]]] = {
        "memory (GiB)": [],
        "train time (h)": [],
        "cost (USD)": [],
    }
    panel = {"GiB": "memory (GiB)", "h": "train time (h)", "$": "cost (USD)"}
    for c in ctx.sweep.cells:
        for t in c.trials:
            if t.status not in ("complete", "pruned") or not t.estimate:
                continue
            name = label(t.method, t.r, t.rows) + (f" · seed {t.seed}" if len(c.trials) > 1 else "")
            for q, pred, meas, unit in _quantities(t, ctx.is_cpu):
                if pred is None or meas is None or meas <= 0:
                    continue
                err = (pred - meas) / meas
                mark = " !" if abs(err) > OFF_BY else ""
                rows.append([name, q, _show(pred, unit), _show(meas, unit), signed_pct(err) + mark])
                pairs[panel[unit]].append((pred, meas, t.method))
                if mark:
                    flagged.append(
                        f"{name}: {q} predicted {_show(pred, unit)}, measured {_show(meas, unit)} ({signed_pct(err)})."
                    )
    if not rows:
        return out + [Para("No cell has both an estimate and a measurement yet.")]
    out.append(Table(["Cell", "Quantity", "Predicted", "Measured", "Error"], rows, "llrrr"))
    if flagged:
        out.append(Para(f"Estimates off by more than {pct(OFF_BY)} (marked !):", note=True))
        out.append(Bullets(flagged))
    else:
        out.append(Para(f"Every estimate was within {pct(OFF_BY)} of the measurement."))
    path = plots.calibration(pairs, ctx.plots_dir / "calibration.png")
    if path:
        out.append(
            Figure(
                path,
                f"plots/{path.name}",
                "Predicted vs measured per cell, log-log; y = x with a ±15 % band.",
            )
        )
    return out


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


def _override_str(k: str, v: Any) -> str:
    if isinstance(v, bool):
        v = "true" if v else "false"
    elif v is None:
        v = "null"
    elif isinstance(v, (list, tuple)):
        v = "[" + ",".join(str(x) for x in v) + "]"
    return shq(f"{k}={v}")


def reproduce_command(ctx: Context) -> str | None:
    pick = ctx.rec.pick
    cell = next((c for c, r in ctx.pairs if r is pick), None)
    if cell is None or not cell.chosen:
        return None
    t = cell.chosen[0]
    own = {k.lstrip("_"): v for k, v in t.overrides.items()}
    if "lr" in own:
        own["train.lr"] = own.pop("lr")
    if not cell.lr_tuned:
        own.pop("train.lr", None)
    keep = []
    for o in ctx.sweep.meta.get("overrides") or []:
        k = str(o).split("=", 1)[0].lstrip("+~")
        if k == "matrix" or k.startswith("sweep.") or k in own:
            continue
        keep.append(shq(scrub(str(o))))
    return " ".join(["tunewise sweep matrix=single", *keep, *(_override_str(k, v) for k, v in own.items())])


def deployment(ctx: Context) -> list:
    out: list = [Heading("Deployment")]
    rows = []
    for c, r in ctx.pairs:
        ab = c.mean(lambda t: t.measured.get("adapter_bytes"))
        tp = c.mean(lambda t: t.measured.get("trainable_params")) or num(
            c.first.estimate.get("trainable_params")
        )
        if c.method != "full" and c.chosen and (ab or tp):
            rows.append([r.label, f"{tp:,.0f}" if tp else DASH, size_bytes(ab)])
    if rows:
        out.append(Table(["Cell", "Trainable params", "Adapter on disk"], rows))
    total = next(
        (
            num(t.estimate.get("total_params"))
            for t in ctx.sweep.trials
            if num(t.estimate.get("total_params"))
        ),
        None,
    )
    pick = ctx.rec.pick
    model = ctx.sweep.config.get("model") or {}
    model_ref = scrub(str(model.get("path") or model.get("name") or "BASE_MODEL"))
    if total:
        out.append(
            Para(
                f"Merged model (base + adapter folded in) in bf16: {total:,.0f} params × 2 bytes = "
                f"{size_bytes(total * 2)}; a fully fine-tuned model is the same size, one copy per variant."
            )
        )
    pc = next((c for c, r in ctx.pairs if r is pick), None)
    ab = pc.mean(lambda t: t.measured.get("adapter_bytes")) if pc is not None else None
    if pick is not None and pick.method != "full" and ab and total:
        rank = next((x for x in VLLM_RANKS if x >= (pick.r or 0)), pick.r)
        out.append(
            Para(
                f"Serving many adapters of the recommended size ({size_bytes(ab)} each, r={pick.r}) on one "
                "bf16 base: weights memory = base + N × adapter (KV cache comes on top)."
            )
        )
        out.append(
            Table(
                ["Adapters N", "Weights memory"],
                [[str(n), size_bytes(total * 2 + n * ab)] for n in SERVE_ADAPTERS],
            )
        )
        adapter = (
            f"cells/{pc.chosen[0].cell_id}/adapter" if pc is not None and pc.chosen else "PATH/TO/ADAPTER"
        )
        out.append(
            Para(
                f"vLLM (--max-lora-rank must be one of {', '.join(map(str, VLLM_RANKS))}) and TGI; "
                "adapter paths are relative to the sweep folder:"
            )
        )
        if pick.method == "qlora":
            out.append(
                Para(
                    "The adapter was trained against the 4-bit base; serving it on the bf16 base is the usual "
                    "practice, and evaluating it there once before deploying is advised."
                )
            )
        out.append(
            Code(
                f"vllm serve {shq(model_ref)} --enable-lora --max-loras 8 --max-lora-rank {rank} \\\n"
                f"    --lora-modules recommended={adapter} other-task=PATH/TO/ADAPTER\n\n"
                f"LORA_ADAPTERS=recommended={adapter},other-task=PATH/TO/ADAPTER \\\n"
                f"    text-generation-launcher --model-id {shq(model_ref)}",
                "sh",
            )
        )
    elif pick is not None and pick.method == "full":
        out.append(
            Para("The recommendation is full fine-tuning: serve the fine-tuned model itself; no adapters.")
        )
    cmd = reproduce_command(ctx)
    if cmd:
        out.append(Para("Reproduce the recommended cell as a single run:"))
        out.append(Code(cmd, "sh"))
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
