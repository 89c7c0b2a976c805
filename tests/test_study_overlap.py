"""Analyses start while runs still train, and the study's only runnable run gets every CPU."""

from __future__ import annotations

import json
import threading
from pathlib import Path
from typing import Any, ClassVar

import pytest

from wsdlab.analysis.units import BASE, COOLDOWNS, AnalysisUnit, register_unit, unregister_unit
from wsdlab.study import analyses as study_analyses
from wsdlab.study.analyses import TableScheduler
from wsdlab.study.executors import Executor, JobResult, ProcessExecutor, QueuedRun
from wsdlab.study.plan import expand_plan
from wsdlab.study.resolve import Resolver
from wsdlab.study.runner import train_runs
from wsdlab.study.progress import StudyProgress
from wsdlab.study.spec import parse_study
from wsdlab.study.worker import _serve
from wsdlab.train.checkpoint import write_stub_checkpoint
from wsdlab.train.spec_io import write_spec

EVENTS: list[str] = []
LOCK = threading.Lock()


def log(event: str) -> None:
    with LOCK:
        EVENTS.append(event)


class BaseReader(AnalysisUnit):
    """Reads only the base run."""

    name = "t_base_reader"
    inputs: ClassVar = {"base": BASE}
    tables = ("t_base",)

    def compute(self, ctx: Any, options: Any) -> dict[str, list[dict]]:
        import torch

        log(f"unit:{self.name}")
        log(f"threads:{torch.get_num_threads()}")  # every unit computes with one torch thread on CPU
        return {"t_base": [{"run": r.path.name} for r in ctx.runs("base")]}


class CooldownReader(AnalysisUnit):
    """Reads every cooldown and the base reader's table."""

    name = "t_cooldown_reader"
    inputs: ClassVar = {"cooldowns": COOLDOWNS}
    needs = ("t_base_reader",)
    tables = ("t_cooldowns",)

    def compute(self, ctx: Any, options: Any) -> dict[str, list[dict]]:
        log(f"unit:{self.name}")
        assert ctx.table("t_base")  # the upstream table is there
        return {"t_cooldowns": [{"n": len(ctx.runs("cooldowns"))}]}


class Failing(AnalysisUnit):
    name = "t_failing"
    inputs: ClassVar = {"base": BASE}
    tables = ("t_never",)

    def compute(self, ctx: Any, options: Any) -> dict[str, list[dict]]:
        raise RuntimeError("unit boom")


@pytest.fixture
def fake_units(monkeypatch: pytest.MonkeyPatch):
    EVENTS.clear()
    made = [BaseReader, CooldownReader]
    for cls in made:
        register_unit(cls)
    from wsdlab.analysis.units import get_unit

    monkeypatch.setattr(study_analyses, "units", lambda: [get_unit(c.name) for c in made])
    yield made
    for cls in made:
        unregister_unit(cls.name)


def make_study(**extra: Any):
    data = {"name": "overlap", "base": {"preset": "tiny", "overrides": {"train.steps": 10}},
            "cooldown": {"steps": 4, "shapes": ["linear", "sqrt"], "seeds": [0], "data": "continue"},
            "report": {"enabled": False}}
    data.update(extra)
    return parse_study(data)


def complete_run(path: Path, spec: Any) -> None:
    path.mkdir(parents=True, exist_ok=True)
    write_spec(spec, path / "spec.yaml")
    for step in {*spec.train.checkpoint_steps, spec.train.steps}:  # the final one and those branches need
        write_stub_checkpoint(path / "checkpoints" / str(step), spec, step=step)
    (path / "metrics.jsonl").write_text(json.dumps({"step": spec.train.steps, "loss": 1.0}) + "\n")
    (path / "COMPLETE").write_text(f"{spec.train.steps}\n")


class InlineExecutor(Executor):
    """Trains fake runs when waited on, `slots` at a time; records every job it was given."""

    def __init__(self, slots: int = 2, elsewhere: bool = True) -> None:
        self.slots, self.trains_elsewhere = slots, elsewhere
        self.queue: list[QueuedRun] = []
        self.jobs: list[QueuedRun] = []

    def free_slots(self) -> int:
        return self.slots - len(self.queue)

    def submit(self, job: QueuedRun) -> None:
        self.queue.append(job)
        self.jobs.append(job)

    def wait(self, timeout: float) -> list[JobResult]:
        done, self.queue = self.queue, []
        for job in done:
            log(f"train:{job.key}")
            complete_run(job.path, job.spec)
        return [JobResult(job) for job in done]


