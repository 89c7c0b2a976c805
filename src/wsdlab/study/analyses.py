"""A study's analysis tables: every registered unit (`wsdlab.analysis.units`) that is on and has runs to
read, computed into STUDY/tables/.

Each unit's input selectors (its defaults, or `analyses.<unit>.inputs`) are resolved against the plan:
a planned run matches by its stage and labels, and is read from its resolved folder. A unit is skipped
when its tables exist and its fingerprint (its settings, the evaluation settings, the identities of the
runs it reads and the fingerprints of the units it needs) is the one recorded in
STUDY/tables/.fingerprints.json.
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from wsdlab.analysis.tables import write_table
from wsdlab.analysis.units import AnalysisUnit, SelectedRun, UnitContext, select, units
from wsdlab.common.types import Row
from wsdlab.common.hashing import spec_hash
from wsdlab.common.io import atomic_write_text
from wsdlab.study.plan import Plan
from wsdlab.study.progress import StudyProgress
from wsdlab.study.resolve import Resolver
from wsdlab.study.spec import StudySpec

TABLES_DIR = "tables"
FINGERPRINTS = ".fingerprints.json"
STEP_VERSION = 3  # bump to recompute every table after a change in this glue (3: analysis units)


def study_runs(plan: Plan, resolver: Resolver, keys: set[str] | None = None) -> list[SelectedRun]:
    """Every planned run (or those of `keys`) as a SelectedRun (stage, labels, resolved folder), in plan order."""
    out = []
    for planned in plan:  # every run in plan order (cached): runs of one identity share the first one's folder
        run = resolver.resolve(planned)
        if keys is not None and planned.key not in keys:
            continue
        out.append(SelectedRun(planned.key, planned.stage, dict(planned.labels), run.path))
    return out


def unit_inputs(study: StudySpec, unit: AnalysisUnit, runs: Sequence[SelectedRun]) -> dict[str, list[SelectedRun]]:
    """The runs each input of `unit` selects (the study's selector for it, else the unit's default)."""
    return {name: select(study.analyses.selector(unit, name), runs) for name in unit.inputs}


def ordered(chosen: Sequence[AnalysisUnit]) -> list[AnalysisUnit]:
    """`chosen` with every unit after the units it needs (stable otherwise)."""
    names = {u.name for u in chosen}
    done: list[AnalysisUnit] = []
    pending = list(chosen)
    while pending:
        ready = next(u for u in pending
                     if all(n not in names or n in {d.name for d in done} for n in u.needs))
        done.append(ready)
        pending.remove(ready)
    return done


def enabled_units(study: StudySpec, runs: Sequence[SelectedRun]) -> list[AnalysisUnit]:
    """The units that run: on (always-on or enabled in `analyses:`) and with runs to read, dependencies first."""
    cfg = study.analyses
    return ordered([u for u in units() if cfg.is_enabled(u.name) and u.applies(unit_inputs(study, u, runs))])


def unit_fingerprint(study: StudySpec, unit: AnalysisUnit, inputs: dict[str, list[SelectedRun]],
                     upstream: dict[str, str]) -> str:
    """Hash of what determines a unit's tables: its settings, the evaluation settings, its input runs
    (folder name = key + spec hash; complete runs never change, labels included) and upstream fingerprints."""
    cfg = study.analyses
    return spec_hash({
        "unit": unit.name, "version": STEP_VERSION, "settings": cfg.settings(unit.name).model_dump(mode="json"),
        "eval": [cfg.eval_batches, cfg.eval_batch_size],
        "runs": {name: [[r.key, json.dumps(dict(r.labels), sort_keys=True, default=str), r.path.name] for r in rs]
                 for name, rs in inputs.items()},
        "upstream": {n: upstream.get(n) for n in unit.needs},
    }, length=16)


def _read_fingerprints(tables_dir: Path) -> dict[str, str]:
    path = tables_dir / FINGERPRINTS
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def _device() -> str:
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def study_context(study: StudySpec, runs: Sequence[SelectedRun], tables_dir: Path, progress: bool = False) -> UnitContext:
    """The context shared by the study's units (inputs are filled per unit): the root run's data, the
    evaluation settings (batch size default: the root run's global train batch) and the tables folder."""
    from wsdlab.train.batching import global_batch_size

    root = runs[0].run  # the plan lists parents first: its first run is the root every branch descends from
    spec = root.spec
    batch = study.analyses.eval_batch_size or global_batch_size(spec.train, 1 if spec.data.is_vision else spec.data.seq_len)

    def load() -> Any:
        from wsdlab.data import load_data

        return load_data(spec.data, progress=progress)

    return UnitContext(inputs={}, selectors={}, load_data=load, device=_device(),
                       num_batches=study.analyses.eval_batches, batch_size=batch, progress=progress,
                       tables_dir=tables_dir)


def compute_tables(plan: Plan, resolver: Resolver, study_dir: Path, progress: StudyProgress | None = None,
                   force: bool = False, parallel: int = 1) -> list[str]:
    """Compute the study's tables into STUDY/tables/ (every run complete); returns the units (re)computed."""
    tables = TableScheduler(plan, resolver, study_dir, progress, force=force)
    return tables.finish(parallel)


def analysis_parallelism() -> int:
    """Units computed at once once every run is complete: one per CPU core on CPU (each with one torch
    thread), one on a GPU."""
    if _device() != "cpu":
        return 1
    from wsdlab.study.executors import available_cpus

    return max(1, len(available_cpus()))


def _shared_loader(load: Callable[[], Any]) -> Callable[[], Any]:
    """`load` called once however many threads ask (the data bundle every unit of a study reads)."""
    lock = threading.Lock()
    box: list[Any] = []

    def get() -> Any:
        with lock:
            if not box:
                box.append(load())
            return box[0]

    return get


class TableScheduler:
    """The study's analysis units, each computed as soon as every run it reads is complete.

    While runs still train in worker processes, `poll` (called by the run loop before it hands out
    CPU slots) starts ready units in background threads of this process, each taking one slot of the
    executor (`while_training` at once, one by default); `finish` computes the rest, `parallel` at a
    time, and raises the first unit's error. On CPU every unit computes with one torch thread (set
    in its own thread, as OpenMP keeps the setting per thread) however many run at once, so a table's
    numbers depend neither on the schedule nor on the machine's core count.
    A unit whose fingerprint and tables are already on disk is skipped, as before.
    """

    def __init__(self, plan: Plan, resolver: Resolver, study_dir: Path, progress: StudyProgress | None = None,
                 force: bool = False) -> None:
        self.study, self.plan, self.resolver, self.progress = plan.study, plan, resolver, progress
        self.tables_dir = Path(study_dir) / TABLES_DIR
        self.recorded = {} if force else _read_fingerprints(self.tables_dir)
        planned = [SelectedRun(p.key, p.stage, dict(p.labels), Path()) for p in plan]  # selection reads no folder
        self.chosen = enabled_units(self.study, planned)
        self.reads = {u.name: {r.key for rs in unit_inputs(self.study, u, planned).values() for r in rs}
                      for u in self.chosen}
        self.state: dict[str, str] = {u.name: "pending" for u in self.chosen}  # pending/running/done/failed
        self.current: dict[str, str] = {}  # fingerprints of this pass
        self.computed: list[str] = []
        self.errors: list[tuple[str, BaseException]] = []
        self.tables: dict[str, list[Row]] = {}  # shared by the units: what `needs` reads
        self._threads: dict[str, threading.Thread] = {}
        self._lock = threading.Lock()
        self._done = threading.Condition(self._lock)
        self._ctx: UnitContext | None = None

    # scheduling -------------------------------------------------------------------------------
    def poll(self, complete: set[str], free_slots: int | None = None, while_training: int = 1) -> int:
        """Start the units whose runs are all in `complete` and whose upstream units are done, at most
        `while_training` at once and only in CPU slots the training leaves free (`free_slots` of the
        executor); returns the slots the running units hold, which the run loop leaves to them."""
        with self._lock:
            running = sum(v == "running" for v in self.state.values())
            limit = while_training if free_slots is None else min(while_training, running + free_slots)
            for unit in self._ready(complete, limit):
                self._start(unit)
            return sum(v == "running" for v in self.state.values())

    def finish(self, parallel: int = 1) -> list[str]:
        """Compute every unit not yet done (all runs complete), `parallel` at a time; the units (re)computed."""
        complete = {p.key for p in self.plan}
        with self._done:
            while any(v in ("pending", "running") for v in self.state.values()):
                ready = [] if self.errors else self._ready(complete, parallel)
                for unit in ready:
                    self._start(unit)
                if not ready:
                    if not any(v == "running" for v in self.state.values()):
                        break  # an upstream failed: what waits on it never starts
                    self._done.wait(timeout=1.0)
        if self.errors:
            raise self.errors[0][1]
        return list(self.computed)

    def stop(self) -> None:
        """Wait for the units already running (after a failed run); start no others."""
        for thread in list(self._threads.values()):
            thread.join()

    def _ready(self, complete: set[str], limit: int) -> list[AnalysisUnit]:
        """Pending units whose runs and upstream units are done, up to `limit` running in all (lock held)."""
        running = sum(v == "running" for v in self.state.values())
        out: list[AnalysisUnit] = []
        for unit in self.chosen:
            if running + len(out) >= limit:
                break
            if self.state[unit.name] != "pending" or not self.reads[unit.name] <= complete:
                continue
            upstream = [n for n in unit.needs if n in self.state]
            if all(self.state[n] == "done" for n in upstream):
                out.append(unit)
        return out

    def _start(self, unit: AnalysisUnit) -> None:
        """Compute `unit` in a thread of its own (lock held)."""
        self.state[unit.name] = "running"
        thread = threading.Thread(target=self._run, args=(unit,), name=f"analysis-{unit.name}", daemon=True)
        self._threads[unit.name] = thread
        thread.start()

    # one unit ---------------------------------------------------------------------------------
    def _run(self, unit: AnalysisUnit) -> None:
        if _device() == "cpu":
            import torch

            torch.set_num_threads(1)  # this thread's own setting (OpenMP's is per thread): see the class docstring
        error: BaseException | None = None
        try:
            ran = self._compute(unit)
        except BaseException as err:  # noqa: BLE001 - handed to finish(), which raises it
            ran, error = False, err
        with self._done:
            self.state[unit.name] = "done" if error is None else "failed"
            if error is not None:
                self.errors.append((unit.name, error))
            if ran:
                self.computed.append(unit.name)
            self._done.notify_all()

    def _compute(self, unit: AnalysisUnit) -> bool:
        study = self.study
        runs = study_runs(self.plan, self.resolver, keys=self.reads[unit.name])
        inputs = unit_inputs(study, unit, runs)
        with self._lock:
            fp = unit_fingerprint(study, unit, inputs, self.current)
            self.current[unit.name] = fp
            if self.recorded.get(unit.name) == fp and all((self.tables_dir / f"{t}.csv").is_file() for t in unit.tables):
                return False
        self._message(f"analysis: {unit.name}")
        started = time.perf_counter()
        base = self._context()
        ctx = dataclasses.replace(base, inputs=inputs, tables=self.tables,
                                  selectors={name: study.analyses.selector(unit, name) for name in unit.inputs})
        tables = unit.compute(ctx, study.analyses.options(unit.name))
        with self._lock:
            for name, rows in tables.items():
                write_table(rows, self.tables_dir / f"{name}.csv")
                self.tables[name] = rows
            self.recorded[unit.name] = fp
            atomic_write_text(self.tables_dir / FINGERPRINTS, json.dumps(self.recorded, indent=1, sort_keys=True))
        self._message(f"analysis: {unit.name} done in {time.perf_counter() - started:.1f} s")
        return True

    def _context(self) -> UnitContext:
        with self._lock:
            if self._ctx is None:
                self.tables_dir.mkdir(parents=True, exist_ok=True)
                root = study_runs(self.plan, self.resolver, keys={self.plan.runs[0].key})
                ctx = study_context(self.study, root, self.tables_dir, progress=False)
                self._ctx = dataclasses.replace(ctx, load_data=_shared_loader(ctx.load_data),
                                                current=frozenset(u.name for u in self.chosen))
            return self._ctx

    def _message(self, text: str) -> None:
        if self.progress is not None:
            self.progress.message(text)
