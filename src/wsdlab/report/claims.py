"""The report's opening section, "Paper vs this run": one row per claim of STUDY/tables/claims.csv.

Each row says what a paper found (its words, verbatim, and its printed value) and what this study
measured (a value with its 95% interval and the number n of independent units behind it), with a
verdict: holds, contradicted or inconclusive (and why). The claims layer (`wsdlab study claims DIR`)
writes the table; this module only renders it, so the page reads the CSV as text (a paper id "000"
or a printed value "2.1e-3" stays as written) and escapes every cell (quotes hold <, &, ...).
"""

from __future__ import annotations

import csv
import html
import math
from collections.abc import Mapping
from pathlib import Path

CLAIMS_TABLE = "claims"
COLUMNS = ("id", "paper", "paper_title", "where", "figure", "claim", "quote", "statistic", "paper_value",
           "value", "ci_low", "ci_high", "n", "verdict", "reason", "scale")
VERDICTS = ("holds", "contradicted", "inconclusive")  # the order counts and legends use
NO_CLAIMS = "No claims evaluated for this study (run <code>wsdlab study claims DIR</code>)."

Claim = dict[str, str]  # a row of claims.csv, every column present (empty string when none)

CSS = """
.claims .counts{font-size:1rem;margin:.4rem 0 .8rem}
.claims h3{font-size:1.05rem;margin:1.4rem 0 .2rem} .claims h3 .small{font-weight:normal;color:#555;font-size:.85rem}
.claims .scale{color:#555;font-size:.85rem;margin:.1rem 0 .4rem}
table.claims{border-collapse:collapse;font-size:.86rem;width:100%;table-layout:fixed}
table.claims td{overflow-wrap:anywhere}
table.claims th,table.claims td{border:1px solid #ddd;padding:.3rem .45rem;vertical-align:top;text-align:left}
table.claims th{background:#f3f6f9}
table.claims .quote{color:#555;font-size:.8rem;font-style:italic;margin-top:.25rem}
table.claims .small{color:#666;font-size:.78rem}
table.claims .val{font-variant-numeric:tabular-nums;overflow-wrap:anywhere}
.verdict{display:inline-block;border-radius:3px;padding:.05rem .4rem;font-weight:600;white-space:nowrap}
.v-holds{background:#d9f2e1;color:#0b5d27;border:1px solid #5cb87a}
.v-contradicted{background:#fbdcdc;color:#8f1111;border:1px solid #d96b6b}
.v-inconclusive{background:#fdf0d5;color:#6b4e00;border:1px solid #d9b45a}
.v-other{background:#eee;color:#333;border:1px solid #aaa}
"""


def read_claims(path: Path) -> list[Claim]:
    """The rows of claims.csv as text, every contract column present ('' when absent); [] when no file."""
    if not path.is_file():
        return []
    with open(path, newline="", encoding="utf-8") as f:
        return [{c: (row.get(c) or "").strip() for c in COLUMNS} for row in csv.DictReader(f)]


def verdict_counts(claims: list[Claim]) -> dict[str, int]:
    """Claims per verdict: the three verdicts in order (zeros kept), then any other word as written."""
    counts = {v: 0 for v in VERDICTS}
    for c in claims:
        word = c["verdict"] or "(none)"
        counts[word] = counts.get(word, 0) + 1
    return counts


def paper_key(paper: str) -> str:
    """A paper id as the papers are numbered ("0" and "000" are both "000")."""
    return paper.zfill(3) if paper.isdigit() else paper


def format_number(text: str) -> str:
    """A value cell: numbers to 4 significant digits, anything else as written, empty as '–'."""
    if not text:
        return "–"
    try:
        v = float(text)
    except ValueError:
        return text
    return f"{v:.4g}" if math.isfinite(v) else text


def measured(c: Claim) -> str:
    """'value [ci_low, ci_high] (n = n)', leaving out the parts that are empty; '–' without a value."""
    out = format_number(c["value"])
    if c["value"] and (c["ci_low"] or c["ci_high"]):
        out += f" [{format_number(c['ci_low'])}, {format_number(c['ci_high'])}]"
    if c["value"] and c["n"]:
        out += f" (n = {c['n']})"
    return out


def _esc(v: str) -> str:
    return html.escape(v, quote=True)


def _verdict_html(word: str) -> str:
    kind = word if word in VERDICTS else "other"
    return f'<span class="verdict v-{kind}">{_esc(word or "(none)")}</span>'