def test_units_start_as_soon_as_their_runs_are_complete(tmp_path: Path, fake_units: list) -> None:
    study = make_study()
    plan = expand_plan(study)
    resolver = Resolver(plan, tmp_path)
    tables = TableScheduler(plan, resolver, tmp_path, StudyProgress("t", 0, live=False))
    assert [u.name for u in tables.chosen] == ["t_base_reader", "t_cooldown_reader"]
    executor = InlineExecutor(slots=1)  # one run at a time: the base, then each cooldown

    held: list[int] = []

    def on_complete(keys: set[str], free: int) -> int:
        held.append(tables.poll(keys, free))
        for thread in list(tables._threads.values()):
            thread.join()  # deterministic order for the test
        return 0

    statuses = train_runs(plan, resolver, executor, StudyProgress("t", len(plan), live=False), on_complete=on_complete)
    assert all(s.state == "complete" for s in statuses.values())
    assert max(held) == 1  # one unit at a time while runs train
    assert tables.finish(2) == ["t_base_reader", "t_cooldown_reader"]
    # the base reader ran before the first cooldown trained; the cooldown reader after the last one
    assert EVENTS.index("unit:t_base_reader") < EVENTS.index("train:cd-linear-s0")
    assert "threads:1" in EVENTS
    assert EVENTS.index("unit:t_cooldown_reader") > EVENTS.index("train:cd-sqrt-s0")
    assert (tmp_path / "tables" / "t_cooldowns.csv").read_text().splitlines() == ["n", "2"]
    fingerprints = json.loads((tmp_path / "tables" / ".fingerprints.json").read_text())
    assert set(fingerprints) == {"t_base_reader", "t_cooldown_reader"}

    again = TableScheduler(plan, resolver, tmp_path)  # unchanged: nothing is recomputed
    EVENTS.clear()
    assert again.finish(2) == [] and EVENTS == []


