"""The study's time-left estimate (wsdlab.study.progress): measured FLOPs/s of the finished runs applied to the
planned FLOPs of the runs left; shown in the summary and on each finished run's line."""

from __future__ import annotations

import json
import re
from io import StringIO
from pathlib import Path

import pytest
from rich.console import Console

from wsdlab.study import progress as progress_module
from wsdlab.study.compute import own_flops
from wsdlab.study.executors import SequentialExecutor
from wsdlab.study.plan import expand_plan
from wsdlab.study.progress import StudyProgress, format_left, time_left
from wsdlab.study.runner import run_study

from test_study_runner import FakeTrain, study


class Clock:
    """A stand-in for the time module: monotonic() returns `now`, set by the test."""

    def __init__(self) -> None:
        self.now = 0.0

    def monotonic(self) -> float:
        return self.now


def test_time_left_by_hand() -> None:
    assert time_left([], 1000.0) is None  # no run finished yet
    assert time_left([(0.0, 3.0)], 1000.0) is None  # a run that trained nothing measures no speed
    # 400 FLOPs in 4 s = 100 FLOP/s (total over total: the 300-FLOP run weighs three times the other)
    assert time_left([(100.0, 2.0), (300.0, 2.0)], 1000.0) == 10.0
    assert time_left([(100.0, 2.0), (300.0, 2.0)], 1000.0, parallel=4) == 2.5
    assert time_left([(100.0, 2.0)], 0.0) == 0.0


def test_format_left_rounds_to_what_it_knows() -> None:
    assert [format_left(s) for s in (0.2, 7.4, 12.0, 54.0, 55.0, 100.0, 179.0, 3599.0, 7500.0)] == [
        "~1 s", "~7 s", "~10 s", "~50 s", "~1 min", "~2 min", "~3 min", "~1 h 00 min", "~2 h 05 min"]


def test_estimate_from_runs_trained_not_skipped_nor_failed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    out = StringIO()
    costs = {"skip": 5000.0, "a": 200.0, "bad": 300.0, "b": 600.0, "c": 1200.0, "d": 400.0}
    prog = StudyProgress("s", len(costs), Console(file=out, width=300), live=False, costs=costs)
    prog.skipped("skip")  # already complete: neither speed nor time left
    prog.started("a", tmp_path / "a", 0, 10)
    assert prog.estimate() is None  # nothing finished yet
    clock.now = 4.0
    prog.finished("a", None)  # 200 FLOPs in 4 s: 50 FLOP/s
    assert prog.estimate() == (300.0 + 600.0 + 1200.0 + 400.0) / 50.0
    prog.started("bad", tmp_path / "bad", 0, 10)
    clock.now = 100.0
    prog.finished("bad", "RuntimeError: boom")  # a failure measures nothing and leaves nothing to do
    assert prog.estimate() == (600.0 + 1200.0 + 400.0) / 50.0

    # b resumes a partial run: its metrics reach step 5 of 0..10, so only half its FLOPs are trained now
    (tmp_path / "b").mkdir()
    (tmp_path / "b" / "metrics.jsonl").write_text(json.dumps({"step": 5, "loss": 2.0}) + "\n")
    prog.started("b", tmp_path / "b", 0, 10)
    # a running run counts for the share of its steps still to train (5 of 10 logged)
    assert prog.remaining_flops() == 300.0 + 1200.0 + 400.0
    clock.now = 102.0
    prog.finished("b", None)  # 300 FLOPs in 2 s; with a's: 500 FLOPs in 6 s
    assert prog.estimate() == pytest.approx((1200.0 + 400.0) * 6.0 / 500.0)

    # c and d side by side: the estimate counts two runs at once, then one once a single run is left
    prog.started("c", tmp_path / "c", 0, 10)
    prog.started("d", tmp_path / "d", 0, 10)
    assert prog.estimate() == pytest.approx((1200.0 + 400.0) * 6.0 / 500.0 / 2)
    clock.now = 110.0
    prog.finished("d", None)  # 400 FLOPs in 8 s; with a's and b's: 900 in 14 s
    assert prog.estimate() == pytest.approx(1200.0 * 14.0 / 900.0)
    clock.now = 130.0
    prog.finished("c", None)
    assert prog.estimate() is None  # nothing left

    lines = [line for line in out.getvalue().splitlines() if " done " in line]
    assert lines == ["[2/6] done a in 4.0 s · ~50 s left", "[4/6] done b in 2.0 s · ~20 s left",
                     "[5/6] done d in 8.0 s · ~20 s left", "[6/6] done c in 28.0 s"]
    assert prog.summary() == "study s: 5 done (1 already complete) · 0 running · 0 left · 1 failed, 0 not run"


def test_summary_shows_the_time_left(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    clock = Clock()
    monkeypatch.setattr(progress_module, "time", clock)
    prog = StudyProgress("s", 3, Console(file=StringIO()), live=False, costs={"a": 100.0, "b": 9000.0, "c": 9000.0})
    prog.started("a", tmp_path / "a", 0, 10)
    assert prog.summary() == "study s: 0 done (0 already complete) · 1 running · 2 left"
    clock.now = 1.0
    prog.finished("a", None)
    assert prog.summary() == "study s: 1 done (0 already complete) · 0 running · 2 left · ~3 min left"


def test_run_study_passes_each_runs_own_flops(tmp_path: Path) -> None:
    out = StringIO()
    prog = StudyProgress("s", 0, Console(file=out, width=300), live=False)
    spec = study()
    run_study(spec, tmp_path, executor=SequentialExecutor(FakeTrain()), analyses=False, progress=prog)
    assert prog.costs == own_flops({run.key: run.spec for run in expand_plan(spec)})
    # a cooldown trains its own 4 steps after the base's 10, a reference 8: same model and batch
    assert prog.costs["cd-linear-s0"] == pytest.approx(prog.costs["base"] * 4 / 10)
    assert prog.costs["ref-sqrt-s0"] == pytest.approx(prog.costs["base"] * 8 / 10)
    first = next(line for line in out.getvalue().splitlines() if " done " in line)
    assert re.fullmatch(r"\[1/9\] done base in \d+\.\d s · ~\d+ (s|min|h \d\d min) left", first), first
