"""Study runner with a fake training function: dependency order, skip-complete, resume, failures, executors."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from wsdlab.common.errors import RunLockedError

from wsdlab.study.executors import ProcessExecutor, QueuedRun, SequentialExecutor, make_executor, plan_slots
from wsdlab.study.plan import expand_plan
from wsdlab.study.progress import last_train_row
from wsdlab.study.resolve import Resolver
from wsdlab.study.runner import StudyError, plan_status, run_study, study_lock
from wsdlab.study.spec import parse_study
from wsdlab.train.checkpoint import write_stub_checkpoint
from wsdlab.train.spec_io import write_spec


def study(**extra):
    data = {
        "name": "fake",
        "base": {"preset": "tiny", "overrides": {"train.steps": 10}},
        "cooldown": {"steps": 4, "shapes": ["linear", "sqrt"], "seeds": [0, 1], "data": "continue"},
        "reference": {"multiplier": 2},
        "hyperparams": {"seeds": [0], "reset_optimizer": True},
        "report": {"enabled": False},
    }
    data.update(extra)
    return parse_study(data)


class FakeTrain:
    """Stands in for wsdlab.train.train: writes the files a complete run has, records each call."""

    def __init__(self, fail: set[str] = frozenset()) -> None:
        self.calls: list[Path] = []
        self.fail = set(fail)

    def __call__(self, spec, out: Path, *, sinks=()) -> None:
        out = Path(out)
        self.calls.append(out)
        out.mkdir(parents=True, exist_ok=True)
        write_spec(spec, out / "spec.yaml")
        if any(out.name.startswith(prefix) for prefix in self.fail):
            raise RuntimeError(f"boom in {out.name}")
        ckpt = out / "checkpoints" / str(spec.train.steps)
        write_stub_checkpoint(ckpt, spec)
        (out / "metrics.jsonl").write_text(json.dumps({"step": spec.train.steps, "loss": 1.0}) + "\n")
        (out / "COMPLETE").write_text(f"{spec.train.steps}\n")


def names(paths) -> list[str]:
    return [p.name.rsplit("-", 1)[0] for p in paths]


def test_runs_everything_in_dependency_order_then_skips(tmp_path: Path) -> None:
    fake = FakeTrain()
    spec = study()
    statuses = run_study(spec, tmp_path, executor=SequentialExecutor(fake), analyses=False)
    assert all(s.state == "complete" for s in statuses.values())
    assert names(fake.calls)[0] == "base"
    # 1 base + 4 cooldowns + 2 references + reset (the baseline shares cd-sqrt-s0's folder)
    assert len(fake.calls) == len(set(fake.calls)) == 8
    assert (tmp_path / "study.yaml").is_file() and (tmp_path / "tables" / "runs.csv").is_file()
    index = (tmp_path / "tables" / "runs.csv").read_text().splitlines()
    assert index[0].startswith("key,stage") and len(index) == 1 + len(statuses)

    mtimes = {p: os.stat(p).st_mtime_ns for p in tmp_path.rglob("*") if "runs" in p.parts and p.is_file()}
    again = FakeTrain()
    run_study(spec, tmp_path, executor=SequentialExecutor(again), analyses=False)
    assert again.calls == []
    assert mtimes == {p: os.stat(p).st_mtime_ns for p in mtimes}


def test_partial_run_is_resumed_and_failures_are_isolated(tmp_path: Path) -> None:
    spec = study()
    first = FakeTrain(fail={"cd-linear-s1"})
    with pytest.raises(StudyError, match="cd-linear-s1") as info:
        run_study(spec, tmp_path, executor=SequentialExecutor(first), analyses=False)
    assert "boom" in str(info.value)
    assert len(first.calls) == 8  # every other run still completed
    failed_dir = next(p for p in first.calls if p.name.startswith("cd-linear-s1"))
    assert failed_dir.is_dir() and not (failed_dir / "COMPLETE").exists()

    plan = expand_plan(spec)
    status = plan_status(plan, Resolver(plan, tmp_path))
    assert status["cd-linear-s1"].state == "waiting" and "partial" in status["cd-linear-s1"].detail
    assert sum(s.state == "complete" for s in status.values()) == len(plan) - 1

    second = FakeTrain()
    run_study(spec, tmp_path, executor=SequentialExecutor(second), analyses=False)
    assert second.calls == [failed_dir]  # resumed into the same folder, nothing else redone


def test_a_failed_run_prints_one_line_and_its_log(tmp_path: Path) -> None:
    from io import StringIO

    from rich.console import Console

    from wsdlab.study.progress import StudyProgress

    out = StringIO()
    progress = StudyProgress("s", 0, Console(file=out, width=300), live=False)
    with pytest.raises(StudyError, match="cd-linear-s1"):
        run_study(study(), tmp_path, executor=SequentialExecutor(FakeTrain(fail={"cd-linear-s1"})), analyses=False,
                  progress=progress)
    failed = [line for line in out.getvalue().splitlines() if line.startswith("failed")]
    assert len(failed) == 1 and "Traceback" not in out.getvalue() and 'File "' not in out.getvalue()
    run_dir = next((tmp_path / "runs").glob("cd-linear-s1-*"))
    log = tmp_path / "logs" / f"{run_dir.name}.log"
    assert failed[0].startswith("failed cd-linear-s1") and failed[0].endswith(f"RuntimeError: boom in {run_dir.name} "
                                                                             f"(log: {log})")
    text = log.read_text()  # the whole traceback, down to the raising frame
    assert text.startswith("Traceback (most recent call last)") and "raise RuntimeError" in text


def test_failed_base_blocks_its_branches(tmp_path: Path) -> None:
    fake = FakeTrain(fail={"base"})
    with pytest.raises(StudyError) as info:
        run_study(study(), tmp_path, executor=SequentialExecutor(fake), analyses=False)
    assert names(fake.calls) == ["base"]
    assert "parent 'base' did not complete" in str(info.value)


def test_study_lock_refuses_a_second_runner(tmp_path: Path) -> None:
    with study_lock(tmp_path):
        with pytest.raises(RunLockedError, match="another `wsdlab study run`"):
            with study_lock(tmp_path):
                pass
    with study_lock(tmp_path):  # released
        pass


def test_plan_slots_split_cpus_and_gpus() -> None:
    slots = plan_slots(2, cpus=[0, 1, 2, 3], num_gpus=0)
    assert [s.cpus for s in slots] == [(0, 1), (2, 3)] and all(s.threads == 2 and s.gpu is None for s in slots)
    slots = plan_slots(3, cpus=[0, 1], num_gpus=2)
    assert [s.gpu for s in slots] == [0, 1, 0] and all(s.threads >= 1 for s in slots)
    with pytest.raises(ValueError, match="--workers"):
        plan_slots(0)


def test_auto_workers_one_per_core_capped(monkeypatch: pytest.MonkeyPatch) -> None:
    import wsdlab.study.executors as ex

    monkeypatch.setattr(ex, "_cuda_device_count", lambda: 0)
    monkeypatch.setattr(ex, "available_cpus", lambda: {0, 1})
    assert ex.auto_workers() == 2
    monkeypatch.setattr(ex, "available_cpus", lambda: set(range(64)))
    assert ex.auto_workers() == 4
    monkeypatch.setattr(ex, "_cuda_device_count", lambda: 8)
    assert ex.auto_workers() == 8


def test_make_executor_choices(tmp_path: Path) -> None:
    assert isinstance(make_executor("local", tmp_path), SequentialExecutor)
    assert isinstance(make_executor("local", tmp_path, workers=2), ProcessExecutor)
    with pytest.raises(ValueError, match="--executor"):
        make_executor("cloud", tmp_path)
    try:
        import submitit  # noqa: F401
    except ImportError:
        with pytest.raises(ValueError, match=r"wsdlab\[slurm\]"):
            make_executor("slurm", tmp_path)


def test_slurm_executor_without_slurm_names_the_local_executor(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """No `sbatch` on PATH: a ConfigError pointing at --executor local, not submitit's quiet local fallback."""
    pytest.importorskip("submitit")
    from wsdlab.common.errors import ConfigError

    monkeypatch.delenv("WSDLAB_SUBMITIT_CLUSTER", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))  # no sbatch here
    with pytest.raises(ConfigError, match="use --executor local"):
        make_executor("slurm", tmp_path)
    monkeypatch.setenv("WSDLAB_SUBMITIT_CLUSTER", "debug")  # the tests' way to submitit's own clusters
    assert make_executor("slurm", tmp_path).executor.cluster == "debug"


