"""Tables are lists of flat dict rows, stored as CSV (written atomically); the report reads the same files."""

from __future__ import annotations

import csv
import io
import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsdlab.common.io import atomic_write_text
from wsdlab.common.types import Row


def write_table(rows: Sequence[Row], path: str | Path, *, if_changed: bool = False) -> Path:
    """Write rows as CSV; columns are the union of keys in first-seen order. `if_changed` leaves a file
    with exactly this content untouched (its mtime too)."""
    text = table_text(rows)
    path = Path(path)
    if if_changed and path.is_file() and path.read_text() == text:
        return path
    atomic_write_text(path, text)
    return path


def table_text(rows: Sequence[Row]) -> str:
    """The CSV text of rows (write_table's content)."""
    columns: list[str] = []
    for row in rows:
        for key in row:
            if key not in columns:
                columns.append(key)
    buf = io.StringIO()
    writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    writer.writeheader()
    for row in rows:
        writer.writerow({k: _fmt(v) for k, v in row.items()})
    return buf.getvalue()


def _fmt(v: Any) -> Any:
    if isinstance(v, float):
        return repr(v) if math.isfinite(v) else str(v)
    return v


def read_table(path: str | Path) -> list[Row]:
    """Read a CSV table back; numeric-looking cells become floats (ints stay ints)."""
    with open(path, newline="") as f:
        return [{k: _parse(v) for k, v in row.items()} for row in csv.DictReader(f)]


def _parse(v: str) -> Any:
    if v == "":
        return None
    try:
        return int(v)
    except ValueError:
        pass
    try:
        return float(v)
    except ValueError:
        return v


def read_tables(tables_dir: str | Path) -> dict[str, list[Row]]:
    """Every `*.csv` of a folder by name (temporary `.tmp-*` and other hidden files ignored); {} if absent."""
    tables_dir = Path(tables_dir)
    if not tables_dir.is_dir():
        return {}
    return {p.stem: read_table(p) for p in sorted(tables_dir.glob("*.csv")) if not p.name.startswith(".")}
