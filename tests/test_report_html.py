"""build_report: figures saved as PNGs, one self-contained offline page, skipped figures listed; and the
page rendered in headless Chromium (every image decoded, no console error, no request leaving the file)."""

from __future__ import annotations

import base64
import io
import re
import shutil
from html.parser import HTMLParser
from pathlib import Path

import pytest
from PIL import Image

from wsdlab.analysis.tables import write_table
from wsdlab.report import FIGURES, build_report
from wsdlab.report.html import format_cell, png_size, render_table
from wsdlab.report.synthetic import synthetic_tables, write_synthetic_study

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
                 "--disable-sync", "--no-first-run"]


class _Page(HTMLParser):
    """Collects <img> sources, <a> hrefs, figure ids and table cells of a page."""

    def __init__(self) -> None:
        super().__init__()
        self.imgs: list[dict[str, str | None]] = []
        self.hrefs: list[str] = []
        self.figures: list[str] = []
        self.cells: list[str] = []
        self._in_cell = False

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        if tag == "img":
            self.imgs.append(a)
        elif tag == "a":
            self.hrefs.append(a.get("href") or "")
        elif tag == "figure":
            self.figures.append(a.get("id") or "")
        self._in_cell = tag in ("td", "th")

    def handle_data(self, data: str) -> None:
        if self._in_cell:
            self.cells.append(data)


def _parse(html: str) -> _Page:
    page = _Page()
    page.feed(html)
    return page


