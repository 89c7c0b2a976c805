"""Analysis units: one registered unit per analysis (lm-evaluation-harness style registry).

A unit declares, as data, everything the study runner and `wsdlab analyze` need to run it:

    name       the unit's name (`analyses.<name>` in a study spec, `wsdlab analyze <name>`)
    Options    a pydantic model of its options (`analyses.<name>.options`)
    inputs     named default `RunSelector`s: which runs it reads, by stage and labels, grouped how
    tables     the tables it always writes (`<table>.csv`; `optional_tables` when an upstream is on)
    needs      units whose tables it reads (computed before it; their fingerprints are part of its own)
    compute    compute(ctx, options) -> {table: rows}, ctx giving the selected runs, data and settings

and, when it can also run on one run directory or checkpoint (`wsdlab analyze <name>`):

    Target       a pydantic model of what to read (the run, steps, ...); flags generated from its fields
    compute_run  compute_run(target, options, device=, progress=) -> rows of its one table
    headline     headline(rows) -> the few numbers printed (`--json`)

The figures drawn from a unit's tables are entries of the report catalogue (`wsdlab.report.catalog`,
each naming its unit). This module knows nothing of studies: a selector matches any run that has a
stage name and labels; the study (or any other caller) resolves selectors into `SelectedRun`s.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar, TypeVar

from pydantic import BaseModel, Field, field_validator

from wsdlab.common.config import StrictModel
from wsdlab.common.errors import ConfigError
from wsdlab.common.types import Row, Tables

if TYPE_CHECKING:
    from wsdlab.data import DataBundle
    from wsdlab.train import RunDir


# ------------------------------------------------------------------------------------------ selectors


class RunSelector(StrictModel):
    """Which runs an input reads: the runs of `stage` whose labels match `where`, grouped by `group_by`.

    YAML: `{stage: cooldown, where: {geometry: true}, group_by: [shape, variant]}`. A `where` value
    that is a list accepts any of its values. Groups are keyed by the `group_by` labels joined with
    '/', leaving out every label after the first whose value is the same for all selected runs (so
    one variant gives `sqrt`, several give `sqrt/default`).
    """

    stage: list[str] = Field(min_length=1, description="Stage name(s); a single name is accepted.")
    where: dict[str, Any] = Field(default_factory=dict, description="Label -> value (or list of values).")
    group_by: list[str] = Field(default_factory=list, description="Labels the runs are grouped by.")

    @field_validator("stage", "group_by", mode="before")
    @classmethod
    def _one_name(cls, v: Any) -> Any:
        return [v] if isinstance(v, str) else v

    def matches(self, stage: str, labels: Mapping[str, Any]) -> bool:
        if stage not in self.stage:
            return False
        for label, wanted in self.where.items():
            have = labels.get(label)
            if have not in (wanted if isinstance(wanted, list) else [wanted]):
                return False
        return True


@dataclass(frozen=True)
class SelectedRun:
    """A run picked by a selector: its key, stage, labels and folder."""

    key: str
    stage: str
    labels: Mapping[str, Any]
    path: Path

    @cached_property
    def run(self) -> RunDir:
        from wsdlab.train import RunDir

        return RunDir(self.path)


def select(selector: RunSelector, runs: Sequence[SelectedRun]) -> list[SelectedRun]:
    """The runs `selector` matches, in the given order."""
    return [r for r in runs if selector.matches(r.stage, r.labels)]


def group(selector: RunSelector, runs: Sequence[SelectedRun]) -> dict[str, list[SelectedRun]]:
    """`runs` (already selected) grouped by the selector's `group_by` labels; one group '' without any."""
    if not selector.group_by:
        return {"": list(runs)} if runs else {}
    first, *rest = selector.group_by
    varying = [g for g in rest if len({repr(r.labels.get(g)) for r in runs}) > 1]
    out: dict[str, list[SelectedRun]] = {}
    for r in runs:
        key = "/".join(str(r.labels.get(g)) for g in [first, *varying])
        out.setdefault(key, []).append(r)
    return out


# ------------------------------------------------------------------------------------------- context


@dataclass
class UnitContext:
    """What a unit's compute sees: its selected runs per input, the data, the evaluation settings and
    the tables of earlier units (`current`: the units computed in this pass, whose tables are fresh)."""

    inputs: Mapping[str, list[SelectedRun]]
    selectors: Mapping[str, RunSelector]
    load_data: Callable[[], DataBundle]
    device: str = "cpu"
    num_batches: int = 8  # validation batches every model is evaluated on
    batch_size: int = 16
    progress: bool = False
    tables_dir: Path | None = None
    current: frozenset[str] = frozenset()
    tables: Tables = field(default_factory=dict)

    def selected(self, name: str) -> list[SelectedRun]:
        if name not in self.inputs:
            raise KeyError(f"no input '{name}' (inputs: {', '.join(self.inputs)})")
        return self.inputs[name]

    def runs(self, name: str) -> list[RunDir]:
        return [r.run for r in self.selected(name)]

    def one(self, name: str) -> RunDir:
        """The single run of an input (the base, the longer run)."""
        runs = self.selected(name)
        if len(runs) != 1:
            raise ConfigError(f"input '{name}' selects {len(runs)} runs, expected one")
        return runs[0].run

    def grouped(self, name: str) -> dict[str, list[SelectedRun]]:
        return group(self.selectors[name], self.selected(name))

    def groups(self, name: str) -> dict[str, list[RunDir]]:
        """Group key -> RunDirs (one per seed), by the input's `group_by`."""
        return {k: [r.run for r in rs] for k, rs in self.grouped(name).items()}

    @cached_property
    def data(self) -> DataBundle:
        return self.load_data()

    @property
    def eval_kwargs(self) -> dict[str, Any]:
        """num_batches / batch_size / device shared by every evaluation (the same validation batches)."""
        return {"num_batches": self.num_batches, "batch_size": self.batch_size, "device": self.device}

    def has(self, unit: str) -> bool:
        """Whether `unit` was computed in this pass (its tables are current)."""
        return unit in self.current

    def table(self, name: str) -> list[Row]:
        if name not in self.tables:
            from wsdlab.analysis.tables import read_table

            if self.tables_dir is None:
                raise ValueError(f"table '{name}' is not available")
            self.tables[name] = read_table(self.tables_dir / f"{name}.csv")
        return self.tables[name]


