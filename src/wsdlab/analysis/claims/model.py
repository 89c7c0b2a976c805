"""A claim as data: what the paper says, the statistic that tests it, and the gates that can block a verdict.

A claim's `check` is one of a few test kinds, each a frozen dataclass with `evaluate(tables) -> Outcome`:

    Difference   mean(a) - mean(b) over seeds lies on a side of 0 (or within a margin of it)
    Ordering     every group of `best` beats every other group (pairwise differences, all decided)
    PerUnit      the mean over runs of a per-run statistic lies on a side of a threshold
    Correlation  the correlation of points (one per shape, say) has a sign
    Reported     the table already holds a value and its interval (e.g. wso_correlation's Fisher z)

They read tables through small extractor functions (`claims/extract.py`) that raise `NotMeasured`
when a table or column is missing. A gate is a function `tables -> reason | None`: a measurement too
poor to decide (an unconverged solver, a trace whose standard error swamps the difference, a reference
worse than the runs it judges) makes the claim inconclusive with that reason, whatever the interval.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass, field

from wsdlab.analysis.claims.stats import Interval, Side, Verdict, difference_interval, fisher_interval, \
    mean_interval, pearson, spearman, verdict
from wsdlab.common.types import Tables

Samples = dict[str, dict[object, float]]  # group -> unit (seed, run) -> value
Gate = Callable[[Tables], "str | None"]


class NotMeasured(Exception):
    """A table, column or group a claim needs is absent: the claim is inconclusive with this reason."""


@dataclass(frozen=True)
class Outcome:
    """One claim's result: this run's value and 95% interval, the verdict and why."""

    value: float | None
    low: float | None
    high: float | None
    n: int
    statistic: str
    verdict: Verdict
    reason: str = ""


def _outcome(iv: Interval | None, side: Side, threshold: float, statistic: str, margin: float = 0.0,
             how: str = "") -> Outcome:
    v, reason = verdict(iv, side, threshold, margin)
    if iv is None:
        return Outcome(None, None, None, 0, statistic, v, reason)
    low = iv.low if math.isfinite(iv.low) else None
    high = iv.high if math.isfinite(iv.high) else None
    if v == "inconclusive" and how == "one run a side":  # a difference of single runs, no sibling spread
        reason = "one seed a side and no sibling seed spread: undecidable by design"
    stat = f"{statistic} ({how})" if how else statistic
    return Outcome(iv.value, low, high, iv.n, stat, v, reason)


@dataclass(frozen=True)
class Difference:
    """mean(samples[a]) - mean(samples[b]) is `side` 0 (paired over seeds; '~': within +-margin)."""

    samples: Callable[[Tables], Samples]
    a: str | Callable[[Samples], str]  # a group name, or a function choosing it from the samples
    b: str | Callable[[Samples], str]
    side: Side
    what: str
    threshold: float = 0.0
    margin: float = 0.0
    spread: Callable[[Tables], float | None] | None = None

    def evaluate(self, tables: Tables) -> Outcome:
        s = self.samples(tables)
        a, b = (g if isinstance(g, str) else g(s) for g in (self.a, self.b))
        for g in (a, b):
            if not s.get(g):
                raise NotMeasured(f"no runs of '{g}'")
        iv, how = difference_interval(s[a], s[b], self.spread(tables) if self.spread else None)
        return _outcome(iv, self.side, self.threshold, f"{self.what}: {a} - {b}", self.margin, how)


@dataclass(frozen=True)
class Ordering:
    """Every group of `best` is lower (or higher) than every other group: each pairwise difference is
    decided alone; holds when all hold, contradicted when any is contradicted. The row shows the
    deciding pair (the contradicting one, else the least clear one)."""

    samples: Callable[[Tables], Samples]
    best: tuple[str, ...]
    what: str
    lower: bool = True
    spread: Callable[[Tables], float | None] | None = None

    def evaluate(self, tables: Tables) -> Outcome:
        s = self.samples(tables)
        missing = [g for g in self.best if not s.get(g)]
        if missing:
            raise NotMeasured(f"no runs of {', '.join(missing)}")
        others = [g for g in s if g not in self.best and s[g]]
        if not others:
            raise NotMeasured("no other group to compare with")
        side: Side = "<" if self.lower else ">"
        spread = self.spread(tables) if self.spread else None
        outcomes = []
        for a in self.best:
            for c in others:
                iv, how = difference_interval(s[a], s[c], spread)
                outcomes.append(_outcome(iv, side, 0.0, f"{self.what}: {a} - {c}", how=how))
        worst = [o for o in outcomes if o.verdict == "contradicted"]
        if worst:
            pick = max(worst, key=lambda o: (o.low if self.lower else -o.high) or 0.0)  # type: ignore[operator]
            extra = f"; {len(worst)} of {len(outcomes)} pairs contradicted"
        else:
            undecided = [o for o in outcomes if o.verdict == "inconclusive"]
            pool = undecided or outcomes

            def weakest(o: Outcome) -> float:
                if o.low is None or o.high is None:
                    return math.inf
                return o.high if self.lower else -o.low
            pick = max(pool, key=weakest)
            extra = f"; {len(outcomes) - len(undecided)} of {len(outcomes)} pairs decided" if undecided else \
                f"; all {len(outcomes)} pairs hold"
        verdict_: Verdict = "contradicted" if worst else ("holds" if all(o.verdict == "holds" for o in outcomes)
                                                          else "inconclusive")
        return Outcome(pick.value, pick.low, pick.high, pick.n, pick.statistic + extra, verdict_,
                       "" if verdict_ != "inconclusive" else pick.reason)


@dataclass(frozen=True)
class PerUnit:
    """The mean over runs (seeds) of a per-run statistic is `side` `threshold`."""

    values: Callable[[Tables], dict[object, float]]
    side: Side
    what: str
    threshold: float = 0.0
    margin: float = 0.0

    def evaluate(self, tables: Tables) -> Outcome:
        vals = self.values(tables)
        if not vals:
            raise NotMeasured("no runs")
        iv = mean_interval(list(vals.values()))
        if iv is None:
            v = float(next(iter(vals.values())))
            iv = Interval(v, float("nan"), float("nan"), 1)
        return _outcome(iv, self.side, self.threshold, self.what, self.margin, f"mean over {len(vals)} runs")


@dataclass(frozen=True)
class Correlation:
    """The correlation of (x, y) points (Pearson or Spearman) is `side` 0; Fisher-z interval."""

    points: Callable[[Tables], tuple[list[float], list[float]]]
    side: Side
    what: str
    method: str = "pearson"

    def evaluate(self, tables: Tables) -> Outcome:
        x, y = self.points(tables)
        if len(x) < 3:
            raise NotMeasured(f"{len(x)} points: a correlation needs at least 3")
        r = spearman(x, y) if self.method == "spearman" else pearson(x, y)
        iv = fisher_interval(r, len(x), spearman=self.method == "spearman")
        if iv is None:
            out = Outcome(r if math.isfinite(r) else None, None, None, len(x), f"{self.what} ({self.method})",
                          "inconclusive", f"{len(x)} points: Fisher's interval needs at least 4")
            return out
        return _outcome(iv, self.side, 0.0, self.what, how=f"{self.method} r over {len(x)} points, Fisher z")


@dataclass(frozen=True)
class Reported:
    """The table gives the statistic and its interval itself."""

    interval: Callable[[Tables], Interval]
    side: Side
    what: str
    threshold: float = 0.0
    no_interval: str = ""  # the reason shown when the table gives a value but no interval

    def evaluate(self, tables: Tables) -> Outcome:
        iv = self.interval(tables)
        out = _outcome(iv, self.side, self.threshold, self.what)
        if out.low is None and self.no_interval:
            return Outcome(out.value, None, None, iv.n, out.statistic, "inconclusive",
                           self.no_interval.format(n=iv.n))
        return out


Check = Difference | Ordering | PerUnit | Correlation | Reported


@dataclass(frozen=True)
class Claim:
    """One finding of one paper, and how a study's tables test it.

    `quote` is the paper's sentence verbatim (tests check it against ../shared/papers); `tables` the
    tables the check reads (a missing one makes the claim inconclusive: not measured); `units` the
    analyses that write them (named in that reason); `figure` the report figure it is about.
    """

    id: str
    paper: str
    where: str
    claim: str
    quote: str
    check: Check
    tables: tuple[str, ...]
    units: tuple[str, ...] = ()
    figure: str = ""
    paper_value: str = ""
    gates: tuple[Gate, ...] = field(default=())
    note: str = ""  # the reading chosen where the paper is ambiguous
    setting: Callable[[Tables], str] | None = None  # how this run measured it (e.g. the recency stride), shown
    # beside the statistic
