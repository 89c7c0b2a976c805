"""The glue between a study's runs and the analysis functions: which runs go to which analysis, and
the tables they produce under STUDY/tables/.

Each step reads a group of runs (cooldowns by shape, references, averaging portions, hyper-parameter
panels ...), calls the analysis functions of `wsdlab.analysis` and writes one or more CSV tables. A
step is skipped when its tables exist and its fingerprint (the step's options and the identities of
the runs and tables it reads) is the one recorded in STUDY/tables/.fingerprints.json.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from wsdlab.analysis.tables import read_table, write_table
from wsdlab.common.errors import ConfigError
from wsdlab.common.hashing import spec_hash
from wsdlab.common.io import atomic_write_text
from wsdlab.common.types import Row
from wsdlab.study.plan import BASE_KEY, Plan
from wsdlab.study.progress import StudyProgress
from wsdlab.study.resolve import ResolvedRun, Resolver
from wsdlab.study.spec import StudySpec

TABLES_DIR = "tables"
FINGERPRINTS = ".fingerprints.json"
STEP_VERSION = 2  # bump to recompute every table after a change in this glue (2: eq. 1-4 and App. G fixes)


# ----------------------------------------------------------------------------------------- run groups


@dataclass
class StudyRuns:
    """The study's resolved runs grouped the way the analyses consume them."""

    base: ResolvedRun
    cooldowns: dict[str, list[ResolvedRun]]  # group (shape label, or shape/variant) -> one run per seed
    references: list[ResolvedRun]
    portions: dict[str, list[ResolvedRun]]  # averaging shape -> its portion runs (one per data portion)
    longer: ResolvedRun | None  # the one longer run over the union of the portions (None: no averaging)
    panels: list[tuple[str, str, Any, ResolvedRun]]  # (shape, panel, value, run), baselines in each panel
    geometry: dict[str, ResolvedRun] = field(default_factory=dict)  # group -> the run with snapshots

    @classmethod
    def from_plan(cls, plan: Plan, resolver: Resolver) -> "StudyRuns":
        def get(key: str) -> ResolvedRun:
            run = resolver.resolve(plan[key])
            if run is None:
                raise ValueError(f"run '{key}' is not resolved: its parent is not complete")
            return run

        study = plan.study
        several = len(study.cooldown.variants) > 1
        cooldowns: dict[str, list[ResolvedRun]] = {}
        geometry: dict[str, ResolvedRun] = {}
        for run in plan.with_role("cooldown"):
            group = f"{run.labels['shape']}/{run.labels['variant']}" if several else str(run.labels["shape"])
            cooldowns.setdefault(group, []).append(get(run.key))
            if run.labels.get("geometry"):
                geometry[group] = get(run.key)
        portions: dict[str, list[ResolvedRun]] = {}
        for run in plan.with_role("portion"):
            portions.setdefault(str(run.labels["shape"]), []).append(get(run.key))
        longer = next((get(run.key) for run in plan.with_role("long")), None)
        panels = _panel_runs([(dict(r.labels), get(r.key)) for r in plan.with_role("hyperparam")])
        return cls(get(BASE_KEY), cooldowns, [get(r.key) for r in plan.with_role("reference")], portions, longer, panels,
                   geometry)


_NEUTRAL = {"betas_p": 1.0, "beta2_p": 1.0, "batch_x": 1.0, "batch_x_half_life": 1.0,
            "weight_decay_off": 0, "reset_optimizer": 0}


def _panel_runs(labelled: Sequence[tuple[dict[str, Any], Any]]) -> list[tuple[str, str, Any, Any]]:
    """(shape, panel, value, run) rows; each shape/seed baseline joins every panel of its shape at the
    panel's neutral value (p = 1, k = 1, off = 0)."""
    out: list[tuple[str, str, Any, Any]] = []
    panels: dict[str, list[str]] = {}
    for lab, _ in labelled:
        if lab["panel"] != "baseline":
            names = panels.setdefault(str(lab.get("shape", "")), [])
            if lab["panel"] not in names:
                names.append(lab["panel"])
    for lab, run in labelled:
        shape = str(lab.get("shape", ""))
        if lab["panel"] == "baseline":
            out += [(shape, panel, _NEUTRAL.get(panel, 0), run) for panel in panels.get(shape, [])]
        else:
            out.append((shape, lab["panel"], lab["value"], run))
    return out