def _where_html(c: Claim, figure_numbers: Mapping[str, int]) -> str:
    """The paper's place (`where`), a link to the report's figure when that figure is on the page."""
    where = _esc(c["where"])
    number = figure_numbers.get(c["figure"]) if c["figure"] else None
    if number is None:
        return where
    href = f"#fig-{_esc(c['figure'])}"
    label = where or f"Figure {number}"
    return f'<a href="{href}">{label}</a> <span class="small">(report Figure {number})</span>'


def _row_html(c: Claim, figure_numbers: Mapping[str, int], with_scale: bool) -> str:
    where = _where_html(c, figure_numbers)
    claim = f"{_esc(c['claim'])}" + (f'<div class="small">{where}</div>' if where else "")
    if c["quote"]:
        claim += f'<div class="quote">“{_esc(c["quote"])}”</div>'
    value = f'<div class="val">{_esc(measured(c))}</div>'
    if c["statistic"]:
        value += f'<div class="small">{_esc(c["statistic"])}</div>'
    cells = [claim, _esc(format_number(c["paper_value"])), value, _verdict_html(c["verdict"]), _esc(c["reason"])]
    if with_scale:
        cells.append(f'<span class="small">{_esc(c["scale"])}</span>')
    return f'<tr id="claim-{_esc(c["id"])}">' + "".join(f"<td>{x}</td>" for x in cells) + "</tr>"


def _paper_html(paper: str, rows: list[Claim], figure_numbers: Mapping[str, int]) -> str:
    """One paper's heading, its scale (once when every row shares it) and its table of claims."""
    title = next((r["paper_title"] for r in rows if r["paper_title"]), "")
    heading = f"Paper {_esc(paper)}" + (f": {_esc(title)}" if title else "")
    scales = {r["scale"] for r in rows}
    shared = len(scales) == 1
    scale = f'<p class="scale">Scale — {_esc(rows[0]["scale"])}</p>' if shared and rows[0]["scale"] else ""
    head = [("Claim (paper's place and words)", 38), ("Paper", 9), ("This run: value [95% interval] (n)", 24),
            ("Verdict", 11), ("Reason", 18)]
    if not shared:
        head = [(h, w * 84 // 100) for h, w in head] + [("Scale", 16)]
    thead = "".join(f'<th style="width:{w}%">{h}</th>' for h, w in head)
    body = "".join(_row_html(r, figure_numbers, not shared) for r in rows)
    counts = verdict_counts(rows)
    tally = ", ".join(f"{n} {v}" for v, n in counts.items() if n)
    return (f'<h3 id="claims-{_esc(paper)}">{heading} <span class="small">({tally})</span></h3>{scale}'
            f'<table class="claims"><thead><tr>{thead}</tr></thead><tbody>{body}</tbody></table>')


def claims_section(claims: list[Claim], figure_numbers: Mapping[str, int], heading: str = "Paper vs this run") -> str:
    """The <section id="claims">: counts per verdict, then per paper (in id order) a table of its claims
    in the order of claims.csv; the note NO_CLAIMS when there are none. `figure_numbers` maps the names
    of the figures drawn on the page to their numbers (their anchors are `fig-<name>`)."""
    intro = ("What each paper reports next to what this study measured: a value with its 95% interval over "
             "n independent units (seeds, runs or shapes), and a verdict — <b>holds</b> (the interval is on "
             "the paper's side), <b>contradicted</b> (on the other side) or <b>inconclusive</b> (the interval "
             "includes the boundary, or a quality gate blocked the verdict: see Reason).")
    if not claims:
        return (f'<section id="claims" class="claims"><h2>{_esc(heading)}</h2>'
                f'<p class="intro">{NO_CLAIMS}</p></section>')
    counts = verdict_counts(claims)
    tally = " · ".join(f"{n} {_verdict_html(v)}" for v, n in counts.items())
    by_paper: dict[str, list[Claim]] = {}
    for c in claims:
        by_paper.setdefault(paper_key(c["paper"]), []).append(c)
    papers = "".join(_paper_html(p, by_paper[p], figure_numbers) for p in sorted(by_paper))
    return (f'<section id="claims" class="claims"><h2>{_esc(heading)}</h2><p class="intro">{intro}</p>'
            f'<p class="counts">{len(claims)} claims: {tally}</p>{papers}</section>')
