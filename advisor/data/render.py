"""Terminal output of `tunewise data check|prepare`: a short rich table of problems and statistics."""

from __future__ import annotations

from rich.console import Console
from rich.table import Table


def _lines(c: dict) -> str:
    if c["count"] and not c["lines"] and not c.get("pairs"):
        return "the whole file"
    shown = c.get("pairs") or c["lines"]
    text = ", ".join(f"{a} (= {b})" for a, b in shown) if c.get("pairs") else ", ".join(map(str, shown))
    return text + (" …" if c["count"] > len(c["lines"]) else "")


def _stats(console: Console, stats: dict, title: str) -> None:
    t = Table(title=title, title_justify="left", show_header=False, box=None)
    est = " (estimated: bytes/4)" if stats["estimated"] else ""
    t.add_row("rows", f"{stats['rows']:,}" + (f" ({stats['skipped_rows']:,} unreadable, not counted)"
                                               if stats["skipped_rows"] else ""))  # fmt: skip
    t.add_row("tokens per example" + est, f"mean {stats['tokens_mean']:,.1f}  p50 {stats['tokens_p50']:,.0f}  "
              f"p95 {stats['tokens_p95']:,.0f}  max {stats['tokens_max']:,}")  # fmt: skip
    t.add_row(f"training tokens / epoch (≤ seq_len={stats['seq_len']})", f"{stats['total_tokens']:,}")
    t.add_row(f"rows longer than seq_len={stats['seq_len']}", f"{stats['truncated_rows']:,}")
    t.add_row("tokenizer", stats["tokenizer"])
    console.print(t)


def render(doc: dict) -> None:
    console = Console(highlight=False)
    if doc["command"] == "prepare":
        console.print(f"[bold]wrote[/bold] {doc['train']['path']} ({doc['train']['rows']:,} rows), "
                      f"{doc['val']['path']} ({doc['val']['rows']:,} rows; {doc['val']['source']})")  # fmt: skip
        removed = ", ".join(f"{k} {v:,}" for k, v in doc["removed"]["by_reason"].items()) or "none"
        console.print(f"removed {doc['removed']['rows']:,} rows ({removed}); first occurrence kept")
        console.print(
            f"trimmed whitespace in {doc['fixed']['stray_whitespace']:,} rows; manifest: {doc['manifest']}"
        )
        if doc["warnings_kept"]:
            console.print(
                "kept, with warnings: " + ", ".join(f"{k} {v:,}" for k, v in doc["warnings_kept"].items())
            )
        return
    found = [c for c in doc["checks"] if c["count"]]
    if found:
        t = Table(title=f"data check: {doc['path']}", title_justify="left")
        for col in ("check", "file", "", "rows", "first lines (= line it repeats)"):
            t.add_column(col, justify="right" if col == "rows" else "left")
        for c in found:
            sev = "[red]problem[/red]" if c["severity"] == "problem" else "[yellow]warning[/yellow]"
            t.add_row(c["name"], c["file"], sev, f"{c['count']:,}", _lines(c))
        console.print(t)
        for file, msgs in doc["problem_messages"].items():
            for m in msgs[:3]:
                console.print(f"  {file} line {m}", markup=False)
    verdict = "clean" if doc["clean"] else f"{doc['problems']:,} problems"
    console.print(f"[bold]{doc['path']}[/bold]: {verdict}, {doc['warnings']:,} warnings")
    _stats(console, doc["stats"], "statistics")
    if doc.get("val_stats"):
        _stats(console, doc["val_stats"], f"validation: {doc['val_path']}")
