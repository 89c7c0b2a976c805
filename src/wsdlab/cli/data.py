"""`wsdlab data prepare` and `wsdlab data show`: build a corpus into the cache once (the separate
preparation step for clusters), and look at it."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Optional

import typer
from rich.console import Console

from wsdlab.cli.errors import UserError, user_errors
from wsdlab.cli.options import path_option
from wsdlab.common.config import read_yaml_mapping, set_by_dotted_key
from wsdlab.data.bundle import DataBundle, TokenBundle, load_data
from wsdlab.data.config import DataConfig

app = typer.Typer(no_args_is_help=True)
console = Console(highlight=False, soft_wrap=True, markup=False)  # paths and text are printed literally

ConfigOpt = typer.Option(None, "--config", "-c", parser=path_option, help="YAML file holding a DataConfig (default: the embedded corpus).")
SetOpt = typer.Option(None, "--set", "-s", help="Override a field: key=value (dotted keys, e.g. order.seed=1).")
CacheOpt = typer.Option(None, "--cache-dir", parser=path_option, help="Cache directory (default: $WSDLAB_CACHE or ~/.cache/wsdlab).")


def build_config(config: Path | None, sets: list[str] | None, cache_dir: Path | None) -> DataConfig:
    """DataConfig from an optional YAML file, then `--set key=value` overrides, then --cache-dir."""
    data: dict[str, Any] = {}
    if config is not None:
        data = read_yaml_mapping(config, "DataConfig")
    for item in sets or []:
        key, sep, value = item.partition("=")
        if not sep or not key.strip():
            raise UserError(f"--set {item}: expected key=value")
        set_by_dotted_key(data, key.strip(), value)
    if cache_dir is not None:
        data["cache_dir"] = str(cache_dir)
    return DataConfig.model_validate(data)


def _print_counts(bundle: DataBundle) -> None:
    console.print(f"directory  {bundle.directory}")
    if isinstance(bundle, TokenBundle):
        m = bundle.meta
        for split in ("train", "val"):
            console.print(f"{split:<10} {m[f'num_{split}']} sequences of {bundle.seq_len + 1} tokens "
                          f"({m[f'{split}_documents']} documents, {m[f'{split}_tokens']} tokens)")
        console.print(f"vocab      {bundle.vocab_size} ({bundle.config.tokenizer}, {m['dtype']})")
    else:
        console.print(f"train      {bundle.num_train} items\nval        {bundle.num_val} items")
        console.print(f"classes    {bundle.num_classes}")


@app.command()
def prepare(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    cache_dir: Optional[Path] = CacheOpt,
    progress: bool = typer.Option(True, "--progress/--no-progress", help="Show progress while preparing."),
) -> None:
    """Build the corpus and tokenizer of a DataConfig into the cache (once), and print its counts.

    On a cluster, run this once (one process, on a node that sees the shared cache) before training:
    a run then finds the corpus prepared; under torchrun, ranks other than 0 otherwise wait for rank
    0's preparation (up to $WSDLAB_DATA_WAIT seconds, default a week).
    """
    with user_errors():
        cfg = build_config(config, set_, cache_dir)
        bundle = load_data(cfg, progress=progress)
        _print_counts(bundle)


@app.command()
def show(
    config: Optional[Path] = ConfigOpt,
    set_: Optional[list[str]] = SetOpt,
    cache_dir: Optional[Path] = CacheOpt,
    index: int = typer.Option(0, help="Which val sequence to decode."),
    chars: int = typer.Option(600, help="Show at most this many characters of the sample."),
) -> None:
    """Print the corpus directory, its counts and one decoded val sequence (preparing it if needed)."""
    with user_errors():
        cfg = build_config(config, set_, cache_dir)
        bundle = load_data(cfg, progress=True)
        _print_counts(bundle)
        if isinstance(bundle, TokenBundle):
            if not 0 <= index < bundle.num_val:
                raise UserError(f"--index: {index} not in [0, {bundle.num_val})")
            text = bundle.decode(bundle.val_batch([index])[0])
            console.rule(f"val sequence {index}")
            console.print(text[:chars], markup=False)
