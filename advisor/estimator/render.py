"""The advise document as rich tables on stdout (fits ~100 columns): memory, fit, time and cost per
method and rank, then the minimum GPU count, the cheapest card, the reverse answers, the verdict and
the quality prior — labelled as a prior.
"""

from __future__ import annotations

from typing import Any

from rich import box
from rich.console import Console
from rich.table import Table

from advisor.config import catalog
from advisor.config.methods import METHODS
from advisor.estimator.verdict import LABELS, hours_text, usd_text

BREAKDOWN = (  # (memory key, header) for breakdown=true
    ("weights_gib", "weights\n(GiB)"),
    ("gradients_gib", "grads\n(GiB)"),
    ("optimizer_gib", "optimizer\n(GiB)"),
    ("activations_gib", "activations\n(GiB)"),
    ("logits_gib", "logits\n(GiB)"),
    ("overhead_gib", "overhead\n(GiB)"),
)


def count_text(n: int | float | None) -> str:
    """A parameter or token count as 1.2K / 3.4M / 5.6B."""
    if n is None:
        return "–"
    for div, unit in ((1e12, "T"), (1e9, "B"), (1e6, "M"), (1e3, "K")):
        if abs(n) >= div:
            return f"{n / div:.1f}{unit}"
    return str(int(n))


def _gib(x: float | None) -> str:
    return "–" if x is None else f"{x:,.1f}"


def _yes_no(v: bool | None, yes: str = "yes", no: str = "no") -> str:
    if v is None:
        return "–"
    return f"[green]{yes}[/]" if v else f"[bold red]{no}[/]"


def _label(m: str, r: Any) -> str:
    return LABELS[m] + (f" r={r}" if r else "")


def _names() -> dict[str, str]:
    return {k: v.get("display_name", k) for k, v in catalog.gpus().items()}


def _summary_text(s: dict[str, Any], names: dict[str, str]) -> str:
    par = f" ({s['parallel']})" if s["gpu_count"] > 1 else ""
    mb = f", micro-batch {s['micro_batch_size']} × {s['grad_accum']}" if s.get("micro_batch_size") else ""
    return (
        f"{s['gpu_count']}× {names.get(s['gpu'], s['gpu'])}{par}{mb}: {usd_text(s['usd'])}, "
        f"{hours_text(s['hours'])} [dim]({_provider(s['price_source'])}, {s['price_as_of'] or 'no date'})[/]"
    )


SHORT = {name: m.short for name, m in METHODS.items()}


def _table(title: str | None = None) -> Table:
    t = Table(title=title, title_justify="left", box=box.SIMPLE_HEAD, pad_edge=False, collapse_padding=True)
    t.add_column("method")
    t.add_column("r", justify="right")
    return t


def _provider(price_source: str) -> str:
    """The provider part of a row's price_source ("Lambda (catalog file)" -> "Lambda")."""
    return price_source.split(" (", 1)[0]


def estimates_table(doc: dict[str, Any]) -> Table:
    q = doc["query"]
    g = q["gpu"]
    table = _table(
        f"{q['model']['name']} on {g['count']}× {g['display_name']} ({g['usable_gib']:.1f} GiB usable)"
    )
    table.add_column("trained\nparams", justify="right")
    for header in ("alloc.\n(GiB)", "resv.\n(GiB)", "device\n(GiB)"):
        table.add_column(header, justify="right")
    table.add_column("fits", justify="center")
    table.add_column("time\n(h)", justify="right")
    table.add_column("cost\n(USD)", justify="right")
    table.add_column("within\nbudget", justify="center")
    for row in doc["estimates"]:
        mem = row["memory"]
        table.add_row(
            SHORT[row["method"]],
            str(row["r"] or "–"),
            count_text(row["trainable_params"]),
            _gib(mem["allocated_gib"]),
            _gib(mem["reserved_gib"]),
            _gib(mem["device_gib"]),
            _yes_no(row["fits"]),
            f"{row['time']['hours']:,.1f}",
            f"{row['cost']['usd']:,.2f}" if row["fits"] else f"[dim]{row['cost']['usd']:,.2f}[/]",
            _yes_no(row["within_budget"]) if row["fits"] else "[dim]n/a[/]",
        )
    return table


