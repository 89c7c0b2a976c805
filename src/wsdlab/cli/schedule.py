"""`wsdlab schedule values|plot`: print a schedule as CSV, or draw shapes and schedules to a PNG."""

from __future__ import annotations

import enum
import sys
from pathlib import Path
from typing import Any, Optional

import typer

from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import name_option, path_option

app = typer.Typer(no_args_is_help=True)


class Kind(str, enum.Enum):
    wsd = "wsd"
    wso = "wso"
    cosine = "cosine"
    linear = "linear"


def _schedule_config(
    kind: str,
    warmup_steps: int,
    cooldown_fraction: float | None = None,
    cooldown_steps: int | None = None,
    shape: str | None = None,
    shape_param: float | None = None,
    shape_expr: str | None = None,
    alpha: float | None = None,
    mid_steps: int | None = None,
    alpha_mid: float | None = None,
) -> Any:
    """A ScheduleConfig from the options given; options left out keep the config's defaults."""
    from wsdlab.schedules import ScheduleConfig

    fields: dict[str, Any] = {"kind": kind, "warmup_steps": warmup_steps}
    optional = {
        "cooldown_fraction": cooldown_fraction,
        "cooldown_steps": cooldown_steps,
        "shape": shape,
        "shape_param": shape_param,
        "shape_expr": shape_expr,
        "alpha": alpha,
    }
    fields.update({k: v for k, v in optional.items() if v is not None})
    if alpha_mid is not None and mid_steps is None:
        raise UserError("--alpha-mid needs --mid-steps")
    if mid_steps is not None:
        fields["mid"] = {"steps": mid_steps} if alpha_mid is None else {"steps": mid_steps, "alpha_mid": alpha_mid}
    if shape_expr is not None and shape is None:
        fields["shape"] = "expr"  # --shape-expr alone means the expression shape
    return ScheduleConfig.model_validate(fields)


@app.command("values")
def values(
    total_steps: int = typer.Option(..., "--total-steps", min=1, help="T = train.steps (mid-training included)."),
    kind: Kind = typer.Option(Kind.wsd, "--kind", help="Schedule kind."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0, help="Linear warmup length T_w."),
    cooldown_fraction: Optional[float] = typer.Option(None, "--cooldown-fraction", help="wsd: F in (0,1) [0.2]."),
    cooldown_steps: Optional[int] = typer.Option(None, "--cooldown-steps", help="wsd: exact cooldown length."),
    shape: Optional[str] = typer.Option(None, "--shape", parser=name_option, help="wsd cooldown shape [sqrt]."),
    shape_param: Optional[float] = typer.Option(None, "--shape-param", help="Shape parameter (p of lowered_linear)."),
    shape_expr: Optional[str] = typer.Option(None, "--shape-expr", help="Shape as an expression of x, e.g. '1 - x**3'."),
    alpha: Optional[float] = typer.Option(None, "--alpha", help="Minimum-LR factor at the end of the decay [0]."),
    mid_steps: Optional[int] = typer.Option(None, "--mid-steps", help="Mid-training stage length T_mid."),
    alpha_mid: Optional[float] = typer.Option(None, "--alpha-mid", help="Mid-training final factor [0]."),
) -> None:
    """Print `step,lr_factor` CSV for every step 0..T (10 significant digits)."""
    from wsdlab.schedules import schedule_values

    with user_errors():
        cfg = _schedule_config(
            kind.value, warmup_steps, cooldown_fraction, cooldown_steps,
            shape, shape_param, shape_expr, alpha, mid_steps, alpha_mid,
        )
        factors = schedule_values(cfg, total_steps)
    rows = [f"{t},{f:.10g}" for t, f in enumerate(factors)]
    sys.stdout.write("step,lr_factor\n" + "\n".join(rows) + "\n")


def _parse_shape_list(text: str) -> list[tuple[str, str, float | None]]:
    """'linear,lowered_linear:0.5' -> [(label, name, param)]."""
    out = []
    for item in (s.strip() for s in text.split(",")):
        if not item:
            continue
        name, _, param = item.partition(":")
        try:
            value = float(param) if param else None
        except ValueError:
            raise UserError(f"--shapes: '{item}' is not NAME or NAME:PARAM (PARAM a number)") from None
        out.append((item, name, value))
    return out


@app.command("plot")
def plot(
    out: Path = typer.Option(..., "--out", parser=path_option, help="PNG file to write (atomically)."),
    shapes: Optional[str] = typer.Option(
        None, "--shapes", help="Comma-separated shapes, NAME or NAME:PARAM [all built-in and registered]."
    ),
    shape_expr: Optional[str] = typer.Option(None, "--shape-expr", help="Also draw this expression of x."),
    total_steps: Optional[int] = typer.Option(
        None, "--total-steps", min=1, help="Also draw full schedules over this many steps."
    ),
    kinds: str = typer.Option("wsd", "--kinds", help="Schedules to draw with --total-steps (wsd: one per shape)."),
    warmup_steps: int = typer.Option(0, "--warmup-steps", min=0),
    cooldown_fraction: Optional[float] = typer.Option(None, "--cooldown-fraction"),
    cooldown_steps: Optional[int] = typer.Option(None, "--cooldown-steps"),
    alpha: Optional[float] = typer.Option(None, "--alpha"),
) -> None:
    """Draw cooldown shapes (factor vs x) and, with --total-steps, full schedules (factor vs step)."""
    from wsdlab.common.io import atomic_write_bytes
    from wsdlab.schedules import SHAPE_NAMES, get_shape, schedule_values
    from wsdlab.schedules.plot import render_png, shape_curves

    with user_errors():
        if out.suffix.lower() != ".png":
            raise UserError(f"--out must be a .png file, got {out}")
        specs = _parse_shape_list(shapes if shapes is not None else ",".join(SHAPE_NAMES))
        chosen = [(label, get_shape(name, param), name, param, None) for label, name, param in specs]
        if shape_expr is not None:
            chosen.append((f"expr: {shape_expr}", get_shape("expr", expr=shape_expr), "expr", None, shape_expr))
        schedule_lines = []
        if total_steps is not None:
            steps = list(range(total_steps + 1))
            for kind in (k.strip() for k in kinds.split(",") if k.strip()):
                per_shape = chosen if kind == "wsd" else [("", None, None, None, None)]
                for label, _, name, param, expr in per_shape:
                    cfg = _schedule_config(kind, warmup_steps, cooldown_fraction, cooldown_steps,
                                           name, param, expr, alpha)
                    schedule_lines.append((f"{kind} {label}".strip(), steps, schedule_values(cfg, total_steps)))
        png = render_png(shape_curves([(label, fn) for label, fn, *_ in chosen]), schedule_lines)
        atomic_write_bytes(out, png)
    typer.echo(f"wrote {out}")