# ------------------------------------------------------------------------------------------- units


class NoOptions(StrictModel):
    """A unit without options."""


class AnalysisUnit:
    """Base class of every unit; subclasses set the class attributes and `compute` (module docstring)."""

    name: ClassVar[str]
    Options: ClassVar[type[BaseModel]] = NoOptions
    inputs: ClassVar[Mapping[str, RunSelector]] = {}
    required: ClassVar[tuple[str, ...] | None] = None  # inputs that must select runs; None = all of them
    tables: ClassVar[tuple[str, ...]] = ()
    optional_tables: ClassVar[tuple[str, ...]] = ()  # written only when a unit of `needs` is on
    needs: ClassVar[tuple[str, ...]] = ()
    always: ClassVar[bool] = False  # bookkeeping tables: computed whenever they apply, not switchable
    default_enabled: ClassVar[bool] = True
    snapshots: ClassVar[bool] = False  # reads weight snapshots (a study keeps them for its selected runs)
    Target: ClassVar[type[BaseModel] | None] = None  # set when the unit runs on one run (`wsdlab analyze`)

    @property
    def doc(self) -> str:
        return (type(self).__doc__ or self.name).strip().splitlines()[0]

    def applies(self, inputs: Mapping[str, Sequence[Any]]) -> bool:
        """Whether the unit has something to read: every required input selects at least one run."""
        names = self.required if self.required is not None else tuple(self.inputs)
        return all(inputs.get(n) for n in names)

    def compute(self, ctx: UnitContext, options: Any) -> dict[str, list[Row]]:
        raise NotImplementedError

    def compute_run(self, target: Any, options: Any, *, device: str = "cpu", progress: bool = False) -> list[Row]:
        raise NotImplementedError(f"analysis '{self.name}' does not run on a single run")

    def headline(self, rows: Sequence[Row]) -> dict[str, Any]:
        return {"rows": len(rows)}

    def run_root(self, target: Any) -> Path:
        """The run folder a Target reads (the command line writes to RUN/analysis/ by default)."""
        return Path(target.run)


U = TypeVar("U", bound=type[AnalysisUnit])
_UNITS: dict[str, AnalysisUnit] = {}


def register_unit(cls: U) -> U:
    """Class decorator: register one instance of `cls` under `cls.name` (duplicates are rejected)."""
    name = getattr(cls, "name", None)
    if not isinstance(name, str) or not name:
        raise ValueError(f"{cls.__name__}: an analysis unit needs a name")
    if name in _UNITS:
        raise ValueError(f"analysis unit '{name}' is already registered by {type(_UNITS[name]).__module__}")
    if not cls.tables:
        raise ValueError(f"analysis unit '{name}' writes no tables")
    if not (isinstance(cls.Options, type) and issubclass(cls.Options, BaseModel)):
        raise ValueError(f"analysis unit '{name}': Options must be a pydantic model")
    if not all(isinstance(s, RunSelector) for s in cls.inputs.values()):
        raise ValueError(f"analysis unit '{name}': inputs must be RunSelectors")
    if cls.Target is not None and len(cls.tables) != 1:
        raise ValueError(f"analysis unit '{name}': a unit that runs on one run writes one table")
    _UNITS[name] = cls()
    return cls


def unregister_unit(name: str) -> None:
    """Remove a unit (tests)."""
    _UNITS.pop(name, None)


def _load_builtin() -> None:
    import wsdlab.analysis  # noqa: F401  (importing the package registers the built-in units)


def get_unit(name: str) -> AnalysisUnit:
    _load_builtin()
    if name not in _UNITS:
        raise ConfigError(f"unknown analysis '{name}'; known: {', '.join(_UNITS) or '(none)'}")
    return _UNITS[name]


def units() -> list[AnalysisUnit]:
    """Every registered unit, in registration order (dependencies first for the built-in ones)."""
    _load_builtin()
    return list(_UNITS.values())


def unit_names() -> list[str]:
    return [u.name for u in units()]


# ------------------------------------------------------------------------------------------- helpers


def branch_step(run: RunDir) -> int:
    """The step a branch started at (its parent's checkpoint step)."""
    branch = run.spec.branch
    if branch is None or branch.parent_step is None:
        raise ConfigError(f"run {run.path.name} is not a branch (no branch.parent_step in its spec)")
    return branch.parent_step


def evenly(items: Sequence[int], k: int) -> list[int]:
    """At most k items spread evenly over `items`, first and last included."""
    items = sorted(items)
    if len(items) <= k:
        return items
    if k == 1:
        return [items[-1]]
    return sorted({items[round(i * (len(items) - 1) / (k - 1))] for i in range(k)})


def labelled(rows: Sequence[Row], group: str) -> list[Row]:
    """Rows with a leading `shape` column (the group: a cooldown shape, 'stable' for the base run)."""
    return [{"shape": group, **r} for r in rows]


# The cooldown study's stages (a stage graph names its own; a study spec can override any input).
BASE = RunSelector(stage=["base"], group_by=["shape"])
COOLDOWNS = RunSelector(stage=["cooldown"], group_by=["shape", "variant"])  # one group per shape (/variant)
