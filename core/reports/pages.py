"""The page kit: HTML pages a person reads (sweep report, evaluation, Part B comparison) in one look.

One module (with ``save_figure``, which writes every PNG atomically) because the pages are read side by side
and share a stylesheet, number formats and the rules that keep them readable in a 1280–1600 px window without
sideways scrolling: :func:`table` transposes or wraps tables wider than :data:`MAX_COLUMNS`, numbers never break
from their units, words never break inside; figures are embedded PNGs (a page works as a single file) with a
relative link to the file; plotly.js is inlined once, only on pages with an interactive figure (no network).
Counts go through :func:`core.model.format_count` with the exact integer in the tooltip.
"""

from __future__ import annotations

import base64
import html
import os
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any
from urllib.parse import quote

from core.runfiles import atomic_path, write_text

MAX_COLUMNS = 12  # more columns than this and a table is transposed
PLOTLY_CONFIG = {"displaylogo": False, "responsive": True, "scrollZoom": False,
                 "toImageButtonOptions": {"format": "svg"}}  # the camera icon saves vector graphics

CSS = """
:root{--fg:#1f2328;--muted:#59636e;--line:#d8dee4;--soft:#f6f8fa;--ok:#1a7f37;--bad:#cf222e;--warn:#9a6700;
--link:#0969da}
*{box-sizing:border-box}
body{font:15px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,"Helvetica Neue",Arial,sans-serif;color:var(--fg);
margin:0 auto;max-width:1280px;padding:1.2rem 1.5rem 4rem}
a{color:var(--link);text-decoration:none}a:hover{text-decoration:underline}
h1{font-size:1.75rem;margin:.3rem 0 .1rem}
h2{font-size:1.3rem;margin:2.2rem 0 .7rem;padding-bottom:.3rem;border-bottom:1px solid var(--line)}
h3{font-size:1.05rem;margin:1.4rem 0 .4rem}
p{margin:.4rem 0 .8rem}.meta,.muted{color:var(--muted)}.meta{margin-top:0}
nav.links{font-size:.9rem;color:var(--muted);margin-bottom:.3rem}nav.links a{margin-right:1rem}
code,pre{font-family:ui-monospace,SFMono-Regular,Menlo,Consolas,monospace;font-size:.86em}
pre{white-space:pre-wrap;overflow-wrap:anywhere;background:var(--soft);border:1px solid var(--line);
border-radius:6px;padding:.5rem .7rem;margin:.4rem 0}
.cards{display:grid;grid-template-columns:repeat(auto-fill,minmax(190px,1fr));gap:.7rem;margin:.8rem 0 1rem}
.card{border:1px solid var(--line);border-radius:8px;padding:.55rem .85rem;background:#fff;min-width:0}
.card .k{color:var(--muted);font-size:.8rem;overflow-wrap:anywhere}
.card .v{font-size:1.3rem;font-weight:600;overflow-wrap:anywhere}.card .s{color:var(--muted);font-size:.82rem}
.callout{border:1px solid var(--line);border-left:5px solid var(--muted);border-radius:6px;padding:.6rem 1rem;
margin:.9rem 0;background:var(--soft)}
.callout.good{border-left-color:var(--ok);background:#f0f9f2}.callout.bad{border-left-color:var(--bad);
background:#fff5f5}.callout.warn{border-left-color:var(--warn);background:#fff8e5}
.callout h2,.callout h3{margin-top:.1rem;border:0}
table{border-collapse:collapse;max-width:100%;font-size:.86rem;margin:.5rem 0 1.2rem;
font-variant-numeric:tabular-nums}
th,td{border-bottom:1px solid var(--line);padding:.32rem .6rem;text-align:left;vertical-align:top;
overflow-wrap:break-word}td code{overflow-wrap:anywhere}
thead th{background:var(--soft);border-bottom:2px solid var(--line);font-weight:600}
tbody th{background:var(--soft);font-weight:600}
td.num,th.num{text-align:right}tr.best td{background:#f0f9f2}tr.worst td{background:#fff5f5}
tr.error td{border-top:0;color:var(--bad);padding-top:0}tr.error pre{margin:0}
.state-fail{color:var(--bad);font-weight:600}.state-pruned{color:var(--warn)}.state-complete{color:var(--ok)}
.badge{display:inline-block;font-size:.75rem;border-radius:999px;padding:0 .5rem;margin-left:.3rem;
border:1px solid var(--line);color:var(--muted);white-space:nowrap}
.badge.anecdotal{border-color:#d4a72c;color:var(--warn);background:#fff8e5}
ul.obs li{margin:.25rem 0}
figure{margin:.6rem 0 1.4rem}figure img{max-width:100%;height:auto;border:1px solid var(--line);border-radius:4px}
figcaption{color:var(--muted);font-size:.88rem;margin-top:.2rem}
.grid2{display:grid;grid-template-columns:repeat(auto-fit,minmax(min(100%,560px),1fr));gap:1rem 1.5rem}
.grid2 figure{margin:0}.grid2 figure.wide{grid-column:1/-1}
.kv{display:grid;grid-template-columns:repeat(auto-fill,minmax(250px,1fr));gap:.15rem 1.2rem;margin:.6rem 0}
.kv div{border-bottom:1px solid var(--line);padding:.15rem 0;overflow-wrap:anywhere}.kv b{font-weight:600}
.plot{width:100%;min-height:380px;border:1px solid var(--line);border-radius:6px;margin:.4rem 0 .2rem}
details{margin:.5rem 0}summary{cursor:pointer;color:var(--link)}
"""


