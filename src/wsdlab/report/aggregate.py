"""Pure helpers that turn table rows into what a figure or an HTML summary needs."""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np

from wsdlab.common.types import Row, Tables
from wsdlab.report.style import order_groups


def require(tables: Tables, name: str, columns: Sequence[str]) -> list[Row]:
    """Rows of table `name`, checked to be non-empty and to hold `columns` (errors name table and column)."""
    if name not in tables:
        raise ValueError(f"table '{name}.csv' is missing")
    rows = tables[name]
    if not rows:
        raise ValueError(f"table '{name}.csv' has no rows")
    have = list(rows[0])
    missing = [c for c in columns if c not in have]
    if missing:
        raise ValueError(f"table '{name}.csv' lacks column(s) {', '.join(missing)}; it has: {', '.join(have)}")
    return rows


def has_values(rows: Sequence[Row], column: str) -> bool:
    """True when `column` exists and at least one row has a value in it."""
    return any(r.get(column) is not None for r in rows)


def group_by(rows: Iterable[Row], *keys: str) -> dict[Any, list[Row]]:
    """Rows grouped by the value(s) of `keys` (a tuple key when several), groups in paper order."""
    groups: dict[Any, list[Row]] = {}
    for row in rows:
        k = tuple(row.get(key) for key in keys) if len(keys) > 1 else row.get(keys[0])
        groups.setdefault(k, []).append(row)
    return {k: groups[k] for k in order_groups(groups)}


def floats(rows: Sequence[Row], column: str) -> np.ndarray:
    """Column as a float array; empty cells (None) and text become NaN."""
    return np.array([to_float(r.get(column)) for r in rows], dtype=float)


def to_float(v: Any) -> float:
    """A cell as a float: numbers (and booleans) as such, anything else NaN."""
    return float(v) if isinstance(v, (int, float)) else math.nan


def curve_stats(rows: Sequence[Row], x: str, y: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """(xs, mean, min, max) of `y` over rows sharing each `x` (e.g. over seeds), xs sorted; NaNs ignored."""
    xs = floats(rows, x)
    ys = floats(rows, y)
    keep = np.isfinite(xs) & np.isfinite(ys)
    xs, ys = xs[keep], ys[keep]
    ux = np.unique(xs)
    mean = np.array([ys[xs == u].mean() for u in ux])
    lo = np.array([ys[xs == u].min() for u in ux])
    hi = np.array([ys[xs == u].max() for u in ux])
    return ux, mean, lo, hi


def divergence_step(rows: Sequence[Row], x: str, y: str) -> float | None:
    """The last `x` at which all rows (>1) agree on `y` (a shared history, e.g. the base run before the
    branch point), provided later `x` exist; None when the rows differ from the start or never do."""
    xs, ys = floats(rows, x), floats(rows, y)
    shared = None
    for u in np.unique(xs[np.isfinite(xs)]):
        vals = ys[xs == u]
        if len(vals) > 1 and np.all(vals == vals[0]):
            shared = u
        else:
            break
    return None if shared is None or shared == np.nanmax(xs) else float(shared)


def perplexity(loss: np.ndarray | float) -> np.ndarray | float:
    """Perplexity from mean cross-entropy in nats: exp(loss)."""
    return np.exp(loss)


def sort_values(values: Iterable[Any]) -> list[Any]:
    """Unique values, numerically sorted when all are numbers, else in first-seen order."""
    unique = list(dict.fromkeys(values))
    if all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in unique):
        return sorted(unique)
    return unique


def last_per_group(rows: Sequence[Row], group: Sequence[str], x: str, values: Sequence[str]) -> list[Row]:
    """For each group: the row values at the largest `x`, averaged over rows sharing it (e.g. seeds)."""
    out: list[Row] = []
    for key, members in group_by(rows, *group).items():
        xs = floats(members, x)
        if not np.isfinite(xs).any():
            continue
        last = np.nanmax(xs)
        at_last = [m for m, xv in zip(members, xs) if xv == last]
        row: Row = dict(zip(group, key if len(group) > 1 else (key,)))
        row[x] = _as_int(last)
        row["n"] = len(at_last)
        for v in values:
            vals = floats(at_last, v)
            row[v] = float(np.nanmean(vals)) if np.isfinite(vals).any() else None
        out.append(row)
    return out


def mean_per_group(rows: Sequence[Row], group: Sequence[str], values: Sequence[str]) -> list[Row]:
    """For each group: the mean of each value column and the number of rows averaged."""
    out: list[Row] = []
    for key, members in group_by(rows, *group).items():
        row: Row = dict(zip(group, key if len(group) > 1 else (key,)))
        row["n"] = len(members)
        for v in values:
            vals = floats(members, v)
            row[v] = float(np.nanmean(vals)) if np.isfinite(vals).any() else None
        out.append(row)
    return out


def pivot(rows: Sequence[Row], index: str, columns: str, values: Sequence[str]) -> list[Row]:
    """Wide table: one row per `index` value, one column per (`columns` value, value name)."""
    out: dict[Any, Row] = {}
    for row in rows:
        wide = out.setdefault(row.get(index), {index: row.get(index)})
        for v in values:
            wide[f"{row.get(columns)} {v}"] = row.get(v)
    return [out[k] for k in order_groups(out)]


def _as_int(v: float) -> int | float:
    return int(v) if float(v).is_integer() else v
