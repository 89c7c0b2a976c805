"""`wsdlab train` (a stable phase, or any RunSpec) and `wsdlab cooldown` (a branch from a checkpoint).

Everything is validated before the output directory is created: bad input prints `error: ...`
naming the field and exits with code 2, leaving nothing behind.
"""

from __future__ import annotations

import os
import statistics
from pathlib import Path
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape

from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import name_option, path_option
from wsdlab.common.config import read_yaml_mapping, set_by_dotted_key
from wsdlab.train import RunDir, RunSpec, branch_from_checkpoint, run_preset, train
from wsdlab.train.metrics import MetricsSink, TensorBoardSink, WandbSink

console = Console()


def parse_sets(items: list[str]) -> dict[str, str]:
    """["a.b=1", ...] -> {"a.b": "1"}; an item without '=' is a UserError."""
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set expects key=value, got '{item}'")
        out[key.strip()] = value
    return out


def build_spec(config: Path | None, preset: str | None, steps: int | None, checkpoint_every: int | None,
               seed: int | None, sets: dict[str, str]) -> RunSpec:
    """The run spec from a YAML file or a preset, then the flags, then the --set overrides."""
    if config is not None and preset is not None:
        raise UserError("give either --config or --preset, not both")
    if config is not None:
        data: dict[str, Any] = read_yaml_mapping(config, "RunSpec")
    else:
        data = run_preset("tiny" if preset is None else preset).model_dump(mode="json")
    if steps is not None:
        set_by_dotted_key(data, "train.steps", steps)
    if checkpoint_every is not None:
        set_by_dotted_key(data, "train.checkpoint_every", checkpoint_every)
    if seed is not None:
        set_by_dotted_key(data, "train.seed", seed)
    for key, value in sets.items():
        set_by_dotted_key(data, key, value)
    return RunSpec.model_validate(data)


def make_sinks(out: Path, spec: RunSpec, tensorboard: bool, wandb: str | None) -> list[MetricsSink]:
    """Optional TensorBoard / W&B sinks (their packages are checked now; files appear on first log)."""
    sinks: list[MetricsSink] = []
    if tensorboard:
        sinks.append(TensorBoardSink(out / "tensorboard"))
    if wandb:
        sinks.append(WandbSink(wandb, name=spec.name, config=spec.model_dump(mode="json"), directory=out))
    return sinks


def print_summary(run: RunDir) -> None:
    """Final train loss, final val loss, median tokens/s and the run directory; printed by rank 0 alone
    under torchrun (the rank that wrote the files: when `train` returns there, they hold the final rows)."""
    if int(os.environ.get("RANK", "0") or 0) != 0:
        return
    rows, evals = run.metrics(), run.eval_rows()
    loss = rows[-1]["loss"] if rows else None
    val = evals[-1]["val_loss"] if evals else None
    speeds = [r["tokens_per_s"] for r in rows[1:] if r.get("tokens_per_s")] or [
        r["tokens_per_s"] for r in rows if r.get("tokens_per_s")]
    tps = statistics.median(speeds) if speeds else None

    def fmt(x: float | None, spec: str) -> str:
        return "n/a" if x is None else format(x, spec)

    console.print(f"[bold]done[/] {escape(run.spec.name)}: step {rows[-1]['step'] if rows else '-'} | "
                  f"loss {fmt(loss, '.4f')} | val loss {fmt(val, '.4f')} | {fmt(tps, ',.0f')} tokens/s | "
                  f"out {escape(str(run.path))}", highlight=False, soft_wrap=True)


def train_command(
    out: Path = typer.Option(..., "--out", parser=path_option, help="Run directory (resumed when it holds checkpoints)."),
    config: Path | None = typer.Option(None, "--config", parser=path_option, help="RunSpec YAML file."),
    preset: str | None = typer.Option(None, "--preset", parser=name_option, help="Named run spec (default tiny)."),
    steps: int | None = typer.Option(None, "--steps", help="train.steps"),
    checkpoint_every: int | None = typer.Option(None, "--checkpoint-every", help="train.checkpoint_every"),
    seed: int | None = typer.Option(None, "--seed", help="train.seed (initialisation)"),
    sets: list[str] = typer.Option([], "--set", help="Dotted override key=value, e.g. optim.lr=3e-3 (repeatable)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    wandb: str | None = typer.Option(None, "--wandb", parser=name_option, help="Also log to this W&B project."),
) -> None:
    """Train a run (warmup + stable phase by default) with checkpoints, evals and snapshots."""
    with user_errors():
        spec = build_spec(config, preset, steps, checkpoint_every, seed, parse_sets(sets))
        run = train(spec, out, sinks=make_sinks(out, spec, tensorboard, wandb))
    print_summary(run)


def cooldown_command(
    from_: Path = typer.Option(..., "--from", parser=path_option, help="Checkpoint directory RUN/checkpoints/<step>."),
    shape: str = typer.Option(..., "--shape", parser=name_option, help="Cooldown shape (linear, cosine, sqrt, ...)."),
    steps: int = typer.Option(..., "--steps", help="Cooldown length in steps."),
    out: Path = typer.Option(..., "--out", parser=path_option, help="Run directory of the branch."),
    shape_param: float | None = typer.Option(None, "--shape-param", help="Shape parameter (p of lowered_linear)."),
    alpha: float | None = typer.Option(None, "--alpha", help="Final LR factor."),
    seed: int | None = typer.Option(None, "--seed", help="Data-order seed of the branch."),
    beta_power: float | None = typer.Option(None, "--beta-power", help="betas -> beta**p (p < 1: larger betas, longer memory; p > 1: shorter)."),
    beta2_only: bool = typer.Option(False, "--beta2-only", help="Scale beta2 only."),
    batch_scale: float | None = typer.Option(None, "--batch-scale", help="Batch x k, steps // k."),
    match_half_life: bool = typer.Option(False, "--match-half-life", help="With --batch-scale k: betas -> beta**k (same EMA half-life in tokens)."),
    no_weight_decay: bool = typer.Option(False, "--no-weight-decay", help="Weight decay off."),
    reset_optimizer: bool = typer.Option(False, "--reset-optimizer", help="Fresh AdamW moments."),
    sets: list[str] = typer.Option([], "--set", help="Dotted override key=value (repeatable)."),
    tensorboard: bool = typer.Option(False, "--tensorboard", help="Also log to OUT/tensorboard."),
    wandb: str | None = typer.Option(None, "--wandb", parser=name_option, help="Also log to this W&B project."),
) -> None:
    """Branch a cooldown from a checkpoint and train it."""
    with user_errors():
        spec = branch_from_checkpoint(from_, steps=steps, shape=shape, shape_param=shape_param, alpha=alpha, seed=seed,
                           beta_power=beta_power, beta2_only=beta2_only, batch_scale=batch_scale,
                           match_half_life=match_half_life, weight_decay_off=no_weight_decay,
                           reset_optimizer=reset_optimizer, overrides=parse_sets(sets))
        run = train(spec, out, sinks=make_sinks(out, spec, tensorboard, wandb))
    print_summary(run)


def register(app: typer.Typer) -> None:
    """Add the top-level commands to the root app."""
    app.command("train")(train_command)
    app.command("cooldown")(cooldown_command)
