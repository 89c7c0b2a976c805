"""Checks run before anything is written: the spec builds, its files exist, `out` may be resumed."""

from __future__ import annotations

from pathlib import Path

from wsdlab.common.errors import ConfigError
from wsdlab.data.config import DataConfig
from wsdlab.schedules import build_schedule
from wsdlab.train.checkpoint import check_same_model, list_checkpoints, open_checkpoint
from wsdlab.train.config import RunSpec
from wsdlab.train.spec_io import describe_differences, differing_keys, read_spec


def check_spec(spec: RunSpec) -> None:
    """ValueError / FileNotFoundError naming the field when the spec cannot run (model shapes are
    checked by ModelConfig itself, and the model is built before the run directory is created)."""
    try:
        build_schedule(spec.schedule, spec.train.steps)
    except ValueError as e:
        raise ConfigError(f"schedule: {e}") from None
    d = spec.data
    if d.source in ("text", "jsonl", "parquet") and not Path(d.path or "").exists():
        raise FileNotFoundError(f"data.path: not found: {d.path}")
    if d.tokenizer == "pretrained" and not Path(d.tokenizer_path or "").is_file():
        raise FileNotFoundError(f"data.tokenizer_path: not found: {d.tokenizer_path}")
    bad = [s for s in spec.train.checkpoint_steps + spec.train.snapshot_steps if s < 0 or s > spec.train.steps]
    if bad:
        raise ConfigError(f"train.checkpoint_steps / snapshot_steps: steps {bad} are outside 0..{spec.train.steps}")


def check_resumable(spec: RunSpec, out: str | Path) -> None:
    """`out` is new, or holds a run of exactly this spec; a branch's parent checkpoint must match the model."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise ConfigError(f"out: {out} exists and is not a directory")
    stored_path = out / "spec.yaml"
    found = list_checkpoints(out)
    if not stored_path.is_file() and found:
        stored_path = found[max(found)] / "spec.yaml"
    if stored_path.is_file():
        stored = read_spec(stored_path).model_dump(mode="json")
        wanted = spec.model_dump(mode="json")
        keys = differing_keys(stored, wanted)
        if keys:
            detail = describe_differences(stored, wanted, keys, "stored", "given")
            raise ConfigError(f"out: {out} holds a run of another spec (differing keys: {', '.join(keys)}): {detail}. "
                             "Use a new --out directory, or the stored spec to resume.")
    if spec.init_from and not found:
        parent = open_checkpoint(spec.init_from)
        check_same_model(parent.spec.model, spec.model, parent.path)


def data_differs(a: DataConfig, b: DataConfig) -> bool:
    """True when two data configs read different streams (the cache location does not count)."""
    da, db = a.model_dump(mode="json"), b.model_dump(mode="json")
    da.pop("cache_dir", None), db.pop("cache_dir", None)
    return da != db
