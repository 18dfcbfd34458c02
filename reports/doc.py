"""A tiny document model (headings, paragraphs, tables, figures, code) and its two renderings:
Markdown that reads as plain text in a terminal (padded pipe tables, no HTML), and one
self-contained HTML page (inline CSS, images embedded as base64, no scripts, no remote assets).
"""

from __future__ import annotations

import base64
import html
import re
import textwrap
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class Heading:
    text: str
    level: int = 2


@dataclass
class Para:
    text: str
    note: bool = False  # a warning or status line, emphasised


@dataclass
class Bullets:
    items: list[str]


@dataclass
class Table:
    headers: list[str]
    rows: list[list[str]]
    align: str = ""  # one of l/r per column; default: first column left, others right


@dataclass
class Figure:
    path: Path  # the PNG on disk
    rel: str  # its path relative to the report (plots/x.png)
    caption: str


@dataclass
class Code:
    text: str
    lang: str = ""


Block = Heading | Para | Bullets | Table | Figure | Code


@dataclass
class Doc:
    title: str
    blocks: list[Block] = field(default_factory=list)

    def add(self, *blocks: Block) -> None:
        self.blocks.extend(blocks)


def _md_cell(s: str) -> str:
    return str(s).replace("|", "\\|").replace("\n", " ")


def md_table(t: Table) -> str:
    cells = [[_md_cell(h) for h in t.headers]] + [[_md_cell(c) for c in r] for r in t.rows]
    n = len(t.headers)
    align = (t.align or "l" + "r" * (n - 1)).ljust(n, "r")
    widths = [max(3, *(len(r[i]) for r in cells)) for i in range(n)]

    def line(r: list[str]) -> str:
        parts = [r[i].rjust(widths[i]) if align[i] == "r" else r[i].ljust(widths[i]) for i in range(n)]
        return "| " + " | ".join(parts) + " |"

    rule = (
        "|"
        + "|".join(
            ("-" * (w + 1) + ":" if a == "r" else "-" * (w + 2)) for w, a in zip(widths, align, strict=True)
        )
        + "|"
    )
    return "\n".join([line(cells[0]), rule] + [line(r) for r in cells[1:]])


def to_markdown(doc: Doc) -> str:
    out = [f"# {doc.title}"]
    for b in doc.blocks:
        if isinstance(b, Heading):
            out.append("#" * b.level + " " + b.text)
        elif isinstance(b, Para):
            text = f"**{b.text}**" if b.note else b.text
            out.append(textwrap.fill(text, 100, break_long_words=False, break_on_hyphens=False))
        elif isinstance(b, Bullets):
            out.append(
                "\n".join(
                    textwrap.fill(i, 100, initial_indent="- ", subsequent_indent="  ", break_long_words=False)
                    for i in b.items
                )
            )
        elif isinstance(b, Table):
            out.append(md_table(b))
        elif isinstance(b, Figure):
            out.append(f"![{b.caption}]({b.rel})")
        elif isinstance(b, Code):
            out.append(f"```{b.lang}\n{b.text.rstrip()}\n```")
    return "\n\n".join(out) + "\n"


CSS = """
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"DejaVu Sans",sans-serif;color:#1b1f24;
 background:#fff;margin:0}
main{max-width:1100px;margin:0 auto;padding:24px 28px 60px}
h1{font-size:1.7em;margin:.2em 0 .6em}h2{font-size:1.3em;margin-top:1.8em;border-bottom:1px solid #d0d7de;
 padding-bottom:.2em}h3{font-size:1.08em;margin-top:1.4em}
p.note{background:#fff8c5;border-left:4px solid #d4a72c;padding:6px 10px}
section#recommendation p{font-size:1.08em}
table{border-collapse:collapse;margin:.6em 0 1.2em;font-size:.9em;font-variant-numeric:tabular-nums}
th,td{border:1px solid #d0d7de;padding:4px 8px;vertical-align:top}th{background:#f6f8fa;text-align:left}
td.r{text-align:right;white-space:nowrap}
figure{margin:1em 0 1.6em}figure img{max-width:100%;height:auto;border:1px solid #eaeef2}
figcaption{color:#57606a;font-size:.9em}
pre{background:#f6f8fa;padding:10px 12px;overflow-x:auto;font-size:.85em;white-space:pre-wrap}
code{font-family:ui-monospace,"DejaVu Sans Mono",monospace}
@media print{main{max-width:none;padding:0}h2{break-after:avoid}table,figure{break-inside:avoid}
 pre{white-space:pre-wrap}}
"""


def _slug(s: str) -> str:
    return re.sub(r"[^a-z0-9]+", "-", s.lower()).strip("-")


def to_html(doc: Doc) -> str:
    e = html.escape
    body: list[str] = []
    open_section = False
    for b in doc.blocks:
        if isinstance(b, Heading) and b.level == 2:
            if open_section:
                body.append("</section>")
            body.append(f'<section id="{_slug(b.text)}">\n<h2>{e(b.text)}</h2>')
            open_section = True
        elif isinstance(b, Heading):
            body.append(f"<h{b.level}>{e(b.text)}</h{b.level}>")
        elif isinstance(b, Para):
            body.append(f'<p class="note">{e(b.text)}</p>' if b.note else f"<p>{e(b.text)}</p>")
        elif isinstance(b, Bullets):
            body.append("<ul>" + "".join(f"<li>{e(i)}</li>" for i in b.items) + "</ul>")
        elif isinstance(b, Table):
            n = len(b.headers)
            align = (b.align or "l" + "r" * (n - 1)).ljust(n, "r")
            head = "".join(f'<th scope="col">{e(h)}</th>' for h in b.headers)
            rows = "".join(
                "<tr>"
                + "".join(f'<td class="{a}">{e(str(c))}</td>' for c, a in zip(r, align, strict=False))
                + "</tr>"
                for r in b.rows
            )
            body.append(f"<table><thead><tr>{head}</tr></thead><tbody>{rows}</tbody></table>")
        elif isinstance(b, Figure):
            data = base64.b64encode(b.path.read_bytes()).decode("ascii")
            body.append(
                f'<figure><img src="data:image/png;base64,{data}" alt="{e(b.caption)}">'
                f"<figcaption>{e(b.caption)}</figcaption></figure>"
            )
        elif isinstance(b, Code):
            body.append(f"<pre><code>{e(b.text.rstrip())}</code></pre>")
    if open_section:
        body.append("</section>")
    return (
        '<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        '<meta name="viewport" content="width=device-width, initial-scale=1">\n<link rel="icon" href="data:,">\n'
        f"<title>{e(doc.title)}</title>\n<style>{CSS}</style>\n</head>\n<body>\n<main>\n"
        f"<h1>{e(doc.title)}</h1>\n" + "\n".join(body) + "\n</main>\n</body>\n</html>\n"
    )