@pytest.fixture(scope="module")
def full_study(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    """A study folder with every synthetic table, and its built report."""
    study = write_synthetic_study(tmp_path_factory.mktemp("study"))
    return study, build_report(study)


def test_every_figure_is_saved_as_a_valid_png(full_study) -> None:
    study, _ = full_study
    for spec in FIGURES:
        path = study / "figures" / f"{spec.name}.png"
        assert path.is_file(), spec.name
        with Image.open(path) as im:
            im.verify()
            assert im.format == "PNG"


def test_page_embeds_one_data_uri_image_per_figure_and_nothing_external(full_study) -> None:
    study, report = full_study
    assert report == study / "report.html"
    html = report.read_text()
    page = _parse(html)
    assert len(page.imgs) == len(FIGURES)
    assert page.figures == [f"fig-{spec.name}" for spec in FIGURES]
    for img, spec in zip(page.imgs, FIGURES):
        src = img["src"] or ""
        assert src.startswith("data:image/png;base64,")
        png = base64.b64decode(src.split(",", 1)[1])
        assert png == (study / "figures" / f"{spec.name}.png").read_bytes()
        assert (int(img["width"]), int(img["height"])) == png_size(png)
    assert not re.search(r"https?://", html, re.IGNORECASE)
    assert "<script" not in html.lower() and "<link" not in html.lower()
    # table links are relative, point at files that exist, and every figure names its table
    table_links = [h for h in page.hrefs if h.startswith("tables/")]
    assert {f"tables/{t}.csv" for spec in FIGURES for t in spec.tables} <= set(table_links)
    assert all((study / h).is_file() for h in table_links)


def test_page_header_and_key_values(full_study) -> None:
    _, report = full_study
    html = report.read_text()
    assert "<title>wsdlab report: synthetic</title>" in html
    runs = synthetic_tables()["runs"]
    assert f"runs: {len(runs)} ({len(runs)} complete" in html  # counted from tables/runs.csv
    assert "Made-up tables for a preview." in html
    cells = _parse(html).cells
    # the bias-variance table is rendered (pivoted: one row per shape, one column per space x quantity)
    assert "kl bias" in cells and "weight variance" in cells
    kl_bias_sqrt = next(r["bias"] for r in synthetic_tables()["bias_variance"]
                        if r["shape"] == "sqrt" and r["space"] == "kl")
    assert format_cell(kl_bias_sqrt) in cells
    # sections in the paper's order
    headings = re.findall(r"<h2>(\d+)\. ([^<]+)</h2>", html)
    assert headings[:4] == [("1", "Paper vs this run"), ("2", "Schedules and validation curves"),
                            ("3", "Bias and variance"), ("4", "Perplexity")]
    assert "Not drawn" not in html


def test_missing_tables_are_skipped_and_listed(tmp_path: Path) -> None:
    tables = synthetic_tables()
    study = write_synthetic_study(tmp_path, {name: tables[name] for name in ("schedules", "bias_variance", "recency")})
    html = build_report(study, title="Partial").read_text()
    drawn = sorted(p.stem for p in (study / "figures").glob("*.png"))
    assert drawn == ["bias_variance", "recency_shift", "recency_vs_bias_variance", "schedules"]
    assert len(_parse(html).imgs) == 4
    assert "<title>Partial</title>" in html
    # the recency unit ran (recency.csv) without its curves: listed; val_curves wrote nothing: not listed
    skipped = html[html.index('id="skipped"'):]
    assert re.findall(r"<li><b>(\w+)</b>: ([^<]+)</li>", skipped) == [("recency_curves", "no table recency_curves.csv")]
    # without runs.csv there are no run counts: the report reads tables only, never the run folders
    assert "runs: 0 (0 complete)" in html


def test_malformed_table_skips_only_its_figure_with_the_reason(tmp_path: Path) -> None:
    tables = synthetic_tables()
    bad = [{k: v for k, v in r.items() if k != "lr_factor"} for r in tables["schedules"]]
    study = write_synthetic_study(tmp_path, {"schedules": bad, "perplexity": tables["perplexity"]})
    html = build_report(study).read_text()
    assert (study / "figures" / "perplexity.png").is_file()
    assert not (study / "figures" / "schedules.png").exists()
    assert "lacks column(s) lr_factor" in html


def test_a_figure_that_can_no_longer_be_drawn_loses_its_old_png(tmp_path: Path) -> None:
    tables = synthetic_tables()
    study = write_synthetic_study(tmp_path, {name: tables[name] for name in ("schedules", "perplexity")})
    build_report(study)
    assert (study / "figures" / "schedules.png").is_file()
    (study / "tables" / "schedules.csv").unlink()
    build_report(study)
    assert not (study / "figures" / "schedules.png").exists()
    assert (study / "figures" / "perplexity.png").is_file()


def test_empty_study_still_writes_a_page(tmp_path: Path) -> None:
    html = build_report(tmp_path).read_text()
    assert "No figure could be drawn" in html
    assert "<img" not in html
    assert not [p for p in tmp_path.rglob("*") if p.name.startswith(".")]  # no temporary files left


def test_rebuild_replaces_the_page_atomically(tmp_path: Path) -> None:
    tables = synthetic_tables()
    study = write_synthetic_study(tmp_path, {"schedules": tables["schedules"]})
    first = build_report(study).read_text()
    write_table(tables["perplexity"], study / "tables" / "perplexity.csv")
    second = build_report(study).read_text()
    assert first.count("<img") == 1 and second.count("<img") == 2
    assert not [p for p in study.rglob("*") if p.name.startswith(".") and p.name != ".fingerprints.json"]


def test_missing_study_dir_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="nope"):
        build_report(tmp_path / "nope")


def test_table_cells_are_escaped_and_formatted() -> None:
    html = render_table([{"shape": "<script>x</script>", "v": 1.23456789, "n": None}])
    assert "<script>" not in html and "&lt;script&gt;" in html
    assert "1.235" in html and "–" in html
    assert render_table([]) == ""


def test_png_size_rejects_non_png() -> None:
    with pytest.raises(ValueError, match="not a PNG"):
        png_size(b"GIF89a" + bytes(30))
    buf = io.BytesIO()
    Image.new("RGB", (7, 3)).save(buf, format="PNG")
    assert png_size(buf.getvalue()) == (7, 3)


def _browser_skip_reason() -> str | None:
    if not CHROMIUM.is_file() and shutil.which("chromium") is None:
        return "chromium is not installed (Debian package `chromium`)"
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        return "playwright is not installed (pip install playwright; it is in the `test` extra)"
    return None


