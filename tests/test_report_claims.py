"""The report's "Paper vs this run" section from a hand-made tables/claims.csv: it opens the page, counts
the verdicts, groups the claims by paper in the CSV's order, links the figures drawn on the page, escapes
the papers' words, and says so when no claim was evaluated."""

from __future__ import annotations

import csv
import re
from html.parser import HTMLParser
from pathlib import Path

from wsdlab.report import build_report
from wsdlab.report.claims import COLUMNS, NO_CLAIMS, format_number, measured, paper_key, read_claims, \
    verdict_counts
from wsdlab.report.synthetic import synthetic_tables, write_synthetic_study

SCALE = "this run: 0.8M params, 3.3M tokens, 3 seeds | paper: 124M params, 2.1B tokens, 4 seeds"
ROWS = [  # 001 first in the file: the page groups by paper id, keeping the file's order inside a paper
    {"id": "001-pc1", "paper": "001", "paper_title": "Belloni et al.: universality", "where": "Fig. 7",
     "figure": "univ_pc1_share", "claim": "PC1 explains ~40% of the stable iterates' variance",
     "quote": "roughly 40%", "statistic": "mean PC1 share over runs", "paper_value": "0.4", "value": "0.12",
     "ci_low": "0.1", "ci_high": "0.15", "n": "4", "verdict": "contradicted", "reason": "", "scale": "other scale"},
    {"id": "000-schedules", "paper": "000", "paper_title": "Dremov et al. (TMLR 2025): cooldown stage of WSD",
     "where": "Fig. 1", "figure": "schedules", "claim": "The cooldown starts at 80% of training",
     "quote": "we decay over the last 20%", "statistic": "decay start / steps", "paper_value": "0.8",
     "value": "0.8", "ci_low": "", "ci_high": "", "n": "1", "verdict": "holds", "reason": "", "scale": SCALE},
    {"id": "000-best-shapes", "paper": "000", "paper_title": "Dremov et al. (TMLR 2025): cooldown stage of WSD",
     "where": "§5, Fig. 10", "figure": "", "claim": "sqrt beats the other shapes",
     "quote": 'loss(sqrt) <&> "others" differ by < 0.01', "statistic": "mean val loss sqrt - best other",
     "paper_value": "", "value": "-0.0123", "ci_low": "-0.03", "ci_high": "0.005", "n": "3",
     "verdict": "inconclusive", "reason": "interval includes 0", "scale": SCALE},
]


def _write_claims(path: Path, rows: list[dict[str, str]]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(COLUMNS))
        w.writeheader()
        w.writerows(rows)


class _Ids(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: list[str] = []
        self.local_hrefs: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if a.get("id"):
            self.ids.append(a["id"] or "")
        if tag == "a" and (a.get("href") or "").startswith("#"):
            self.local_hrefs.append((a.get("href") or "")[1:])


def _study(tmp_path: Path, rows: list[dict[str, str]] | None) -> str:
    study = write_synthetic_study(tmp_path, {"schedules": synthetic_tables()["schedules"]})
    if rows is not None:
        _write_claims(study / "tables" / "claims.csv", rows)
    return build_report(study).read_text()


def test_claims_section_opens_the_page_with_counts_rows_verdicts_and_links(tmp_path: Path) -> None:
    html = _study(tmp_path, ROWS)
    start, end = html.index('<section id="claims"'), html.index("</section>", html.index('<section id="claims"'))
    section = html[start:end]
    assert start < html.index("<figure")  # before the figures
    assert re.search(r"<nav><ol><li><a href=\"#claims\">Paper vs this run</a></li>", html)  # first in the contents
    # counts per verdict, in the order holds, contradicted, inconclusive
    counts = re.search(r'<p class="counts">(.*?)</p>', section).group(1)
    assert counts.startswith("3 claims:")
    assert re.findall(r'(\d+) <span class="verdict v-(\w+)">(\w+)</span>', counts) == [
        ("1", "holds", "holds"), ("1", "contradicted", "contradicted"), ("1", "inconclusive", "inconclusive")]
    # papers in id order, rows in the file's order inside a paper, each with its verdict word
    assert re.findall(r'<h3 id="claims-(\d+)">Paper (\d+)', section) == [("000", "000"), ("001", "001")]
    rows = re.findall(r'<tr id="claim-([\w-]+)">(.*?)</tr>', section)
    assert [r[0] for r in rows] == ["000-schedules", "000-best-shapes", "001-pc1"]
    assert [re.search(r'class="verdict v-\w+">(\w+)<', r[1]).group(1) for r in rows] == \
        ["holds", "inconclusive", "contradicted"]
    best = rows[1][1]
    assert "-0.0123 [-0.03, 0.005] (n = 3)" in best and "interval includes 0" in best and "§5, Fig. 10" in best
    # the papers' words are escaped
    assert "loss(sqrt) &lt;&amp;&gt; &quot;others&quot; differ by &lt; 0.01" in best and "<&>" not in html
    # the drawn figure is linked to its anchor; the undrawn one (univ_pc1_share) is named without a link
    page = _Ids()
    page.feed(html)
    assert '<a href="#fig-schedules">Fig. 1</a> <span class="small">(report Figure 1)</span>' in rows[0][1]
    assert "fig-schedules" in page.ids and "fig-univ_pc1_share" not in page.local_hrefs
    assert set(page.local_hrefs) <= set(page.ids)  # every in-page link has a target
    # one scale shared by a paper's rows is written once under its heading; 001's own scale too
    assert section.count(SCALE) == 1 and "Scale — other scale" in section


def test_no_claims_file_or_an_empty_one_says_so(tmp_path: Path) -> None:
    for i, rows in enumerate((None, [])):
        html = _study(tmp_path / str(i), rows)
        section = html[html.index('<section id="claims"'):]
        assert section.index(NO_CLAIMS) < section.index("</section>")
        assert "wsdlab study claims DIR" in html and "<table class=\"claims\"" not in html


def test_row_helpers_by_hand(tmp_path: Path) -> None:
    assert paper_key("0") == "000" and paper_key("002") == "002" and paper_key("x") == "x"
    assert format_number("") == "–" and format_number("0.123456") == "0.1235"
    assert format_number("−0.3 ppl") == "−0.3 ppl"
    row = dict.fromkeys(COLUMNS, "")
    assert measured(row) == "–"
    assert measured({**row, "value": "2", "n": "5"}) == "2 (n = 5)"
    assert measured({**row, "value": "1.5", "ci_low": "1", "ci_high": "2", "n": "3"}) == "1.5 [1, 2] (n = 3)"
    assert verdict_counts([{**row, "verdict": "inconclusive"}, {**row, "verdict": "odd"}]) == \
        {"holds": 0, "contradicted": 0, "inconclusive": 1, "odd": 1}
    # read as text: the paper id "000" and a value "1e-3" stay as written; missing columns read as ''
    path = tmp_path / "claims.csv"
    path.write_text("id,paper,value\na,000,1e-3\n")
    (claim,) = read_claims(path)
    assert claim["paper"] == "000" and claim["value"] == "1e-3" and claim["verdict"] == ""
    assert set(claim) == set(COLUMNS)
    assert read_claims(tmp_path / "absent.csv") == []