def run_dirs(runs: Sequence[ResolvedRun]) -> list[Any]:
    """wsdlab.train.RunDir of each run (the analyses' input type)."""
    from wsdlab.train import RunDir

    return [RunDir(r.path) for r in runs]


# ------------------------------------------------------------------------------------------ context


@dataclass
class StepContext:
    """What a step needs: the study, its grouped runs, the data (loaded on first use) and earlier tables."""

    study: StudySpec
    runs: StudyRuns
    tables_dir: Path
    progress: bool = False
    enabled: frozenset[str] = frozenset()  # steps computed in this pass (their tables are current)
    tables: dict[str, list[Row]] = field(default_factory=dict)

    @cached_property
    def data(self) -> Any:
        from wsdlab.data import load_data

        return load_data(self.runs.base.spec.data, progress=self.progress)

    @cached_property
    def device(self) -> str:
        import torch

        return "cuda" if torch.cuda.is_available() else "cpu"

    @property
    def eval_kwargs(self) -> dict[str, Any]:
        """num_batches / batch_size / device shared by every evaluation (the same validation batches)."""
        cfg = self.study.analyses
        return {"num_batches": cfg.eval_batches, "batch_size": cfg.eval_batch_size or self.base_batch, "device": self.device}

    @property
    def base_batch(self) -> int:
        from wsdlab.train.batching import global_batch_size

        spec = self.runs.base.spec
        return global_batch_size(spec.train, 1 if spec.data.is_vision else spec.data.seq_len)

    def options(self, step: str) -> dict[str, Any]:
        return dict(getattr(self.study.analyses, step).options)

    def table(self, name: str) -> list[Row]:
        if name not in self.tables:
            self.tables[name] = read_table(self.tables_dir / f"{name}.csv")
        return self.tables[name]


# -------------------------------------------------------------------------------------------- steps


@dataclass(frozen=True)
class TableStep:
    """One analysis step: the tables it writes, the runs and earlier steps it reads, how to compute."""

    name: str
    outputs: tuple[str, ...]
    inputs: Callable[[StudyRuns], list[ResolvedRun]]
    compute: Callable[[StepContext], dict[str, list[Row]]]
    needs: tuple[str, ...] = ()  # steps whose tables this one reads
    always: bool = False  # not switchable in `analyses:` (cheap bookkeeping tables)
    applies: Callable[[StudyRuns], bool] = lambda runs: True


def _all_cooldowns(runs: StudyRuns) -> list[ResolvedRun]:
    return [r for group in runs.cooldowns.values() for r in group]


