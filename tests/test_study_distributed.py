"""Study runs of several ranks (`resources.gpus_per_run`): two gloo ranks per run through the local worker
processes (torchrun) and through submitit's local cluster train the same weights as one process; a run
stopped by a preemption (`Preempted`) is submitted again and resumes."""

from __future__ import annotations

import os
import signal
import stat
import sys
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from wsdlab.study.executors import ProcessExecutor, QueuedRun, SequentialExecutor, SlurmExecutor
from wsdlab.study.plan import expand_plan
from wsdlab.study.resources import Resources
from wsdlab.study.runner import run_study
from wsdlab.study.spec import SlurmConfig, parse_study
from wsdlab.train import RunDir, run_preset


def study(ranks: int):
    """A root run of 6 steps and a 2-step cooldown from it; 4 sequences per step, micro batches of 2
    (one per rank with two ranks, the same micro batches as one process)."""
    resources = {"gpus_per_run": ranks}
    micro = run_preset("micro").model_dump(mode="json")
    train = {"train.steps": 6, "train.batch_size": 4, "train.micro_batch_size": 2, "train.eval_every": 6,
             "train.checkpoint_every": 3, "train.snapshot_every": None, "train.device": "cpu", "schedule.kind": "wso"}
    return parse_study({
        "name": "dist",
        "report": {"enabled": False},
        "stages": {
            "base": {"preset": "micro", "spec": {k: micro[k] for k in ("data", "optim", "schedule")},
                     "overrides": train, "resources": resources},
            "cooldown": {"from": "base", "branch": {"shape": "linear", "steps": 2}, "resources": resources},
        },
    })


def final_state(run: Path) -> tuple[dict[str, torch.Tensor], list[float]]:
    """The run's final weights and its per-step losses."""
    rd = RunDir(run)
    step = max(int(p.name) for p in (run / "checkpoints").iterdir() if p.name.isdigit())
    return load_file(run / "checkpoints" / str(step) / "model.safetensors"), [r["loss"] for r in rd.metrics()]


@pytest.fixture(scope="module")
def single(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[dict[str, torch.Tensor], list[float]]]:
    """The study trained in this process, one rank per run: the reference."""
    out = tmp_path_factory.mktemp("single")
    statuses = run_study(study(1), out, executor=SequentialExecutor(), analyses=False)
    return {key: final_state(s.resolved.path) for key, s in statuses.items()}


def assert_same_training(statuses, single) -> None:
    assert set(statuses) == set(single) == {"base", "cooldown"}
    for key, status in statuses.items():
        assert status.state == "complete", status.detail
        weights, losses = final_state(status.resolved.path)
        ref_weights, ref_losses = single[key]
        assert len(losses) == len(ref_losses) == (6 if key == "base" else 2)
        assert losses == pytest.approx(ref_losses, rel=1e-5)
        for name, tensor in ref_weights.items():
            torch.testing.assert_close(weights[name], tensor, rtol=1e-5, atol=1e-6)


def test_resources_split_ranks_over_nodes() -> None:
    assert (Resources(gpus_per_run=8, nodes=2).ranks_per_node, Resources().distributed) == (4, False)
    with pytest.raises(ValueError, match="multiple of nodes"):
        Resources(gpus_per_run=3, nodes=2)
    plan = expand_plan(study(2))
    assert [plan.stages[r.stage].resources.gpus_per_run for r in plan] == [2, 2]


def test_two_rank_runs_in_worker_processes_match_one_process(tmp_path: Path, single) -> None:
    executor = ProcessExecutor(tmp_path, workers=2, num_gpus=0)
    statuses = run_study(study(2), tmp_path, executor=executor, analyses=False)
    assert_same_training(statuses, single)
    for key, status in statuses.items():  # both ranks of each run wrote to its one log
        log = (tmp_path / "logs" / f"{status.resolved.path.name}.log").read_text()
        assert sorted(line for line in log.splitlines() if line.startswith("[wsdlab]")) == [
            f"[wsdlab] {key}: rank 0 of 2", f"[wsdlab] {key}: rank 1 of 2"]


def test_two_rank_runs_as_submitit_local_jobs_match_one_process(tmp_path: Path, single) -> None:
    pytest.importorskip("submitit")
    executor = SlurmExecutor(tmp_path, SlurmConfig(gpus_per_node=0, timeout_min=10), cluster="local")
    assert executor.parameters(Resources(gpus_per_run=2))["tasks_per_node"] == 2
    statuses = run_study(study(2), tmp_path, executor=executor, analyses=False)
    assert_same_training(statuses, single)
    for key, status in statuses.items():  # one job per run, of two tasks: its ranks
        jobs = [p for p in (tmp_path / "slurm").iterdir() if p.name.isdigit()]  # (not submitit's "%j" folder)
        job = next(p for p in jobs if f"{key}:" in (p / f"{p.name}_0_log.out").read_text())
        assert [f"[wsdlab] {key}: rank {r} of 2" in (job / f"{job.name}_{r}_log.out").read_text() for r in (0, 1)] == [
            True, True]