def test_process_executor_reports_a_failing_worker(tmp_path: Path) -> None:
    """A worker that cannot train exits non-zero; the executor returns its log tail as the error."""
    spec = expand_plan(study()).runs[0].spec.model_copy(update={"init_from": str(tmp_path / "missing")})
    ex = ProcessExecutor(tmp_path, workers=1, num_gpus=0)
    ex.submit(QueuedRun("base", spec, tmp_path / "runs" / "base-x"))
    results = []
    while not results:
        results = ex.wait(timeout=30)
    ex.close()
    assert results[0].error is not None and "missing" in results[0].error
    assert (tmp_path / "logs" / "base-x.log").is_file() and (tmp_path / "jobs" / "base-x.yaml").is_file()


def test_last_train_row_reads_the_tail(tmp_path: Path) -> None:
    assert last_train_row(tmp_path) is None
    lines = [{"step": i, "loss": 1.0 / (i + 1)} for i in range(2000)] + [{"split": "val", "step": 1999, "val_loss": 0.5}]
    text = "\n".join(json.dumps(r) for r in lines) + '\n{"step": 20'  # a half-written last line
    (tmp_path / "metrics.jsonl").write_text(text)
    assert last_train_row(tmp_path) == {"step": 1999, "loss": 1.0 / 2000}