@pytest.mark.skipif(_browser_skip_reason() is not None, reason=str(_browser_skip_reason()))
def test_page_renders_offline_in_headless_chromium(full_study) -> None:
    from playwright.sync_api import sync_playwright

    _, report = full_study
    executable = str(CHROMIUM) if CHROMIUM.is_file() else shutil.which("chromium")
    errors: list[str] = []
    requests: list[str] = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: errors.append(m.text) if m.type == "error" else None)
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.on("request", lambda r: requests.append(r.url))
            page.goto(report.as_uri(), wait_until="load")
            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => i.complete ? i.naturalWidth : 0)")
            title = page.title()
            heading = page.inner_text("h1")
        finally:
            browser.close()
    assert len(widths) == len(FIGURES)
    assert all(w > 0 for w in widths), widths
    assert errors == []
    assert all(u.startswith(("file:", "data:")) for u in requests), requests
    assert title == heading == "wsdlab report: synthetic"


def test_module_entry_point_builds_the_page(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from wsdlab.report.__main__ import main

    path = main([str(tmp_path), "--title", "Empty study"])
    assert path == tmp_path / "report.html" and "<title>Empty study</title>" in path.read_text()
    assert str(path) in capsys.readouterr().out


def test_unit_tables_are_the_first_table_of_each_of_the_units_figures() -> None:
    from wsdlab.report.catalog import unit_tables

    assert unit_tables("recency") == ("recency_curves", "recency")  # not bias_variance (read from upstream)
    assert unit_tables("perplexity") == ("perplexity",)
    assert unit_tables("universality_curves") == ("universality_curves", "universality_norms")
    assert unit_tables("no_such_unit") == ()


def test_not_drawn_lists_only_figures_of_units_that_ran_and_are_not_switched_off(tmp_path: Path) -> None:
    """study.yaml enables recency and universality_curves (default-on, but no tables: another paper's
    experiment) and switches trajectory off; recency wrote recency.csv only, trajectory left a stale bad table."""
    tables = synthetic_tables()
    study = write_synthetic_study(tmp_path, {"schedules": tables["schedules"], "recency": tables["recency"],
                                             "trajectory": [{"run": "r", "kind": "pca"}]})
    (study / "study.yaml").write_text(
        "name: rule\nanalyses:\n  eval_batches: 2\n  recency: {enabled: true}\n"
        "  universality_curves: {enabled: true, options: {}}\n  trajectory: {enabled: false}\n")
    html = build_report(study).read_text()
    skipped = html[html.index('id="skipped"'):]
    assert re.findall(r"<li><b>(\w+)</b>: ([^<]+)</li>", skipped) == [
        ("recency_curves", "no table recency_curves.csv"),
        ("recency_vs_bias_variance", "no table bias_variance.csv"),
    ]
    assert '<a href="#skipped">Not drawn</a>' in html
    # the same tables without a study.yaml: trajectory is no longer switched off, so its unusable table is news
    (study / "study.yaml").unlink()
    html = build_report(study).read_text()
    listed = re.findall(r"<li><b>(\w+)</b>:", html[html.index('id="skipped"'):])
    assert listed == ["recency_curves", "recency_vs_bias_variance", "hv_norm", "pc1_share", "quasi_convexity",
                      "param_norm"]


def test_not_drawn_and_unit_switches_as_functions() -> None:
    from wsdlab.report.html import Skipped, not_drawn, unit_switches

    specs = {f.name: f for f in FIGURES}
    skipped = [Skipped(specs[n], "no table") for n in ("val_curves", "univ_length", "univ_norms", "probes")]
    tables = {"universality_curves": [{"x": 1}], "probes": [{"x": 1}]}
    switches = unit_switches({"analyses": {"eval_batches": 8, "probes": {"enabled": False},
                                           "universality_length": {"enabled": True}, "val_curves": {}}})
    assert switches == {"probes": False, "universality_length": True}
    # univ_norms: its unit (universality_curves) wrote universality_curves.csv; univ_length's unit wrote nothing
    assert [k.spec.name for k in not_drawn(skipped, tables, switches)] == ["univ_norms"]
    assert unit_switches({}) == {} and unit_switches({"analyses": None}) == {}