def breakdown_table(doc: dict[str, Any]) -> Table:
    table = _table("memory breakdown per GPU")
    for _, header in BREAKDOWN:
        table.add_column(header, justify="right")
    for row in doc["estimates"]:
        table.add_row(
            SHORT[row["method"]], str(row["r"] or "–"), *(_gib(row["memory"].get(k)) for k, _ in BREAKDOWN)
        )
    return table


TERM_NAMES = {"overhead": "host", "communication": "comm", "elementwise": "elementwise"}


def _duration(s: float) -> str:
    if s < 1:
        return f"{s * 1e3:.0f} ms"
    if s < 120:
        return f"{s:.1f} s"
    return f"{s / 60:.1f} min" if s < 7200 else f"{s / 3600:.1f} h"


def _terms_text(terms: dict[str, float], dominant: list[str]) -> str:
    """The step's terms as shares, largest first (≥ 3 %); the dominant ones in bold."""
    total = sum(terms.values()) or 1.0
    parts = []
    for k, v in sorted(terms.items(), key=lambda kv: -kv[1]):
        if v / total < 0.03:
            continue
        text = f"{TERM_NAMES.get(k, k)} {100 * v / total:.0f}%"
        parts.append(f"[bold]{text}[/]" if k in dominant else text)
    return " · ".join(parts)


def time_breakdown_table(doc: dict[str, Any]) -> Table:
    """Per row: one optimizer step's time by term (shares; what bounds it in bold: compute, attention,
    adapters, dequant, elementwise, loss, optimizer, communication, host = launch/dispatch overhead
    the device could not hide), and the wall time outside the steps."""
    table = _table("time breakdown: one optimizer step, and the run outside its steps")
    table.add_column("step", justify="right")
    table.add_column("where the step's time goes (bound by: bold)")
    for header in ("start+\nload", "eval+\nmetric", "ckpt+\nsave"):
        table.add_column(header, justify="right")
    for row in doc["estimates"]:
        t = row["time"]
        terms, wall = t.get("step_terms_s") or {}, t.get("wall_s") or {}
        table.add_row(
            SHORT[row["method"]],
            str(row["r"] or "–"),
            _duration(t.get("step_s") or 0.0),
            _terms_text(terms, t.get("dominant") or []),
            _duration(wall.get("start", 0.0) + wall.get("load", 0.0)),
            _duration(wall.get("eval", 0.0) + wall.get("metric", 0.0)),
            _duration(wall.get("checkpoint", 0.0) + wall.get("save", 0.0)),
        )
    return table


def _price_line(doc: dict[str, Any]) -> str:
    seen = {
        (r["cost"]["price_source"], r["cost"]["price_as_of"], r["cost"]["usd_per_gpu_hour"])
        for r in doc["estimates"]
    }
    unit = "hour" if doc["query"]["gpu"]["name"] == "cpu" else "GPU-hour"
    parts = [f"{src} as of {as_of or 'no date'}, ${usd:.2f}/{unit}" for src, as_of, usd in sorted(seen)]
    return "Prices: " + "; ".join(parts) if parts else ""


def _seq_cell(a: dict[str, Any]) -> str:
    if a["seq_len"] is None:
        return "[red]none[/]"
    if a["limited_by"] == "data":  # the estimate stopped growing: longer seq_len changes nothing
        return f"any (≤ {a['longest_sequence_tokens']:,} used)"
    if a["limited_by"] == "context":
        return f"{a['seq_len']:,} (context)"
    return f"{a['seq_len']:,}"