class FakeLaunch:
    """Stands in for launch.Launch: records what it was given; `finish()` makes its run end normally."""

    def __init__(self, ranks, study_dir, request, cpus, gpus=(), sinks=None, python=None) -> None:
        self.args = (request["name"], ranks, list(gpus), list(cpus))
        read, self._write = os.pipe()
        self.stdout = open(read)

    def finish(self) -> None:
        os.write(self._write, b"done\n")

    def read(self):
        from wsdlab.study.launch import Outcome

        self.stdout.readline()
        return Outcome(None)


def test_process_executor_gives_a_run_one_gpu_per_rank(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Runs of two ranks take two slots (distinct GPUs); one that does not fit waits, and its slots are
    not offered to the runner; one asking for more GPUs than the machine has fails at once."""
    import wsdlab.study.executors as executors

    monkeypatch.setattr(executors, "Launch", FakeLaunch)
    monkeypatch.setattr(executors, "available_cpus", lambda: {0, 1, 2, 3})
    ex = ProcessExecutor(tmp_path, workers=4, num_gpus=4)
    spec = root_spec("r")

    def run(name: str, ranks: int) -> QueuedRun:
        return QueuedRun(name, spec, tmp_path / "runs" / name, resources=Resources(gpus_per_run=ranks))

    ex.submit(run("a", 2))
    ex.submit(run("b", 2))
    ex.submit(run("c", 2))  # waits for two free GPUs
    ex.submit(run("d", 8))
    launches = list(ex._launches)
    assert [launch.args for launch in launches] == [("a", 2, [0, 1], [0, 1]), ("b", 2, [2, 3], [2, 3])]
    assert ex.free_slots() == 0
    [d] = ex.wait(0.1)
    assert (d.job.key, d.error) == ("d", "run 'd' asks for 8 GPUs; this machine has 4")
    launches[0].finish()
    [a] = ex.wait(5)
    assert (a.job.key, a.error) == ("a", None)
    assert [launch.args[:3] for launch in ex._launches] == [("b", 2, [2, 3]), ("c", 2, [0, 1])]
    assert ex.free_slots() == 0


# ------------------------------------------------------------------------------------------- requeue


class Preempted(Exception):
    """Named as wsdlab.train.preempt.Preempted: the executors match the class name."""


def preempted_once(spec, out, *, sinks=()) -> None:
    """A stand-in for training: the first call raises Preempted ("checkpoint written, stopped"), the next
    one completes; every call is counted in OUT/calls."""
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    calls = out / "calls"
    n = int(calls.read_text()) + 1 if calls.is_file() else 1
    calls.write_text(str(n))
    if n == 1 or spec.name.endswith("always"):
        raise Preempted("SIGTERM: checkpoint written at step 3")
    (out / "COMPLETE").write_text(f"{spec.train.steps}\n")


FAKE_WORKER = """
import sys
sys.path.insert(0, {tests!r})
from wsdlab.study import worker
from {module} import preempted_once

real = worker.run_job
worker.run_job = lambda spec, out, name, options, kind="train": real(spec, out, name, options, preempted_once, kind)
worker.main(sys.argv[3:])  # after "-m wsdlab.study.worker"
"""


def root_spec(name: str):
    return expand_plan(study(1))["base"].spec.model_copy(update={"name": name})


def test_process_executor_resubmits_a_preempted_run_once(tmp_path: Path) -> None:
    """A worker that answers Preempted gets the run again (it resumes); a second preemption fails it."""
    script = tmp_path / "fake_worker.py"
    script.write_text(FAKE_WORKER.format(tests=str(Path(__file__).parent), module=__name__))
    python = tmp_path / "python"  # the executor's interpreter: runs the real worker with the stand-in
    python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "{script}" "$@"\n')
    python.chmod(python.stat().st_mode | stat.S_IEXEC)
    ex = ProcessExecutor(tmp_path, workers=1, num_gpus=0, python=str(python))
    results = []
    try:
        for name in ("once", "always"):
            ex.submit(QueuedRun(name, root_spec(name), tmp_path / "runs" / name))
            ended = []
            while not ended:
                ended = ex.wait(timeout=60)
            results += ended
    finally:
        ex.close()
    once, always = results
    assert (once.error, (tmp_path / "runs" / "once" / "calls").read_text()) == (None, "2")
    assert (tmp_path / "runs" / "once" / "COMPLETE").is_file()
    assert always.error_type == "Preempted" and "checkpoint written at step 3" in always.error
    assert (tmp_path / "runs" / "always" / "calls").read_text() == "2"


def test_sequential_executor_resubmits_a_preempted_run(tmp_path: Path) -> None:
    ex = SequentialExecutor(run_fn=preempted_once)
    ex.submit(QueuedRun("once", root_spec("once"), tmp_path / "runs" / "once"))
    assert ex.wait(0.1) == [] and ex.free_slots() == 0  # preempted: queued again
    [result] = ex.wait(0.1)
    assert (result.error, (tmp_path / "runs" / "once" / "calls").read_text()) == (None, "2")


def test_submitit_requeues_a_preempted_run(tmp_path: Path) -> None:
    """Through submitit's local cluster: Preempted -> submitit's handler calls checkpoint() (the same call)
    and requeues; the rerun completes."""
    pytest.importorskip("submitit")
    import cloudpickle

    cloudpickle.register_pickle_by_value(sys.modules[__name__])  # the stand-in travels to the job by value
    ex = SlurmExecutor(tmp_path, SlurmConfig(gpus_per_node=0, timeout_min=10), cluster="local", run_fn=preempted_once)
    ex.submit(QueuedRun("once", root_spec("once"), tmp_path / "runs" / "once"))
    results = []
    while not results:
        results = ex.wait(timeout=60)
    assert results[0].error is None, results[0].error
    assert (tmp_path / "runs" / "once" / "calls").read_text() == "2"
    [job] = [p for p in (tmp_path / "slurm").iterdir() if p.name.isdigit()]
    assert "Requeued job" in (job / f"{job.name}_0_log.out").read_text()  # one job, run twice


# ------------------------------------------------------------------------------------------- slurm


def test_slurm_job_of_a_two_node_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """With Slurm on PATH (here stand-ins for sbatch/srun): one job of nodes x ranks-per-node tasks, one GPU
    per rank, signalled signal_delay_s before its limit."""
    pytest.importorskip("submitit")
    for tool in ("sbatch", "srun"):
        (tmp_path / tool).write_text("#!/bin/sh\nexit 0\n")
        (tmp_path / tool).chmod(0o755)
    monkeypatch.setenv("PATH", f"{tmp_path}:{os.environ['PATH']}")
    monkeypatch.delenv("WSDLAB_SUBMITIT_CLUSTER", raising=False)
    ex = SlurmExecutor(tmp_path, SlurmConfig(partition="gpu", signal_delay_s=120))
    ex.executor.update_parameters(**ex.parameters(Resources(gpus_per_run=8, nodes=2)))
    sbatch = ex.executor._executor._make_submission_file_text("python -m submitit.core._submit", "uid")
    flags = {line.split("=")[0]: line.split("=")[1] for line in sbatch.splitlines() if line.startswith("#SBATCH --")}
    assert [flags[f"#SBATCH --{k}"] for k in ("nodes", "ntasks-per-node", "gpus-per-node", "signal")] == [
        "2", "4", "4", "USR2@120"]


def test_distributed_env_from_the_job_environment() -> None:
    pytest.importorskip("submitit")
    from wsdlab.study.slurm_task import distributed_env

    class Env:
        job_id, num_tasks, num_nodes, global_rank, local_rank, hostnames = "4242_3", 8, 2, 5, 1, ["n1", "n2"]

    assert distributed_env(Env()) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "LOCAL_WORLD_SIZE": "4",
                                      "MASTER_ADDR": "n1", "MASTER_PORT": str(20000 + 42423 % 20000)}


def test_submitit_signal_goes_to_the_training_loop_while_it_trains() -> None:
    """submitit's signal reaches the loop's SIGUSR1 handler while one is installed (it checkpoints first),
    else submitit's own handler (requeue at once); submitit's handler is restored afterwards."""
    pytest.importorskip("submitit")
    from wsdlab.study.slurm_task import _usr_sig, loop_gets_the_signal

    calls: list[str] = []
    sig = _usr_sig()
    submitit_handler = lambda signum, frame: calls.append("submitit")  # noqa: E731
    before = signal.signal(sig, submitit_handler), signal.getsignal(signal.SIGUSR1)
    try:
        signal.signal(signal.SIGUSR1, signal.SIG_DFL)
        with loop_gets_the_signal() as handler:
            assert handler is submitit_handler
            os.kill(os.getpid(), sig)  # no loop handler yet: submitit requeues at once
            signal.signal(signal.SIGUSR1, lambda signum, frame: calls.append(f"loop {signum}"))
            os.kill(os.getpid(), sig)
        assert signal.getsignal(sig) is submitit_handler
    finally:
        signal.signal(sig, before[0])
        signal.signal(signal.SIGUSR1, before[1])
    assert calls == ["submitit", f"loop {int(signal.SIGUSR1)}"]
