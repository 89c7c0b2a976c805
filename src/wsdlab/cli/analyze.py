"""`wsdlab analyze <unit>`: one command per analysis unit that runs on a single run or checkpoint.

The commands are generated from the unit registry (`wsdlab.analysis.units`): the flags come from the
fields of the unit's `Target` (what to read: RUN, --steps, ...) and `Options` (how to measure), with
the names set in their field metadata; then --out, --device and --json. Each command writes the unit's
table as `<name>.csv` and the report catalogue's figure(s) of the unit as `<figure>.png` into --out
(default RUN/analysis/), and with --json prints the unit's headline numbers as one JSON object.
"""

from __future__ import annotations

import enum
import inspect
import json
import math
import types
import typing
from collections.abc import Callable
from pathlib import Path
from typing import Any, Literal, Optional

import typer
from pydantic import BaseModel, ValidationError

from wsdlab.analysis.units import AnalysisUnit, units
from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import path_option

app = typer.Typer(no_args_is_help=True)


# ---------------------------------------------------------------------------- parsing and output


def parse_ints(text: str | None, option: str) -> list[int] | None:
    """'10,20,30' -> [10, 20, 30]; None stays None."""
    if text is None:
        return None
    try:
        return [int(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected comma-separated integers, got {text!r}") from None


def parse_floats(text: str, option: str) -> list[float]:
    """'a,b,c' -> a list; 'start:stop:num' -> num evenly spaced values from start to stop (inclusive)."""
    try:
        if text.count(":") == 2:
            start, stop, num = text.split(":")
            n = int(num)
            if n < 1:
                raise ValueError
            lo, hi = float(start), float(stop)
            return [lo] if n == 1 else [round(lo + (hi - lo) * i / (n - 1), 12) for i in range(n)]
        values = [float(x) for x in text.split(",") if x.strip()]
    except ValueError:
        raise UserError(f"{option}: expected 'a,b,c' or 'start:stop:num', got {text!r}") from None
    if not values:
        raise UserError(f"{option}: no values in {text!r}")
    return values


def _device(name: str) -> str:
    import torch

    if name == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda: no CUDA device is available")
    if name not in ("cpu", "cuda"):
        raise UserError(f"--device must be auto, cpu or cuda, got {name!r}")
    return name


def _check_out(out: Path | None) -> None:
    """Refuse an --out that cannot become a directory before any work is done (nothing is written on failure)."""
    if out is not None and out.exists() and not out.is_dir():
        raise UserError(f"--out: {out} exists and is not a directory")


def _jsonable(x: Any) -> Any:
    """NaN/inf become null (strict JSON)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {str(k): _jsonable(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_jsonable(v) for v in x]
    return x


# ---------------------------------------------------------------------------- flags from fields


class Flag:
    """One command-line parameter and the model fields (dotted paths) its value sets."""

    def __init__(self, name: str, annotation: Any, paths: list[str], default: Any, help: str, required: bool) -> None:
        self.name, self.annotation, self.paths = name, annotation, paths
        self.default, self.help, self.required = default, help, required

    @property
    def param(self) -> str:
        """The Python parameter name of the flag ('--batch-size' -> batch_size, 'RUN' -> run)."""
        return self.name.lstrip("-").replace("-", "_").lower() + "_flag"

    @property
    def kind(self) -> str:
        inner = _inner(self.annotation)
        if typing.get_origin(inner) is list:
            return "floats" if typing.get_args(inner)[0] is float else "ints"
        return "bool" if inner is bool else "value"

    def parse(self, value: Any) -> Any:
        if value is None:
            return None
        if self.kind == "ints":
            return parse_ints(value, self.name)
        if self.kind == "floats":
            return parse_floats(value, self.name)
        return value.value if isinstance(value, enum.Enum) else value

    def typer_param(self) -> inspect.Parameter:
        inner = _inner(self.annotation)
        help = self.help + ("" if self.default is None or self.required else f" (default: {_show(self.default)})")
        if self.name.isupper():  # the positional RUN
            info = typer.Argument(... if self.required else None, metavar=self.name, parser=path_option, help=help)
            return inspect.Parameter(self.param, inspect.Parameter.POSITIONAL_OR_KEYWORD, default=info,
                                     annotation=Path if self.required else Optional[Path])
        extra: dict[str, Any] = {}
        if self.kind == "bool":
            decls, annotation = [f"{self.name}/--no-{self.name[2:]}"], Optional[bool]
        elif self.kind in ("ints", "floats"):
            decls, annotation = [self.name], Optional[str]
        elif typing.get_origin(inner) is Literal:
            values = [str(v) for v in typing.get_args(inner)]
            choice = enum.Enum(self.param.title().replace("_", ""), {v: v for v in values}, type=str)  # type: ignore[misc]
            decls, annotation = [self.name], Optional[choice]
        elif inner is Path:
            decls, annotation, extra = [self.name], Optional[Path], {"parser": path_option}
        else:
            decls, annotation = [self.name], Optional[inner]
        info = typer.Option(... if self.required else None, *decls, help=help, **extra)
        return inspect.Parameter(self.param, inspect.Parameter.KEYWORD_ONLY, default=info, annotation=annotation)


def _inner(annotation: Any) -> Any:
    """X of `X | None`."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        args = [a for a in typing.get_args(annotation) if a is not type(None)]
        return args[0] if len(args) == 1 else annotation
    return annotation


def _show(value: Any) -> str:
    return ",".join(f"{v:g}" if isinstance(v, float) else str(v) for v in value) if isinstance(value, list) else str(value)


def flags_of(model: type[BaseModel], defaults: BaseModel | None = None, prefix: str = "",
             path: str = "") -> list[Flag]:
    """Flags of a model's fields: `--<field>` or the field's `cli` name (False: none), nested models
    flattened with their `cli_prefix` (default '<field>-'); fields with the same flag share it."""
    out: dict[str, Flag] = {}
    for name, info in model.model_fields.items():
        meta = info.json_schema_extra if isinstance(info.json_schema_extra, dict) else {}
        here = f"{path}{name}"
        value = getattr(defaults, name, None) if defaults is not None else None
        if meta.get("cli") is False:
            continue
        inner = _inner(info.annotation)
        if isinstance(inner, type) and issubclass(inner, BaseModel):
            sub = meta.get("cli_prefix", f"{name.replace('_', '-')}-")
            for flag in flags_of(inner, value, prefix + str(sub), f"{here}."):
                _merge(out, flag)
            continue
        flag_name = meta.get("cli") or f"--{'' if meta.get('cli_shared') else prefix}{name.replace('_', '-')}"
        _merge(out, Flag(str(flag_name), info.annotation, [here], value, info.description or "",
                         info.is_required()))
    return list(out.values())


def _merge(flags: dict[str, Flag], flag: Flag) -> None:
    if flag.name in flags:
        flags[flag.name].paths += flag.paths
    else:
        flags[flag.name] = flag


def _set(data: dict[str, Any], path: str, value: Any) -> None:
    *parents, last = path.split(".")
    for p in parents:
        data = data.setdefault(p, {})
    data[last] = value


def build(model: type[BaseModel], flags: list[Flag], values: dict[str, Any], start: dict[str, Any]) -> Any:
    """Validate `model` from `start` with every given flag's value set at its paths; errors name the flag."""
    data = json.loads(json.dumps(start, default=str))
    for flag in flags:
        value = flag.parse(values.get(flag.param))
        if value is not None:
            for path in flag.paths:
                _set(data, path, value)
    try:
        return model.model_validate(data)
    except ValidationError as err:
        by_path = {p: f.name for f in flags for p in f.paths}
        lines = []
        for e in err.errors():
            loc = ".".join(str(p) for p in e["loc"])
            msg = e["msg"].removeprefix("Value error, ")
            lines.append(f"{by_path.get(loc, loc)}: {msg}" if loc else msg)
        raise UserError("; ".join(lines)) from None


# ---------------------------------------------------------------------------- commands


def _write(unit: AnalysisUnit, rows: list[dict[str, Any]], out: Path, as_json: bool) -> None:
    """<table>.csv, the catalogue's figures of the unit (<figure>.png), then the headline."""
    from wsdlab.analysis.tables import write_table
    from wsdlab.common.io import atomic_write_bytes
    from wsdlab.report.catalog import figures_of
    from wsdlab.report.panels import png_bytes

    csv_path = write_table(rows, out / f"{unit.tables[0]}.csv")
    written, skipped = [], []
    for figure in figures_of(unit.name):
        try:
            fig = figure.draw({unit.tables[0]: rows}, None)
        except ValueError as err:  # e.g. no ||Hv|| rows with --no-hessian
            skipped.append(f"{figure.name} ({err})")
            continue
        atomic_write_bytes(out / f"{figure.name}.png", png_bytes(fig))
        written.append(out / f"{figure.name}.png")
    headline = unit.headline(rows)
    if as_json:
        typer.echo(json.dumps(_jsonable(headline)))
        return
    from rich.console import Console

    console = Console()
    pngs = ", ".join(str(p) for p in written) or "no figure"
    console.print(f"wrote {csv_path} ({len(rows)} rows) and {pngs}", highlight=False, markup=False)
    for note in skipped:
        console.print(f"  figure not drawn: {note}", highlight=False, markup=False)
    for key, value in headline.items():
        console.print(f"  {key}: {value}", highlight=False, markup=False)


def make_command(unit: AnalysisUnit) -> Callable[..., None]:
    """The `wsdlab analyze <unit>` command: flags from the unit's Target and Options fields."""
    assert unit.Target is not None
    target_flags = flags_of(unit.Target)
    option_flags = flags_of(unit.Options, unit.Options())
    taken = {f.name for f in target_flags}
    clash = [f.name for f in option_flags if f.name in taken]
    if clash:
        raise ValueError(f"analysis unit '{unit.name}': flags {clash} are both Target and Options fields")
    defaults = unit.Options().model_dump(mode="json")

    def command(**values: Any) -> None:
        with user_errors():
            out: Path | None = values.pop("out")
            _check_out(out)
            options = build(unit.Options, option_flags, values, defaults)
            target = build(unit.Target, target_flags, values, {})  # type: ignore[arg-type]
            device = _device(values.pop("device"))
            as_json = values.pop("as_json")
            rows = unit.compute_run(target, options, device=device, progress=not as_json)
            folder = out if out is not None else unit.run_root(target) / "analysis"
            folder.mkdir(parents=True, exist_ok=True)
            _write(unit, rows, folder, as_json)

    params = [f.typer_param() for f in target_flags]
    params.sort(key=lambda p: p.kind)  # the positional RUN first
    params += [f.typer_param() for f in option_flags]
    params += [
        inspect.Parameter("out", inspect.Parameter.KEYWORD_ONLY, annotation=Optional[Path],
                          default=typer.Option(None, "--out", parser=path_option, help="Output directory [RUN/analysis].")),
        inspect.Parameter("device", inspect.Parameter.KEYWORD_ONLY, annotation=str,
                          default=typer.Option("auto", "--device", help="auto, cpu or cuda.")),
        inspect.Parameter("as_json", inspect.Parameter.KEYWORD_ONLY, annotation=bool,
                          default=typer.Option(False, "--json", help="Print the headline numbers as JSON.")),
    ]
    command.__signature__ = inspect.Signature(params)  # type: ignore[attr-defined]
    command.__annotations__ = {p.name: p.annotation for p in params}
    command.__doc__ = unit.doc
    command.__name__ = unit.name
    return command


for _unit in units():
    if _unit.Target is not None:
        app.command(_unit.name)(make_command(_unit))