def esc(value: Any) -> str:
    return html.escape("" if value is None else str(value))


def breakable(text: str) -> str:
    """Escaped text that may break after ``.``, ``_``, ``/`` and ``-`` (long parameter names in headers)."""
    out = esc(text)
    for ch in "._/-":
        out = out.replace(ch, ch + "<wbr>")
    return out


def count_text(value: int | None, unit: str = "") -> str:
    """``410698 -> '410.7 K'``, ``(10355968, 'FLOPs') -> '10.4 MFLOPs'``; exact value in the tooltip."""
    if value is None:
        return ""
    from core.model import format_count

    short = format_count(int(value))
    number, scale = (short[:-1], short[-1]) if short[-1:].isalpha() else (short, "")
    shown = f"{number}\u00a0{scale}{unit}".rstrip("\u00a0")  # no-break space: never "10.4 | MFLOPs"
    return f'<span title="{int(value):,}">{esc(shown)}</span>'


def duration_text(seconds: float | None) -> str:
    if seconds is None:
        return ""
    if seconds < 60:
        return f"{seconds:.1f}\u00a0s"
    minutes, sec = divmod(int(round(seconds)), 60)
    if minutes < 60:
        return f"{minutes}\u00a0min {sec:02d}\u00a0s"
    hours, minutes = divmod(minutes, 60)
    return f"{hours}\u00a0h {minutes:02d}\u00a0min"


def percent_text(value: float | None, digits: int = 1) -> str:
    return "–" if value is None else f"{100 * value:.{digits}f}%"


def href(target: Path | str, page_dir: Path) -> str:
    """``target`` relative to the folder of the page (POSIX separators, URL-quoted)."""
    rel = os.path.relpath(Path(target).resolve(), Path(page_dir).resolve())
    return quote(Path(rel).as_posix())


def link(target: Path | str | None, page_dir: Path, text: str | None = None, *, code: bool = True) -> str:
    """A relative link to ``target`` (a folder gets a trailing ``/``); plain text when it does not exist."""
    if target is None:
        return ""
    target = Path(target)
    slash = "/" if target.is_dir() else ""
    shown = esc(text if text is not None else Path(os.path.relpath(target.resolve(), Path(page_dir).resolve()))
                .as_posix() + slash)
    shown = f"<code>{shown}</code>" if code else shown
    if not target.exists():
        return f'{shown} <span class="muted">(missing)</span>'
    return f'<a href="{href(target, page_dir)}{slash}">{shown}</a>'


def image(path: Path, page_dir: Path, caption: str = "", *, alt: str | None = None, wide: bool = False) -> str:
    """A figure: the PNG embedded (``data:`` URI), a caption, and a relative link to the file. ``wide`` spans
    both columns of a ``grid2``."""
    path = Path(path)
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    alt = alt if alt is not None else path.stem.replace("_", " ")
    return (f'<figure{_cls("wide" if wide else "")}><img alt="{esc(alt)}" src="data:image/png;base64,{data}">'
            f"<figcaption>{caption} {link(path, page_dir, path.name)}</figcaption></figure>")


def key_values(items: Iterable[tuple[str, str]]) -> str:
    """Short ``name  value`` pairs flowing in columns (a trial's parameters)."""
    return '<div class="kv">' + "".join(f"<div><b>{esc(k)}</b> {v}</div>" for k, v in items) + "</div>"


def cards(items: Iterable[tuple[str, str, str]]) -> str:
    """Key figures as cards: (label, value HTML, small print HTML)."""
    body = "".join(f'<div class="card"><div class="k">{esc(k)}</div><div class="v">{v}</div>'
                   f'{f"<div class=s>{s}</div>" if s else ""}</div>' for k, v, s in items)
    return f'<div class="cards">{body}</div>'


def callout(body: str, kind: str = "") -> str:
    return f'<div class="callout {esc(kind)}">{body}</div>'


def bullets(items: Iterable[str], cls: str = "") -> str:
    items = list(items)
    return f"<ul{_cls(cls)}>" + "".join(f"<li>{i}</li>" for i in items) + "</ul>" if items else ""


def _cls(name: str) -> str:
    return f' class="{esc(name)}"' if name else ""