def test_slurm_executor_with_submitit_debug_cluster(tmp_path: Path) -> None:
    pytest.importorskip("submitit")  # optional extra `slurm`: skipped when not installed
    from wsdlab.study.executors import SlurmExecutor
    from wsdlab.study.spec import SlurmConfig

    fake = FakeTrain()
    ex = SlurmExecutor(tmp_path, SlurmConfig(partition="gpu"), cluster="debug", run_fn=fake)
    statuses = run_study(study(), tmp_path, executor=ex, analyses=False)
    assert all(s.state == "complete" for s in statuses.values()) and len(fake.calls) == 8


def test_bad_branch_overrides_fail_before_any_training(tmp_path: Path) -> None:
    spec = study(hyperparams={"seeds": [0], "batch_scales": [3]})
    bad = study(cooldown={"steps": 4, "shapes": ["linear"], "seeds": [0], "data": "continue",
                          "overrides": {"train.batch_size": -1}})
    fake = FakeTrain()
    with pytest.raises(ValueError, match=r"(?s)run 'cd-linear-s0'.*train.batch_size"):
        run_study(bad, tmp_path, executor=SequentialExecutor(fake), analyses=False)
    assert fake.calls == []
    run_study(spec, tmp_path / "ok", executor=SequentialExecutor(fake), analyses=False)
    assert fake.calls


def test_process_executor_keeps_one_worker_alive_across_runs(tmp_path: Path) -> None:
    """Two runs on one slot train in the same long-lived worker process (start-up paid once), each
    with its own log; the worker goes away on close()."""
    spec = expand_plan(study()).runs[0].spec
    tiny = spec.model_copy(update={"train": spec.train.model_copy(update={"steps": 2, "eval_every": 2})})
    ex = ProcessExecutor(tmp_path, workers=1, num_gpus=0)
    pids = []
    try:
        for name in ("a", "b"):
            ex.submit(QueuedRun(name, tiny.model_copy(update={"name": name}), tmp_path / "runs" / name))
            assert ex.free_slots() == 0
            pids.append(ex._workers[0].proc.pid)
            results = []
            while not results:
                results = ex.wait(timeout=60)
            assert results[0].error is None, results[0].error
            assert ex.free_slots() == 1
    finally:
        proc = ex._workers[0].proc
        ex.close()
    assert pids[0] == pids[1] and proc.poll() is not None
    for name in ("a", "b"):
        assert (tmp_path / "runs" / name / "COMPLETE").is_file()
        assert (tmp_path / "logs" / f"{name}.log").is_file()