def _schedules(ctx: StepContext) -> dict[str, list[Row]]:
    """LR factor per step of one cooldown per group, base phase included (schedules.csv)."""
    from wsdlab.schedules import build_schedule

    rows: list[Row] = []
    for group, runs in ctx.runs.cooldowns.items():
        spec = runs[0].spec
        total = spec.train.steps
        schedule = build_schedule(spec.schedule, total)
        stride = max(1, total // 400)
        steps = sorted(set(range(0, total + 1, stride)) | {total, ctx.runs.base.spec.train.steps})
        rows += [{"shape": group, "step": t, "lr_factor": float(schedule(t))} for t in steps]
    return {"schedules": rows}


def _val_curves(ctx: StepContext) -> dict[str, list[Row]]:
    """Validation loss per eval step of each cooldown (the base's evaluations before the branch point)."""
    from wsdlab.train import RunDir

    base_rows = RunDir(ctx.runs.base.path).eval_rows()
    k = ctx.runs.base.spec.train.steps
    rows: list[Row] = []
    for group, runs in ctx.runs.cooldowns.items():
        for run in runs:
            seed = run.spec.data.order.seed
            own = [r for r in RunDir(run.path).eval_rows() if r["step"] > k]
            rows += [{"shape": group, "seed": seed, "step": r["step"], "val_loss": r["val_loss"]} for r in base_rows + own]
    return {"val_curves": rows}


def _groups(runs: StudyRuns) -> dict[str, list[Any]]:
    return {group: run_dirs(rs) for group, rs in runs.cooldowns.items()}


def _bias_variance(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.bias_variance import bias_variance_table

    rows = bias_variance_table(_groups(ctx.runs), run_dirs(ctx.runs.references), ctx.data,
                               **ctx.eval_kwargs, **ctx.options("bias_variance"))
    return {"bias_variance": rows}


def _perplexity(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.perplexity import perplexity_table, perplexity_vs_bias

    rows = perplexity_table(_groups(ctx.runs), ctx.data, **ctx.eval_kwargs, **ctx.options("perplexity"))
    out = {"perplexity": rows}
    if "bias_variance" in ctx.enabled:
        out["perplexity_vs_bias"] = perplexity_vs_bias(rows, ctx.table("bias_variance"))
    return out


def _averaging(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.averaging import averaging_table

    if ctx.runs.longer is None:
        raise ValueError("averaging: the study has portion cooldowns but no longer run")
    longer = run_dirs([ctx.runs.longer])[0]  # one longer run, compared with every shape's average (Fig. 10)
    groups = {shape: (run_dirs(members), longer) for shape, members in ctx.runs.portions.items()}
    return {"averaging": averaging_table(groups, ctx.data, **ctx.eval_kwargs, **ctx.options("averaging"))}


def _recency(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.recency import (
        recency_correlations,
        recency_curves_table,
        recency_table,
    )

    opts = ctx.options("recency")
    space = opts.pop("space", "kl")
    # eq. 2 scores every batch of the whole run: by default about 32 of them per run (stride 1 = every batch)
    opts.setdefault("stride", max(1, math.ceil((ctx.runs.base.spec.train.steps + ctx.study.cooldown.steps) / 32)))
    curves = recency_curves_table(_groups(ctx.runs), ctx.data, eval_batch_size=ctx.eval_kwargs["batch_size"],
                                  device=ctx.device, **opts)
    summary = recency_table(curves)
    out = {"recency_curves": curves, "recency": summary}
    if "bias_variance" in ctx.enabled:
        out["recency_correlations"] = recency_correlations(summary, ctx.table("bias_variance"), space=space)
    return out


def _hyperparams(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.hyperparams import hyperparams_summary, hyperparams_table
    from wsdlab.train import RunDir

    labelled = [(panel, value, RunDir(run.path), shape) for shape, panel, value, run in ctx.runs.panels]
    rows = hyperparams_table(labelled, ctx.data, **ctx.eval_kwargs, **ctx.options("hyperparams"))
    return {"hyperparams": rows, "hyperparams_summary": hyperparams_summary(rows)}


def _alignment(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.alignment import alignment_table

    opts = ctx.options("alignment")
    opts.setdefault("window", max(1, min(10, ctx.study.cooldown.steps // 5)))
    return {"alignment": alignment_table(_groups(ctx.runs), **opts)}


# -------------------------------------------------------------------------------- geometry steps


def _geometry_config(ctx: StepContext, step: str) -> tuple[Any, dict[str, Any]]:
    """(the step's config model, the study-level options) from `analyses.<step>.options`."""
    from wsdlab.study.spec import GEOMETRY_STUDY_OPTIONS, geometry_config_class

    opts = ctx.options(step)
    own = {k: opts.pop(k) for k in GEOMETRY_STUDY_OPTIONS[step] if k in opts}
    return geometry_config_class(step).model_validate(opts), own


def evenly(items: Sequence[int], k: int) -> list[int]:
    """At most k items spread evenly over `items`, first and last included."""
    items = sorted(items)
    if len(items) <= k:
        return items
    if k == 1:
        return [items[-1]]
    return sorted({items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)})


def _labelled(rows: list[Row], group: str) -> list[Row]:
    return [{"shape": group, **r} for r in rows]


def _geometry_runs(ctx: StepContext) -> list[tuple[str, Any]]:
    from wsdlab.train import RunDir

    return [(group, RunDir(run.path)) for group, run in ctx.runs.geometry.items()]


def _branch_step(ctx: StepContext) -> int:
    return ctx.runs.base.spec.train.steps


def _sharpness(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.geometry_tables import sharpness_table, weight_steps
    from wsdlab.train import RunDir

    cfg, own = _geometry_config(ctx, "sharpness")
    n = own.get("num_steps", 5)
    rows: list[Row] = []
    for group, run in [("stable", RunDir(ctx.runs.base.path)), *_geometry_runs(ctx)]:
        steps = evenly(weight_steps(run), n)
        rows += _labelled(sharpness_table(run, cfg, steps=steps, data=ctx.data, device=ctx.device,
                                          progress=ctx.progress), group)
    return {"sharpness": rows}


def _interpolate(ctx: StepContext) -> dict[str, list[Row]]:
    """Loss on the line from the pre-cooldown checkpoint (the base's final step) to each cooldown's end."""
    from wsdlab.analysis.geometry_tables import interpolate_table
    from wsdlab.train import RunDir

    cfg, _ = _geometry_config(ctx, "interpolate")
    base = RunDir(ctx.runs.base.path)
    rows: list[Row] = []
    for group, run in _geometry_runs(ctx):
        rows += _labelled(interpolate_table(base, cfg, from_step=_branch_step(ctx), to_run=run, data=ctx.data,
                                            device=ctx.device, progress=ctx.progress), group)
    return {"interpolate": rows}


def _landscape(ctx: StepContext) -> dict[str, list[Row]]:
    """2-D landscapes at a few cooldown points whose weights `offset` steps later are on disk."""
    from wsdlab.analysis.geometry_tables import landscape_table, weight_steps

    cfg, own = _geometry_config(ctx, "landscape")
    k = _branch_step(ctx)
    rows: list[Row] = []
    for group, run in _geometry_runs(ctx):
        have = set(weight_steps(run))
        candidates = [p for p in sorted(have) if p >= k and p + cfg.offset in have]
        if not candidates:
            raise ConfigError(f"landscape: run {run.path.name} has no cooldown point with weights {cfg.offset} steps "
                             f"later (snapshots at {sorted(have)}); make analyses.landscape.options.offset a "
                             "multiple of analyses.snapshot_every and shorter than the cooldown")
        points = evenly(candidates, own.get("points", 2))
        rows += _labelled(landscape_table(run, cfg, points=points, pre_step=k, data=ctx.data, device=ctx.device,
                                          progress=ctx.progress), group)
    return {"landscape": rows}


def _trajectory(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.geometry_tables import trajectory_run_table
    from wsdlab.train import RunDir

    cfg, _ = _geometry_config(ctx, "trajectory")
    base = RunDir(ctx.runs.base.path)
    rows: list[Row] = []
    for group, run in _geometry_runs(ctx):
        rows += _labelled(trajectory_run_table(run, cfg, decay_step=_branch_step(ctx), parent=base, data=ctx.data,
                                               device=ctx.device, progress=ctx.progress), group)
    return {"trajectory": rows}


def _probes(ctx: StepContext) -> dict[str, list[Row]]:
    from wsdlab.analysis.geometry_tables import probes_table, weight_steps

    cfg, own = _geometry_config(ctx, "probes")
    k = _branch_step(ctx)
    rows: list[Row] = []
    for group, run in _geometry_runs(ctx):
        steps = evenly([s for s in weight_steps(run) if s >= k], own.get("num_steps", 3))
        rows += _labelled(probes_table(run, cfg, steps=steps, reference_step=steps[0], data=ctx.data,
                                       device=ctx.device, progress=ctx.progress), group)
    return {"probes": rows}


def _geometry_inputs(runs: StudyRuns) -> list[ResolvedRun]:
    return [runs.base, *runs.geometry.values()]


STEPS: tuple[TableStep, ...] = (
    TableStep("schedules", ("schedules",), _all_cooldowns, _schedules, always=True),
    TableStep("val_curves", ("val_curves",), lambda runs: [runs.base, *_all_cooldowns(runs)], _val_curves, always=True),
    TableStep("bias_variance", ("bias_variance",), lambda runs: [*_all_cooldowns(runs), *runs.references],
              _bias_variance, applies=lambda runs: bool(runs.references)),
    TableStep("perplexity", ("perplexity",), _all_cooldowns, _perplexity, needs=("bias_variance",)),
    TableStep("averaging", ("averaging",),
              lambda runs: [*(r for rs in runs.portions.values() for r in rs), *([runs.longer] if runs.longer else [])],
              _averaging, applies=lambda runs: bool(runs.portions)),
    TableStep("recency", ("recency_curves", "recency"), lambda runs: [runs.base, *_all_cooldowns(runs)], _recency,
              needs=("bias_variance",)),
    TableStep("hyperparams", ("hyperparams", "hyperparams_summary"), lambda runs: [r for *_, r in runs.panels],
              _hyperparams, applies=lambda runs: bool(runs.panels)),
    TableStep("alignment", ("alignment",), _all_cooldowns, _alignment),
    *(TableStep(name, (name,), _geometry_inputs, fn, applies=lambda runs: bool(runs.geometry))
      for name, fn in (("sharpness", _sharpness), ("interpolate", _interpolate), ("landscape", _landscape),
                       ("trajectory", _trajectory), ("probes", _probes))),
)


# ----------------------------------------------------------------------------------------- running


def step_fingerprint(step: TableStep, ctx: StepContext, upstream: dict[str, str]) -> str:
    """Hash of what determines a step's tables: its options, the evaluation settings, its input runs
    (by folder name, i.e. key + spec hash; complete runs never change) and its upstream fingerprints."""
    options = {} if step.always else getattr(ctx.study.analyses, step.name).model_dump(mode="json")
    cfg = ctx.study.analyses
    return spec_hash({
        "step": step.name, "version": STEP_VERSION, "options": options,
        "eval": [cfg.eval_batches, cfg.eval_batch_size],
        "runs": [r.path.name for r in step.inputs(ctx.runs)],
        "upstream": {n: upstream.get(n) for n in step.needs},
        "labels": [[s, p, str(v), r.path.name] for s, p, v, r in ctx.runs.panels] if step.name == "hyperparams" else None,
    }, length=16)


def _read_fingerprints(tables_dir: Path) -> dict[str, str]:
    path = tables_dir / FINGERPRINTS
    try:
        data = json.loads(path.read_text())
        return {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}
    except (OSError, json.JSONDecodeError):
        return {}


def enabled_steps(study: StudySpec, runs: StudyRuns) -> list[TableStep]:
    """The steps that apply: always-on ones, and those switched on in `analyses:` whose runs exist."""
    on = set(study.analyses.enabled())
    return [s for s in STEPS if (s.always or s.name in on) and s.applies(runs)]


def compute_tables(plan: Plan, resolver: Resolver, study_dir: Path, progress: StudyProgress | None = None,
                   force: bool = False) -> list[str]:
    """Compute the study's tables into STUDY/tables/; returns the names of the steps (re)computed."""
    study = plan.study
    tables_dir = Path(study_dir) / TABLES_DIR
    tables_dir.mkdir(parents=True, exist_ok=True)
    ctx = StepContext(study, StudyRuns.from_plan(plan, resolver), tables_dir,
                      progress=bool(progress and progress.live_enabled))
    recorded = {} if force else _read_fingerprints(tables_dir)
    current: dict[str, str] = {}
    computed: list[str] = []
    steps = enabled_steps(study, ctx.runs)
    ctx.enabled = frozenset(s.name for s in steps)
    for step in steps:
        fp = current[step.name] = step_fingerprint(step, ctx, current)
        if recorded.get(step.name) == fp and all((tables_dir / f"{t}.csv").is_file() for t in step.outputs):
            continue
        if progress is not None:
            progress.message(f"analysis: {step.name}")
        for name, rows in step.compute(ctx).items():
            write_table(rows, tables_dir / f"{name}.csv")
            ctx.tables[name] = rows
        recorded[step.name] = fp
        atomic_write_text(tables_dir / FINGERPRINTS, json.dumps(recorded, indent=1, sort_keys=True))
        computed.append(step.name)
    return computed
