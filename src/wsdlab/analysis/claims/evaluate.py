"""Evaluate the claims catalogue on a study's tables: one row per claim of every paper the study touches.

`evaluate_claims(tables)` is pure (tables in, rows out); `write_claims(study_dir)` reads STUDY/tables,
writes STUDY/tables/claims.csv (atomically) and returns the rows. The row's columns are the report's
contract (report/claims rendering): id, paper, paper_title, where, figure, claim, quote, statistic,
paper_value, value, ci_low, ci_high, n, verdict, reason, scale.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

from wsdlab.analysis.claims.catalog import CLAIMS, PAPER_SCALE, PAPER_TABLES, PAPERS
from wsdlab.analysis.claims.extract import num
from wsdlab.analysis.claims.model import Claim, NotMeasured, Outcome
from wsdlab.common.types import Row, Tables

CLAIMS_TABLE = "claims"
COLUMNS = ("id", "paper", "paper_title", "where", "figure", "claim", "quote", "statistic", "paper_value", "value",
           "ci_low", "ci_high", "n", "verdict", "reason", "scale")


def touched_papers(tables: Tables) -> list[str]:
    """The papers whose own tables this study has (their claims are listed, the others' are not)."""
    return [p for p, names in PAPER_TABLES.items() if any(tables.get(t) for t in names)]


def _short(n: float) -> str:
    for div, unit in ((1e9, "B"), (1e6, "M"), (1e3, "K")):
        if n >= div:
            return f"{n / div:.3g}{unit}"
    return f"{n:.0f}"


def run_scale(tables: Tables) -> str:
    """This study's scale from runs.csv (params and tokens of its largest run per model kind)."""
    index = tables.get("runs") or []
    if not index or "params" not in index[0]:
        return "this run: scale not recorded (runs.csv has no params/tokens)"
    kinds: dict[str, tuple[float, float, bool]] = {}
    for r in index:
        p, t = num(r.get("params")), num(r.get("tokens"))
        if p is None or t is None:
            continue
        kind = str(r.get("model") or r.get("arch") or "model")
        old = kinds.get(kind, (0.0, 0.0, False))
        kinds[kind] = (max(old[0], p), max(old[1], t), r.get("arch") == "cnn")
    if not kinds:
        return "this run: scale not recorded"
    parts = [f"{'' if len(kinds) == 1 else k.upper() + ' '}{_short(p)} params, {_short(t)} "
             f"{'images' if vision else 'tokens'} (longest run)" for k, (p, t, vision) in kinds.items()]
    return "this run: " + "; ".join(parts)


def evaluate_claim(claim: Claim, tables: Tables) -> Outcome:
    """One claim's outcome: its check's, made inconclusive by a missing table or a gate that fires."""
    missing = [t for t in claim.tables if not tables.get(t)]
    if missing:
        enable = ", ".join(f"analyses.{u}" for u in claim.units) or "its analysis"
        return Outcome(None, None, None, 0, "", "inconclusive",
                       f"not measured: no {', '.join(m + '.csv' for m in missing)} (enable {enable})")
    try:
        out = claim.check.evaluate(tables)
    except NotMeasured as err:
        return Outcome(None, None, None, 0, "", "inconclusive", f"not measured: {err}")
    except (ValueError, ZeroDivisionError, KeyError, TypeError) as err:  # a malformed table, never a crash
        return Outcome(None, None, None, 0, "", "inconclusive", f"could not compute: {type(err).__name__}: {err}")
    blocked = [r for gate in claim.gates if (r := gate(tables))]
    if blocked:
        out = Outcome(out.value, out.low, out.high, out.n, out.statistic, "inconclusive", "; ".join(blocked))
    return out


def evaluate_claims(tables: Tables, claims: Sequence[Claim] = CLAIMS) -> list[Row]:
    """Rows of claims.csv for every claim of every paper the study touches, in catalogue order."""
    papers = touched_papers(tables)
    scale = run_scale(tables)
    rows: list[Row] = []
    for claim in claims:
        if claim.paper not in papers:
            continue
        out = evaluate_claim(claim, tables)
        statistic = out.statistic
        if claim.setting is not None and (note := claim.setting(tables)):
            statistic = f"{statistic}; {note}" if statistic else note
        rows.append({
            "id": claim.id, "paper": claim.paper, "paper_title": PAPERS[claim.paper], "where": claim.where,
            "figure": claim.figure, "claim": claim.claim, "quote": claim.quote, "statistic": statistic,
            "paper_value": claim.paper_value, "value": _finite(out.value), "ci_low": _finite(out.low),
            "ci_high": _finite(out.high), "n": out.n, "verdict": out.verdict, "reason": out.reason,
            "scale": f"{scale} | paper: {PAPER_SCALE[claim.paper]}",
        })
    return rows


def _finite(v: float | None) -> float | None:
    return v if v is not None and math.isfinite(v) else None


def verdict_counts(rows: Sequence[Row]) -> dict[str, int]:
    c = Counter(str(r["verdict"]) for r in rows)
    return {k: c.get(k, 0) for k in ("holds", "contradicted", "inconclusive")}


def summary_line(rows: Sequence[Row]) -> str:
    """'claims: 5 hold, 2 contradicted, 9 inconclusive' (the end of `study run`)."""
    c = verdict_counts(rows)
    if not rows:
        return "claims: none of the papers' claims apply to this study's tables"
    return (f"claims: {c['holds']} hold, {c['contradicted']} contradicted, {c['inconclusive']} inconclusive "
            f"(tables/claims.csv)")


def load_study_tables(tables_dir: Path) -> Tables:
    """A study's tables (`analysis.tables.read_tables`) without claims.csv itself."""
    from wsdlab.analysis.tables import read_tables

    if not tables_dir.is_dir():
        raise FileNotFoundError(f"no tables folder: {tables_dir}")
    return {name: rows for name, rows in read_tables(tables_dir).items() if name != CLAIMS_TABLE}


def write_claims(study_dir: str | Path) -> list[Row]:
    """Evaluate the claims on STUDY/tables/*.csv and write STUDY/tables/claims.csv; return its rows."""
    from wsdlab.analysis.tables import write_table

    tables_dir = Path(study_dir) / "tables"
    rows = evaluate_claims(load_study_tables(tables_dir))
    if rows:
        write_table(rows, tables_dir / f"{CLAIMS_TABLE}.csv", if_changed=True)  # a rerun changes no mtime
    else:
        (tables_dir / f"{CLAIMS_TABLE}.csv").unlink(missing_ok=True)
    return rows