def test_a_failing_unit_raises_from_finish_and_blocks_what_needs_it(tmp_path: Path, fake_units: list,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from wsdlab.analysis.units import get_unit

    register_unit(Failing)
    try:
        monkeypatch.setattr(study_analyses, "units", lambda: [get_unit("t_failing"), get_unit("t_base_reader")])
        study = make_study()
        plan = expand_plan(study)
        resolver = Resolver(plan, tmp_path)
        for run in plan:
            r = resolver.resolve(run)
            complete_run(r.path, r.spec)
        tables = TableScheduler(plan, resolver, tmp_path)
        with pytest.raises(RuntimeError, match="unit boom"):
            tables.finish(1)
        assert not (tmp_path / "tables" / "t_never.csv").exists()
    finally:
        unregister_unit("t_failing")


def test_a_running_unit_keeps_its_slot_from_training(tmp_path: Path) -> None:
    study = make_study()
    plan = expand_plan(study)
    executor = InlineExecutor(slots=2)
    batches: list[int] = []
    orig_submit = executor.submit

    def submit(job: QueuedRun) -> None:
        orig_submit(job)
        batches.append(len(executor.queue))

    executor.submit = submit  # type: ignore[method-assign]
    # the analyses hold one of the two slots as soon as the base is complete
    train_runs(plan, Resolver(plan, tmp_path), executor, StudyProgress("t", len(plan), live=False),
               on_complete=lambda keys, free: 1 if "base" in keys else 0)
    assert batches == [1, 1, 1]  # base alone, then one cooldown at a time
    assert [job.alone for job in executor.jobs] == [True, False, False]  # never widened beside an analysis


def test_the_only_runnable_run_is_marked_alone(tmp_path: Path) -> None:
    study = make_study()
    plan = expand_plan(study)
    executor = InlineExecutor(slots=2)
    train_runs(plan, Resolver(plan, tmp_path), executor, StudyProgress("t", len(plan), live=False))
    alone = {job.key: job.alone for job in executor.jobs}
    assert alone == {"base": True, "cd-linear-s0": False, "cd-sqrt-s0": False}


def test_a_run_with_early_branches_is_not_alone(tmp_path: Path) -> None:
    study = parse_study({
        "name": "early",
        "stages": {
            "wso": {"preset": "tiny", "overrides": {"train.steps": 10, "schedule.kind": "wso"}},
            "cooldown": {"from": "wso", "at": {"step": 6}, "branch": {"shape": "linear", "steps": 4}},
        },
    })
    plan = expand_plan(study)
    executor = InlineExecutor(slots=2)
    train_runs(plan, Resolver(plan, tmp_path), executor, StudyProgress("t", len(plan), live=False))
    assert [job.alone for job in executor.jobs] == [False, True]  # the branch at step 6 could start meanwhile


def test_process_executor_widens_only_a_lone_cpu_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import wsdlab.study.executors as ex

    monkeypatch.setattr(ex, "available_cpus", lambda: {0, 1})
    monkeypatch.setattr(ex, "_cuda_device_count", lambda: 0)
    executor = ProcessExecutor(tmp_path, workers=2)
    assert executor.trains_elsewhere
    sent: list[dict] = []

    class Worker:
        job = None

        def send(self, request: dict) -> None:
            sent.append(request)

    monkeypatch.setattr(executor, "_worker", lambda i: executor._workers.setdefault(i, Worker()))
    plan = expand_plan(make_study())
    r = Resolver(plan, tmp_path).resolve(plan["base"])
    executor.submit(QueuedRun("base", r.spec, r.path, alone=True))
    assert sent[-1]["threads"] == 2 and sent[-1]["cpus"] == "0,1"
    executor._workers[0].job = None
    executor.submit(QueuedRun("a", r.spec, r.path / "a"))
    executor.submit(QueuedRun("b", r.spec, r.path / "b", alone=True))  # another job runs: not widened
    assert "threads" not in sent[-2] and "threads" not in sent[-1]


def test_worker_widens_for_one_job_then_restores(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import io

    import wsdlab.study.worker as worker

    pins: list[tuple] = []
    monkeypatch.setattr(worker, "pin_threads", lambda threads, cpus: pins.append((threads, cpus)))
    monkeypatch.setattr(worker, "run_job", lambda *a, **k: pins.append(("job",)))
    monkeypatch.setattr(worker.os, "dup2", lambda fd, to: None)  # keep pytest's stdout/stderr where they are
    spec = tmp_path / "spec.yaml"
    spec.write_text("{}\n")
    lines = [json.dumps({"spec": str(spec), "out": str(tmp_path / "o"), "name": "x", "log": str(tmp_path / "x.log"),
                         "threads": 2, "cpus": "0,1"}),
             json.dumps({"spec": str(spec), "out": str(tmp_path / "o"), "name": "y", "log": str(tmp_path / "y.log")})]
    out = io.StringIO()
    _serve(io.StringIO("\n".join(lines) + "\n"), out, worker.SinkOptions(), threads=1, cpus=[1])
    assert pins == [(2, [0, 1]), ("job",), (1, [1]), ("job",)]
    assert [json.loads(x) for x in out.getvalue().splitlines()] == [{"error": None, "type": None}] * 2


def test_runs_of_one_identity_share_a_folder_whatever_is_resolved_first(tmp_path: Path) -> None:
    from wsdlab.study.analyses import study_runs

    study = parse_study({  # the hyperparameter baseline is the seed-0 sqrt cooldown: one run, two keys
        "name": "alias", "base": {"preset": "tiny", "overrides": {"train.steps": 10}},
        "cooldown": {"steps": 4, "shapes": ["sqrt"], "seeds": [0], "data": "continue"},
        "hyperparams": {"seeds": [0], "reset_optimizer": True}, "report": {"enabled": False}})
    plan = expand_plan(study)
    first = Resolver(plan, tmp_path)
    base = first.resolve(plan["base"])
    complete_run(base.path, base.spec)
    in_order = {r.key: r.path for r in study_runs(plan, first)}
    twins = [k for k in in_order if in_order[k] == in_order["cd-sqrt-s0"]]
    assert len(twins) == 2
    later = Resolver(plan, tmp_path)  # an analysis asking only for the later key first
    assert {r.key: r.path for r in study_runs(plan, later, keys={twins[1]})} == {twins[1]: in_order["cd-sqrt-s0"]}
