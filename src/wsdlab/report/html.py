"""The study report: draw every figure whose tables exist and write one self-contained STUDY/report.html.

The page opens with "Paper vs this run" (`report/claims.py`, from tables/claims.csv when the claims
layer wrote it), then the figures by section, the tables, and the figures this study could not draw.
The page embeds its figures as base64 PNG data URIs and its CSS inline, uses no JavaScript and refers
to no external URL (a Content-Security-Policy forbids fetching anything), so it opens offline and can
be mailed as one file. Links to `tables/<name>.csv` are relative to the study directory.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import logging
import math
import struct
from collections import Counter
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml
from rich.progress import track

from wsdlab.analysis.tables import read_tables
from wsdlab.common.io import atomic_write_bytes, atomic_write_text
from wsdlab.report.aggregate import Row, Tables
from wsdlab.report import claims as C
from wsdlab.report.catalog import FIGURES, SECTIONS, FigureSpec, unit_tables
from wsdlab.report.panels import png_bytes

log = logging.getLogger(__name__)

MAX_SUMMARY_ROWS = 24


@dataclass(frozen=True)
class DrawnFigure:
    """A figure drawn for the page: its PNG, its number and the small table shown under it."""

    spec: FigureSpec
    number: int
    png: bytes
    summary: list[Row]
    sources: tuple[str, ...]  # tables it was drawn from (required + optional ones present)


@dataclass(frozen=True)
class Skipped:
    """A figure not drawn, and why (a missing table, or a column its table lacks)."""

    spec: FigureSpec
    reason: str


def load_tables(tables_dir: Path) -> Tables:
    """Every `*.csv` under `tables_dir` by name (temporary `.tmp-*`/hidden files ignored); {} if absent."""
    return read_tables(tables_dir)


def build_report(study_dir: Path, title: str | None = None, *, progress: bool = False) -> Path:
    """Draw the figures of STUDY/tables/*.csv into STUDY/figures/ and write STUDY/report.html; return its path.

    `title` defaults to study.yaml's report.title, else "wsdlab report: <study name>". `progress`
    shows a progress bar over the figures (drawing them all takes seconds).
    """
    study_dir = Path(study_dir)
    if not study_dir.is_dir():
        raise FileNotFoundError(f"study directory not found: {study_dir}")
    tables = load_tables(study_dir / "tables")
    drawn, skipped = draw_figures(tables, study_dir / "figures", progress=progress)
    info = study_info(study_dir, tables)
    claims = C.read_claims(study_dir / "tables" / f"{C.CLAIMS_TABLE}.csv")
    listed = not_drawn(skipped, tables, info["switches"])
    page = render_page(title or info["title"], info, tables, drawn, listed, claims)
    out = study_dir / "report.html"
    atomic_write_text(out, page)
    return out


def draw_figures(tables: Tables, figures_dir: Path, *, progress: bool = False
                 ) -> tuple[list[DrawnFigure], list[Skipped]]:
    """Draw each catalogued figure whose tables all exist and save it as `<name>.png`.

    A figure whose table lacks a column it needs (ValueError from the figure) is skipped with that
    message rather than failing the whole report; other errors are bugs and propagate. The PNG of a
    skipped figure left by an earlier build is removed, so figures/ always matches the page.
    """
    drawn: list[DrawnFigure] = []
    skipped: list[Skipped] = []
    for spec in track(FIGURES, description="report figures", disable=not progress, transient=True):
        missing = [t for t in spec.tables if t not in tables]
        try:
            if missing:
                raise ValueError("no table " + ", ".join(f"{t}.csv" for t in missing))
            fig = spec.draw(tables, None)
            summary = spec.summary(tables) if spec.summary else []
        except ValueError as err:
            if not missing:
                log.warning("report: figure %s skipped: %s", spec.name, err)
            skipped.append(Skipped(spec, str(err)))
            (figures_dir / f"{spec.name}.png").unlink(missing_ok=True)
            continue
        png = png_bytes(fig)
        atomic_write_bytes(figures_dir / f"{spec.name}.png", png)
        sources = (*spec.tables, *(t for t in spec.optional_tables if t in tables))
        drawn.append(DrawnFigure(spec, len(drawn) + 1, png, summary[:MAX_SUMMARY_ROWS], sources))
    return drawn, skipped


def not_drawn(skipped: list[Skipped], tables: Tables, switches: Mapping[str, bool]) -> list[Skipped]:
    """The skipped figures the page lists under "Not drawn": those of the analyses this study ran.

    A figure is listed when its unit is not switched off in study.yaml (`switches[unit]` False) AND the
    unit wrote at least one of its own tables (`catalog.unit_tables`): the unit ran here, so a missing or
    unusable table of it is news. Figures of units that wrote nothing (another paper's experiments,
    whose runs this study lacks, or analyses not run yet) are left out: study.yaml cannot tell those
    apart, since a unit is `enabled` by default and runs only where its inputs select runs. A unit
    that failed before writing any table is reported by `wsdlab study run` itself.
    """
    out = []
    for k in skipped:
        own = unit_tables(k.spec.unit) if k.spec.unit else k.spec.tables[:1]
        if switches.get(k.spec.unit, True) and any(t in tables for t in own):
            out.append(k)
    return out


def unit_switches(spec: Mapping[str, Any]) -> dict[str, bool]:
    """unit -> `enabled` from study.yaml's `analyses:` mapping (units without a boolean are left out)."""
    analyses = spec.get("analyses")
    if not isinstance(analyses, dict):
        return {}
    return {str(name): entry["enabled"] for name, entry in analyses.items()
            if isinstance(entry, dict) and isinstance(entry.get("enabled"), bool)}


def study_info(study_dir: Path, tables: Tables | None = None) -> dict[str, Any]:
    """Name, description, title, run counts and analysis switches of a study (study.yaml and
    tables/runs.csv are optional).

    Run counts come from runs.csv (one row per planned run, with `stage` and `state`) when present;
    the report reads tables only, never the run folders. `switches` is `unit_switches(study.yaml)`.
    """
    spec: dict[str, Any] = {}
    spec_path = study_dir / "study.yaml"
    if spec_path.is_file():
        loaded = yaml.safe_load(spec_path.read_text())
        spec = loaded if isinstance(loaded, dict) else {}
    name = str(spec.get("name") or study_dir.resolve().name)
    report_cfg = spec.get("report") if isinstance(spec.get("report"), dict) else {}
    index = (tables or {}).get("runs", [])
    if index and "state" in index[0]:
        runs, complete = len(index), sum(r.get("state") == "complete" for r in index)
        roles = dict(Counter(str(r.get("stage")) for r in index)) if "stage" in index[0] else {}
    else:
        runs, complete, roles = 0, 0, {}
    return {
        "name": name,
        "title": str(report_cfg.get("title") or f"wsdlab report: {name}"),
        "description": str(spec.get("description") or ""),
        "runs": runs,
        "complete": complete,
        "roles": roles,
        "switches": unit_switches(spec),
        "date": dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z").strip(),
    }


def png_size(png: bytes) -> tuple[int, int]:
    """(width, height) from a PNG's IHDR chunk; ValueError when the bytes are not a PNG."""
    if png[:8] != b"\x89PNG\r\n\x1a\n" or png[12:16] != b"IHDR":
        raise ValueError("not a PNG image")
    width, height = struct.unpack(">II", png[16:24])
    return int(width), int(height)


def data_uri(png: bytes) -> str:
    return "data:image/png;base64," + base64.b64encode(png).decode("ascii")


def _esc(v: object) -> str:
    return html.escape(str(v), quote=True)


class Markup(str):
    """Text that is already HTML (render_table leaves it unescaped)."""


def format_cell(v: object) -> str:
    """A table cell: floats to 4 significant digits, empty cells as '–'."""
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    if isinstance(v, float):
        return f"{v:.4g}"
    return str(v)


def _cell_html(v: object) -> str:
    return v if isinstance(v, Markup) else _esc(format_cell(v))


def render_table(rows: list[Row]) -> str:
    """A small HTML table of rows (columns = union of keys in first-seen order)."""
    if not rows:
        return ""
    cols = list(dict.fromkeys(k for r in rows for k in r))
    head = "".join(f"<th>{_esc(c)}</th>" for c in cols)
    body = "".join(
        "<tr>" + "".join(f'<td class="{"num" if isinstance(r.get(c), (int, float)) else "txt"}">'
                         f"{_cell_html(r.get(c))}</td>" for c in cols) + "</tr>"
        for r in rows
    )
    return f'<table class="values"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def _figure_html(d: DrawnFigure) -> str:
    w, h = png_size(d.png)
    links = ", ".join(f'<a href="tables/{_esc(t)}.csv">{_esc(t)}.csv</a>' for t in d.sources)
    noun = "Table" if len(d.sources) == 1 else "Tables"
    return (
        f'<figure id="fig-{_esc(d.spec.name)}">'
        f'<img src="{data_uri(d.png)}" width="{w}" height="{h}" alt="Figure {d.number}: {_esc(d.spec.caption)}">'
        f"<figcaption><b>Figure {d.number}.</b> {_esc(d.spec.caption)} <span class=\"src\">{noun}: {links}</span>"
        f"</figcaption>{render_table(d.summary)}</figure>"
    )


def _tables_section(tables: Tables, drawn: list[DrawnFigure]) -> str:
    """Every table of the study with its size and the figures drawn from it (tables without one included)."""
    used: dict[str, list[int]] = {}
    for d in drawn:
        for t in d.sources:
            used.setdefault(t, []).append(d.number)
    rows = [{"table": name, "rows": len(rs), "columns": ", ".join(dict.fromkeys(k for r in rs[:1] for k in r)),
             "figures": ", ".join(map(str, used.get(name, []))) or "–"} for name, rs in tables.items()]
    for row in rows:
        row["table"] = Markup(f'<a href="tables/{_esc(row["table"])}.csv">{_esc(row["table"])}.csv</a>')
    items = render_table(rows)
    return ('<section id="tables"><h2>Tables</h2>'
            f'<p class="intro">Every table under tables/ and the figures drawn from it.</p>{items}</section>')


CSS = """
body{font-family:system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif;margin:0 auto;
 max-width:1100px;padding:1.5rem;color:#1b1b1b;line-height:1.45}
header{border-bottom:2px solid #0072B2;margin-bottom:1rem}
h1{margin:.2rem 0;font-size:1.6rem} h2{margin-top:2.2rem;border-bottom:1px solid #ddd;font-size:1.25rem}
.meta{color:#555;font-size:.92rem} .intro{color:#444;margin:.3rem 0 1rem}
nav ol{columns:2;font-size:.92rem} a{color:#0061a0}
figure{margin:1.2rem 0 2rem} figure img{max-width:100%;height:auto;display:block}
figcaption{font-size:.93rem;margin:.4rem 0} .src{color:#666}
table.values{border-collapse:collapse;font-size:.82rem;margin-top:.4rem;display:block;max-width:100%;overflow-x:auto}
table.values th,table.values td{border:1px solid #ddd;padding:.15rem .5rem}
table.values th{background:#f3f6f9;text-align:left} td.num{text-align:right;font-variant-numeric:tabular-nums}
.skipped li{color:#555;font-size:.92rem} code{font-size:.9em;background:#f3f3f3;padding:0 .2rem}
""" + C.CSS


CLAIMS_HEADING = "Paper vs this run"


def render_page(title: str, info: dict[str, Any], tables: Tables, drawn: list[DrawnFigure],
                skipped: list[Skipped], claims: list[C.Claim] | None = None) -> str:
    """The whole HTML page: header, contents, "Paper vs this run" (`claims`, rows of claims.csv; a note
    when there are none), one section per heading with figures, the tables, the not-drawn list."""
    by_section: dict[str, list[DrawnFigure]] = {}
    for d in drawn:
        by_section.setdefault(d.spec.section, []).append(d)
    sections = [s for s in SECTIONS if s.key in by_section]
    toc = f'<li><a href="#claims">{CLAIMS_HEADING}</a></li>'
    toc += "".join(f'<li><a href="#sec-{_esc(s.key)}">{_esc(s.title)}</a></li>' for s in sections)
    toc += '<li><a href="#tables">Tables</a></li>' if tables else ""
    toc += '<li><a href="#skipped">Not drawn</a></li>' if skipped else ""
    numbers = {d.spec.name: d.number for d in drawn}
    body = [C.claims_section(claims or [], numbers, f"1. {CLAIMS_HEADING}")]
    for i, s in enumerate(sections, 2):  # numbered as in the contents, "Paper vs this run" first
        figs = "".join(_figure_html(d) for d in by_section[s.key])
        body.append(f'<section id="sec-{_esc(s.key)}"><h2>{i}. {_esc(s.title)}</h2>'
                    f'<p class="intro">{_esc(s.intro)}</p>{figs}</section>')
    if tables:
        body.append(_tables_section(tables, drawn))
    if skipped:
        items = "".join(f"<li><b>{_esc(k.spec.name)}</b>: {_esc(k.reason)}</li>" for k in skipped)
        body.append('<section id="skipped" class="skipped"><h2>Not drawn</h2>'
                    "<p>Figures of the analyses this study ran whose tables are absent or unusable (figures of "
                    "analyses that wrote no table here, such as other papers' experiments, are not listed):</p>"
                    f"<ul>{items}</ul></section>")
    if not drawn:
        body.insert(1, '<p class="intro">No figure could be drawn: STUDY/tables/ holds none of the tables '
                       f"they need{' (see Not drawn)' if skipped else ''}.</p>")
    desc = f'<p class="intro">{_esc(info["description"])}</p>' if info.get("description") else ""
    roles = ", ".join(f"{n} {_esc(r)}" for r, n in info.get("roles", {}).items())
    meta = (f'Study <b>{_esc(info["name"])}</b> · generated {_esc(info["date"])} · runs: {info["runs"]} '
            f'({info["complete"]} complete){" — " + roles if roles else ""} · tables: {len(tables)} '
            f"· figures: {len(drawn)}")
    csp = "default-src 'none'; img-src data:; style-src 'unsafe-inline'"
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        f'<meta http-equiv="Content-Security-Policy" content="{csp}">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{_esc(title)}</title><style>{CSS}</style></head><body>"
        f'<header><h1>{_esc(title)}</h1><p class="meta">{meta}</p>{desc}</header>'
        f"<nav><ol>{toc}</ol></nav>{''.join(body)}</body></html>\n"
    )
