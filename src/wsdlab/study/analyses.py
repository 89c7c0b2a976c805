"""A study's analysis tables: every registered unit (`wsdlab.analysis.units`) that is on and has runs to
read, computed into STUDY/tables/.

Each unit's input selectors (its defaults, or `analyses.<unit>.inputs`) are resolved against the plan:
a planned run matches by its stage and labels, and is read from its resolved folder. A unit is skipped
when its tables exist and its fingerprint (its settings, the evaluation settings, the identities of the
runs it reads and the fingerprints of the units it needs) is the one recorded in
STUDY/tables/.fingerprints.json.
"""

from __future__ import annotations

import json
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from wsdlab.analysis.tables import write_table
from wsdlab.analysis.units import AnalysisUnit, SelectedRun, UnitContext, select, units
from wsdlab.common.hashing import spec_hash
from wsdlab.common.io import atomic_write_text
from wsdlab.study.plan import Plan
from wsdlab.study.progress import StudyProgress
from wsdlab.study.resolve import Resolver
from wsdlab.study.spec import StudySpec

TABLES_DIR = "tables"
FINGERPRINTS = ".fingerprints.json"
STEP_VERSION = 3  # bump to recompute every table after a change in this glue (3: analysis units)


def study_runs(plan: Plan, resolver: Resolver) -> list[SelectedRun]:
    """Every planned run as a SelectedRun (stage, labels, resolved folder), in plan order."""
    out = []
    for planned in plan:
        run = resolver.resolve(planned)
        if run is None:
            raise ValueError(f"run '{planned.key}' is not resolved: its parent is not complete")
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
                   force: bool = False) -> list[str]:
    """Compute the study's tables into STUDY/tables/; returns the names of the units (re)computed."""
    study = plan.study
    tables_dir = Path(study_dir) / TABLES_DIR
    tables_dir.mkdir(parents=True, exist_ok=True)
    runs = study_runs(plan, resolver)
    ctx = study_context(study, runs, tables_dir, progress=bool(progress and progress.live_enabled))
    recorded = {} if force else _read_fingerprints(tables_dir)
    current: dict[str, str] = {}
    computed: list[str] = []
    chosen = enabled_units(study, runs)
    ctx.current = frozenset(u.name for u in chosen)
    for unit in chosen:
        inputs = unit_inputs(study, unit, runs)
        fp = current[unit.name] = unit_fingerprint(study, unit, inputs, current)
        if recorded.get(unit.name) == fp and all((tables_dir / f"{t}.csv").is_file() for t in unit.tables):
            continue
        if progress is not None:
            progress.message(f"analysis: {unit.name}")
        started = time.perf_counter()
        ctx.inputs = inputs
        ctx.selectors = {name: study.analyses.selector(unit, name) for name in unit.inputs}
        for name, rows in unit.compute(ctx, study.analyses.options(unit.name)).items():
            write_table(rows, tables_dir / f"{name}.csv")
            ctx.tables[name] = rows
        if progress is not None:
            progress.message(f"analysis: {unit.name} done in {time.perf_counter() - started:.1f} s")
        recorded[unit.name] = fp
        atomic_write_text(tables_dir / FINGERPRINTS, json.dumps(recorded, indent=1, sort_keys=True))
        computed.append(unit.name)
    return computed