def table(columns: Sequence[str], rows: Sequence[Sequence[str]], *, numeric: Sequence[bool] | None = None,
          row_classes: Sequence[str] | None = None, after_rows: Mapping[int, str] | None = None,
          max_columns: int = MAX_COLUMNS, key_columns: int = 1) -> str:
    """A table of HTML cells (already escaped/formatted). ``after_rows[i]`` is a full-width row under row ``i``
    (an error message). A table wider than ``max_columns`` is transposed when its rows fit as columns (the
    first column's cells head the columns), else wrapped: several tables, each repeating the first
    ``key_columns`` columns (the trial number, say) with the next slice of the others."""
    numeric = list(numeric) if numeric is not None else [False] * len(columns)
    row_classes = list(row_classes) if row_classes is not None else [""] * len(rows)
    num = ["num" if n else "" for n in numeric]
    if len(columns) > max_columns and len(rows) + 1 <= max_columns:
        head = f"<th>{breakable(columns[0])}</th>" + "".join(f'<th class="num">{r[0]}</th>' for r in rows)
        body = "".join(f"<tr><th>{breakable(c)}</th>" + "".join(f"<td{_cls(num[j])}>{r[j]}</td>" for r in rows)
                       + "</tr>" for j, c in enumerate(columns) if j > 0)
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"
    if len(columns) > max_columns and 0 < key_columns < max_columns:
        keys, rest = list(range(key_columns)), len(columns) - key_columns
        chunks = -(-rest // (max_columns - key_columns))
        step = -(-rest // chunks)  # balanced: 14 columns wrap as 7 + 7, not 10 + 4
        parts = []
        for start in range(key_columns, len(columns), step):
            pick = keys + list(range(start, min(start + step, len(columns))))
            parts.append(table([columns[j] for j in pick], [[r[j] for j in pick] for r in rows],
                               numeric=[numeric[j] for j in pick], row_classes=row_classes,
                               after_rows=after_rows if start == key_columns else None, max_columns=len(pick)))
        return "".join(parts)
    head = "".join(f"<th{_cls(n)}>{breakable(c)}</th>" for c, n in zip(columns, num))
    body = []
    for i, (r, cls) in enumerate(zip(rows, row_classes)):
        body.append(f"<tr{_cls(cls)}>" + "".join(f"<td{_cls(n)}>{cell}</td>" for cell, n in zip(r, num)) + "</tr>")
        if after_rows and i in after_rows:
            body.append(f'<tr class="error"><td colspan="{len(columns)}">{after_rows[i]}</td></tr>')
    return f"<table><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


def section(title: str, body: str, *, anchor: str | None = None) -> str:
    ident = f' id="{esc(anchor)}"' if anchor else ""
    return f"<section{ident}><h2>{esc(title)}</h2>{body}</section>" if body else ""


def plotly_figure(fig: Any, div_id: str, caption: str = "", *, height: int = 460) -> str:
    """A plotly figure as a ``<div>`` plus its ``Plotly.newPlot`` call; the library comes from :func:`render_page`."""
    height = int(fig.layout.height or height)  # a figure may size itself (one bar per row)
    fig.update_layout(height=height, autosize=True, margin={"l": 70, "r": 40, "t": 60, "b": 60},
                      font={"size": 13}, template="plotly_white")
    div = fig.to_html(full_html=False, include_plotlyjs=False, div_id=div_id, config=PLOTLY_CONFIG,
                      default_width="100%", default_height=f"{height}px")
    return f'<figure><div class="plot">{div}</div><figcaption>{caption}</figcaption></figure>'


def render_page(*, title: str, subtitle: str = "", body: Sequence[str], nav: Sequence[tuple[str, str]] = (),
                interactive: bool = False) -> str:
    """A complete page. ``nav`` = (href, text) links shown above the title; ``interactive`` inlines plotly.js
    once (needed by :func:`plotly_figure`)."""
    script = ""
    if interactive:
        from plotly.offline import get_plotlyjs

        script = f'<script type="text/javascript">{get_plotlyjs()}</script>'
    links = "".join(f'<a href="{h}">{esc(t)}</a>' for h, t in nav)
    return ("<!doctype html><html lang='en'><head><meta charset='utf-8'>"
            "<meta name='viewport' content='width=device-width, initial-scale=1'>"
            f"<title>{esc(title)}</title><style>{CSS}</style>{script}</head><body>"
            + (f'<nav class="links">{links}</nav>' if links else "")
            + f"<h1>{esc(title)}</h1>" + (f'<p class="meta">{subtitle}</p>' if subtitle else "")
            + "".join(body) + "</body></html>\n")


def write_page(path: Path, page: str) -> Path:
    """Write a page atomically (a reader never sees half a page)."""
    write_text(path, page)
    return Path(path)


def save_figure(fig: Any, path: Path | str, dpi: int = 100) -> Path:
    """Write ``fig`` as PNG atomically; returns the path."""
    path = Path(path)
    if path.suffix.lower() != ".png":
        raise ValueError(f"figures are written as PNG; got {path.name!r} (use a .png name)")
    with atomic_path(path, suffix=".tmp.png") as tmp:
        fig.savefig(tmp, format="png", dpi=dpi, bbox_inches="tight", pad_inches=0.08)
    return path