def reverse_table(doc: dict[str, Any]) -> Table:
    """Per method: longest packed sequences that fit (micro-batch 1 and configured), the largest
    micro-batch at the configured seq_len, and the micro-batch × grad_accum pair that fits."""
    t = doc["query"]["train"]
    table = _table(
        f"What fits {doc['query']['gpu']['display_name']} (seq_len: sequences packed to that length)"
    )
    table.add_column("seq_len\nmicro 1", justify="right")
    table.add_column(f"seq_len\nmicro {t['micro_batch_size']}", justify="right")
    table.add_column(f"micro-batch\nat {t['seq_len']:,}", justify="right")
    table.add_column("micro × accum\n(same global)", justify="right")
    table.add_column("GPUs", justify="right")
    for m, rv in doc["reverse"].items():
        if rv is None:
            continue
        mb, fb = rv["max_micro_batch_size"]["micro_batch_size"], rv["fit_batch"]
        table.add_row(
            SHORT[m],
            str(doc["cheapest"][m].get("r") or "–") if m != "full" else "–",
            _seq_cell(rv["max_seq_len_micro_batch_1"]),
            _seq_cell(rv["max_seq_len"]),
            "[red]none[/]" if mb is None else f"{mb:,}",
            "[red]none[/]" if fb is None else f"{fb['micro_batch_size']} × {fb['grad_accum']}",
            f"{rv['gpu_count']}" + (f" {rv['parallel']}" if rv["gpu_count"] > 1 else ""),
        )
    return table


def render_advise(doc: dict[str, Any], breakdown: bool = False, console: Console | None = None) -> None:
    """Print the advise document; breakdown=True adds the memory components (weights … overhead) and
    the time terms (compute … host overhead, what bounds the step, the wall time outside it)."""
    con = console or Console()
    names = _names()
    q = doc["query"]
    for note in q["notes"]:
        con.print(f"[yellow]note:[/] {note}")
    con.print(estimates_table(doc))
    if breakdown:
        con.print(breakdown_table(doc))
        con.print(time_breakdown_table(doc))
    con.print(_price_line(doc), style="dim")
    budget = q["budget"]
    if budget["usd"] is not None or budget["hours"] is not None:
        con.print(
            f"Budget per run: {usd_text(budget['usd']) if budget['usd'] is not None else 'no $ limit'}, "
            f"{hours_text(budget['hours']) if budget['hours'] is not None else 'no time limit'}",
            style="dim",
        )

    con.print(f"\n[bold]Minimum GPUs[/] (count of {q['gpu']['display_name']} that fits)")
    for m, mg in doc["min_gpus"].items():
        text = _summary_text(mg, names) if mg["count"] else f"[red]{mg['reason']}[/]"
        con.print(f"  {LABELS[m]}: {text}")
        if mg["count"] and mg.get("reason"):
            con.print(f"    [dim]{mg['reason']}[/]")

    con.print("\n[bold]Cheapest catalog GPU that fits[/]")
    for m, ch in doc["cheapest"].items():
        if not ch["fits"]:
            con.print(f"  {_label(m, ch['r'])}: [red]{ch['reason']}[/]")
            continue
        best = {
            **ch["time"],
            **ch["cost"],
            "gpu": ch["gpu"],
            "gpu_count": ch["gpu_count"],
            "parallel": ch["parallel"],
        }
        con.print(f"  {_label(m, ch['r'])}: {_summary_text(best, names)}")
        for key, what in (
            ("cheapest_within_budget", "within budget"),
            ("cheapest_single_card", "single card"),
        ):
            s = ch.get(key)
            if s is not None and (s["gpu"], s["gpu_count"]) != (ch["gpu"], ch["gpu_count"]):
                con.print(f"    {what}: {_summary_text(s, names)}")

    con.print()
    con.print(reverse_table(doc))
    for m, rv in doc["reverse"].items():
        if rv is not None and rv.get("note"):
            con.print(f"  [dim]{SHORT[m]}: {rv['note']}[/]")

    con.print(f"\n[bold]Verdict:[/] {doc['verdict']}")
    qp = doc["quality_prior"]
    ranges = ", ".join(
        f"{LABELS[m]} {v['low_pct']:.0f}–{v['high_pct']:.0f} %"
        for m, v in qp["methods"].items()
        if m != qp["relative_to"]
    )
    if ranges:
        con.print(f"\n[bold]Quality prior[/] — {qp['kind']}: {ranges} of full fine-tuning quality.")
        con.print(f"  [dim]{qp['source']}[/]")
