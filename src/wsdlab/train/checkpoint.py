"""Checkpoint directories: weights, optimizer state, RNG, train state and spec, written atomically.

Layout of RUN/checkpoints/<step>/ (docs/ARCHITECTURE.md): model.safetensors, optimizer.safetensors
(AdamW state under "<param name>/<step|exp_avg|exp_avg_sq>"), rng.safetensors (torch CPU/CUDA
generator states), state.json (step, data_cursor, tokens, optimizer param-group hyper-parameters,
python/numpy RNG states), spec.yaml and manifest.json (size and sha256 of each of those five
files, written last). The directory is built under a `.tmp-*` name and renamed, so a crash never
leaves a checkpoint that looks valid. Nothing is unpickled on load.

Integrity. `open_checkpoint` verifies a checkpoint before anything is read from it and raises
`CheckpointError` naming the file and the problem (missing file, missing manifest, size or
checksum mismatch, truncated safetensors, bad state.json values). Checkpoints written before
manifests existed (state.json "format" 1, no manifest.json) are *accepted*: all five files must be
present, each safetensors header must parse and account for the file's exact size, and state.json
is validated as usual. A format-2 checkpoint without its manifest is damaged (rejected).

Sharded checkpoints (FSDP runs, train/sharded.py) hold `sharded/` (torch.distributed.checkpoint's
`.metadata` and one shard file per rank) instead of model.safetensors and optimizer.safetensors; their
manifest says `"sharded": true` and lists every file, the shards included (paths relative to the
checkpoint). `Checkpoint.model_tensors()` / `optimizer_tensors()` read either format into the same
dictionaries on one process.
"""

from __future__ import annotations

import errno
import hashlib
import json
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from pydantic import Field, ValidationError, field_validator
from safetensors.torch import load_file, save_file

from wsdlab.common.config import StrictModel, describe_validation_error
from wsdlab.common.errors import CheckpointError, ConfigError, NonFiniteError
from wsdlab.common.io import atomic_directory, atomic_write_text
from wsdlab.models.config import ModelConfig
from wsdlab.train.config import RunSpec
from wsdlab.train.layout import CHECKPOINTS_DIR, SPEC, checkpoint_dir  # noqa: F401 - checkpoint_dir re-exported
from wsdlab.train.spec_io import (
    describe_differences,
    differing_keys,
    dump_spec,
    read_spec,
)

FORMAT_VERSION = 2  # 2: manifest.json; 1: no manifest (still readable, see the module docstring)
MODEL_FILE, OPTIM_FILE, RNG_FILE, STATE_FILE, SPEC_FILE = (
    "model.safetensors", "optimizer.safetensors", "rng.safetensors", "state.json", SPEC)
MANIFEST_FILE = "manifest.json"
REQUIRED_FILES = (MODEL_FILE, OPTIM_FILE, RNG_FILE, STATE_FILE, SPEC_FILE)  # all five are needed to resume
TENSOR_FILES = (MODEL_FILE, OPTIM_FILE, RNG_FILE)
SHARDED_DIR = "sharded"  # a sharded checkpoint's DCP folder
SHARDED_REQUIRED = (RNG_FILE, STATE_FILE, SPEC_FILE, f"{SHARDED_DIR}/.metadata")  # its files needed to resume
_CHUNK = 1 << 20


class CheckpointState(StrictModel):
    """state.json of a checkpoint (validated on open; integers must be integers, not 3.0 or "3")."""

    format: int = Field(1, strict=True, ge=1)
    step: int = Field(strict=True, ge=0)
    start_step: int = Field(0, strict=True, ge=0, description="The step its run directory began at.")
    data_cursor: int = Field(0, strict=True, ge=0, description="Stream positions consumed.")
    tokens: int = Field(0, strict=True, ge=0)
    optimizer: list[dict[str, Any]] = Field(default_factory=list, description="Param-group hyper-parameters.")
    rng: dict[str, Any] = Field(default_factory=dict, description="python/numpy RNG states.")

    @field_validator("rng")
    @classmethod
    def _check_rng(cls, value: dict[str, Any]) -> dict[str, Any]:
        if value and not {"python", "numpy"} <= value.keys():
            raise ValueError("needs the 'python' and 'numpy' generator states")
        return value


def cpu_tensors(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Contiguous CPU copies (tied weights become separate tensors, which safetensors requires)."""
    return {k: v.detach().to("cpu", copy=True).contiguous() for k, v in state.items()}


def save_checkpoint(directory: str | Path, *, model_state: dict[str, torch.Tensor],
                    optim_state: dict[str, torch.Tensor], rng_state: dict[str, torch.Tensor],
                    state: dict[str, Any], spec: RunSpec) -> Path:
    """Write one checkpoint directory atomically (replacing an older one of the same step).

    NonFiniteError (nothing written) when a weight or optimizer tensor holds NaN/inf.
    The manifest is written last; the directory becomes visible only after it (atomic rename).
    A full disk is an OSError(ENOSPC) naming `directory` (safetensors reports it as its own
    SafetensorError); nothing is written and earlier checkpoints stay intact.
    """
    directory = Path(directory)
    check_finite(model_state, f"model weights of checkpoint {directory}")
    check_finite(optim_state, f"optimizer state of checkpoint {directory}")
    try:
        with atomic_directory(directory) as tmp:
            save_file(cpu_tensors(model_state), tmp / MODEL_FILE)
            save_file(cpu_tensors(optim_state), tmp / OPTIM_FILE)
            save_file(cpu_tensors(rng_state), tmp / RNG_FILE)
            (tmp / STATE_FILE).write_text(json.dumps({**state, "format": FORMAT_VERSION}))
            (tmp / SPEC_FILE).write_text(dump_spec(spec))
            write_manifest(tmp)
    except Exception as err:
        if not is_disk_full(err):
            raise
        raise OSError(errno.ENOSPC, "no space left on device (checkpoint not written; earlier checkpoints are "
                                    "intact)", str(directory)) from None
    return directory


def write_sharded_rest(tmp: Path, *, rng_state: dict[str, torch.Tensor], state: dict[str, Any], spec: RunSpec) -> None:
    """The files rank 0 adds to a sharded checkpoint's temporary folder once every rank's shards are in
    `tmp/sharded/` (train/sharded.py): rng, state.json, spec.yaml, then the manifest (written last)."""
    save_file(cpu_tensors(rng_state), tmp / RNG_FILE)
    (tmp / STATE_FILE).write_text(json.dumps({**state, "format": FORMAT_VERSION}))
    (tmp / SPEC_FILE).write_text(dump_spec(spec))
    write_manifest(tmp, sharded=True)


def is_disk_full(err: BaseException) -> bool:
    """True for ENOSPC, as an OSError or as safetensors' SafetensorError, whose message is
    `Error while serializing: IoError(Os { code: 28, kind: StorageFull, message: "No space left on device" })`."""
    if isinstance(err, OSError):
        return err.errno == errno.ENOSPC
    text = str(err)
    return type(err).__name__ == "SafetensorError" and (
        "StorageFull" in text or "No space left on device" in text or f"code: {errno.ENOSPC}," in text)


def check_finite(tensors: dict[str, torch.Tensor], what: str) -> None:
    """NonFiniteError naming the first floating-point tensor of `tensors` that holds NaN/inf."""
    for name, t in tensors.items():
        if t.is_floating_point() and not bool(torch.isfinite(t).all()):
            kind = "NaN" if bool(torch.isnan(t).any()) else "inf"
            raise NonFiniteError(f"{what}: tensor '{name}' holds {kind}; not writing it")


def file_sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(_CHUNK):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(directory: Path, *, sharded: bool = False) -> None:
    """manifest.json: {"format", "files": {name: {"size", "sha256"}}} of the checkpoint's files; a sharded
    checkpoint's adds "sharded": true and lists its shard files too."""
    names = list(REQUIRED_FILES) if not sharded else [*SHARDED_REQUIRED[:3], *sorted(
        p.relative_to(directory).as_posix() for p in (directory / SHARDED_DIR).rglob("*") if p.is_file())]
    files = {name: {"size": (directory / name).stat().st_size, "sha256": file_sha256(directory / name)}
             for name in names}
    head = {"format": FORMAT_VERSION, "sharded": True} if sharded else {"format": FORMAT_VERSION}
    atomic_write_text(directory / MANIFEST_FILE, json.dumps({**head, "files": files}, indent=1))


def is_sharded(path: Path) -> bool:
    """A sharded checkpoint: it has the DCP folder `sharded/`."""
    return (Path(path) / SHARDED_DIR).is_dir()


def verify_checkpoint(path: str | Path, *, checksums: bool = True) -> CheckpointState:
    """Check a checkpoint directory and return its validated state; CheckpointError names the file
    and the problem. `checksums=False` skips the sha256 (sizes and headers are still checked)."""
    path = Path(path)
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path}: directory not found")
    sharded = is_sharded(path)
    required = SHARDED_REQUIRED if sharded else REQUIRED_FILES
    missing = [f for f in required if not (path / f).is_file()]
    if missing:
        more = f" (and {', '.join(missing[1:])})" if missing[1:] else ""
        raise CheckpointError(f"checkpoint {path / missing[0]}: missing{more}")
    manifest = path / MANIFEST_FILE
    if manifest.is_file():
        _verify_manifest(path, manifest, checksums, sharded)
    elif sharded:
        raise CheckpointError(f"checkpoint {path}: missing {MANIFEST_FILE} (the checkpoint is incomplete or damaged)")
    state = read_state(path)
    if state.format >= 2 and not manifest.is_file():
        raise CheckpointError(f"checkpoint {path}: missing {MANIFEST_FILE} (the checkpoint is incomplete or damaged)")
    for name in (RNG_FILE,) if sharded else TENSOR_FILES:
        check_safetensors_header(path / name)
    return state


def _verify_manifest(path: Path, manifest: Path, checksums: bool, sharded: bool = False) -> None:
    try:
        data = json.loads(manifest.read_text())
        files = data["files"]
        names = [n for n in files if n.startswith(SHARDED_DIR + "/")] + list(SHARDED_REQUIRED[:3]) if sharded \
            else REQUIRED_FILES
        entries = {name: (int(files[name]["size"]), str(files[name]["sha256"])) for name in names}
    except (json.JSONDecodeError, KeyError, TypeError, ValueError, UnicodeDecodeError, AttributeError) as err:
        raise CheckpointError(f"checkpoint {manifest}: unreadable manifest ({type(err).__name__}: {err})") from None
    if sharded and (data.get("sharded") is not True or SHARDED_REQUIRED[3] not in files):
        raise CheckpointError(f"checkpoint {manifest}: the checkpoint holds {SHARDED_DIR}/ but its manifest does "
                              "not describe a sharded checkpoint")
    if sharded:
        on_disk = {p.relative_to(path).as_posix() for p in (path / SHARDED_DIR).rglob("*") if p.is_file()}
        extra, gone = sorted(on_disk - entries.keys()), sorted(n for n in entries if not (path / n).is_file())
        if gone:
            raise CheckpointError(f"checkpoint {path / gone[0]}: missing (listed in {MANIFEST_FILE})")
        if extra:
            raise CheckpointError(f"checkpoint {path / extra[0]}: not listed in {MANIFEST_FILE}")
    for name, (size, digest) in entries.items():
        actual = (path / name).stat().st_size
        if actual != size:
            raise CheckpointError(f"checkpoint {path / name}: size {actual} bytes, manifest says {size} "
                                  f"({'truncated' if actual < size else 'grown'})")
        if checksums and file_sha256(path / name) != digest:
            raise CheckpointError(f"checkpoint {path / name}: sha256 checksum mismatch with {MANIFEST_FILE}")


def check_safetensors_header(path: Path) -> None:
    """CheckpointError unless `path` is a whole safetensors file: an 8-byte header length, a JSON
    header, and tensor data ending exactly at the end of the file."""
    size = path.stat().st_size
    try:
        with open(path, "rb") as f:
            head = f.read(8)
            if len(head) < 8:
                raise ValueError(f"{size} bytes, too short for a header")
            (n,) = struct.unpack("<Q", head)
            if n > size - 8:
                raise ValueError(f"header of {n} bytes does not fit in {size} bytes")
            header = json.loads(f.read(n))
        ends = [int(v["data_offsets"][1]) for k, v in header.items() if k != "__metadata__"]
    except (ValueError, KeyError, TypeError, AttributeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path}: not a valid safetensors file (truncated or damaged: {err})") from None
    expected = 8 + n + max(ends, default=0)
    if expected != size:
        raise CheckpointError(f"checkpoint {path}: truncated or damaged safetensors file "
                              f"({size} bytes, its header describes {expected})")


def read_state(path: Path) -> CheckpointState:
    """state.json of checkpoint directory `path`, validated; its step must equal the folder's name."""
    file = path / STATE_FILE
    try:
        data = json.loads(file.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {file}: not valid JSON ({err})") from None
    if not isinstance(data, dict):
        raise CheckpointError(f"checkpoint {file}: not a JSON object")
    try:
        state = CheckpointState.model_validate(data)
    except ValidationError as err:
        lines = describe_validation_error(err).replace("\n", "; ")
        raise CheckpointError(f"checkpoint {file}: invalid values: {lines}") from None
    if path.name.isdigit() and int(path.name) != state.step:
        raise CheckpointError(f"checkpoint {file}: step {state.step} differs from its folder's step {path.name}")
    if state.start_step > state.step:
        raise CheckpointError(f"checkpoint {file}: start_step {state.start_step} exceeds step {state.step}")
    return state


def check_state_fits_spec(path: Path, state: CheckpointState, spec: RunSpec) -> None:
    """The data cursor and token count of state.json agree with the spec's batch: the run read
    (step - start_step) global batches itself, and a run that is not a branch read nothing else."""
    from wsdlab.train.batching import global_batch_size

    tokens_per_item = 1 if spec.data.is_vision else spec.data.seq_len
    try:
        batch = global_batch_size(spec.train, tokens_per_item)
    except ValueError:
        return  # the spec check reports it
    own = (state.step - state.start_step) * batch
    fresh = spec.init_from is None and state.start_step == 0
    if state.data_cursor < own or (fresh and state.data_cursor != own):
        raise CheckpointError(f"checkpoint {path / STATE_FILE}: data_cursor {state.data_cursor} does not match "
                              f"{state.step - state.start_step} steps of {batch} sequences"
                              f"{' (expected ' + str(own) + ')' if fresh else ''}")
    if fresh and state.tokens != own * tokens_per_item:
        raise CheckpointError(f"checkpoint {path / STATE_FILE}: tokens {state.tokens} do not match "
                              f"{state.step} steps of {batch * tokens_per_item} tokens")


def write_stub_checkpoint(directory: str | Path, spec: RunSpec, step: int | None = None) -> Path:
    """A valid, empty checkpoint of `spec` at `step` (default: its last; no tensors): stands in for a
    parent's checkpoint when branch specs are checked before training (study planning, tests)."""
    step = spec.train.steps if step is None else step
    state = {"step": step, "start_step": step, "data_cursor": 0, "tokens": 0}
    return save_checkpoint(directory, model_state={}, optim_state={}, rng_state={}, state=state, spec=spec)


def is_checkpoint(path: Path) -> bool:
    """A checkpoint directory: step-named (`.tmp-*` ones are unfinished and ignored).

    Whether it is complete and intact is checked by `verify_checkpoint` / `open_checkpoint`.
    """
    return path.is_dir() and path.name.isdigit()


def list_checkpoints(run: str | Path) -> dict[int, Path]:
    """{step: directory} of the checkpoint directories of a run, sorted by step (not verified)."""
    root = Path(run) / CHECKPOINTS_DIR
    if not root.is_dir():
        return {}
    found = {int(p.name): p for p in root.iterdir() if is_checkpoint(p)}
    return dict(sorted(found.items()))


@dataclass(frozen=True)
class Checkpoint:
    """A verified checkpoint directory opened for reading (tensors are read on demand)."""

    path: Path
    spec: RunSpec
    state: dict[str, Any]

    @property
    def step(self) -> int:
        return int(self.state["step"])

    @property
    def sharded(self) -> bool:
        """Written by an FSDP run as DCP shards (train/sharded.py) rather than model/optimizer.safetensors."""
        return is_sharded(self.path)

    def _load(self, name: str) -> dict[str, torch.Tensor]:
        """The tensors of one file (of a sharded checkpoint: the model's or optimizer's, gathered whole on
        this process); CheckpointError naming the file (and tensor) when it is damaged or a
        weight/optimizer tensor holds NaN/inf (save_checkpoint never writes one: the file was altered)."""
        if self.sharded and name in (MODEL_FILE, OPTIM_FILE):
            from wsdlab.train.sharded import MODEL_PREFIX, OPTIM_PREFIX, load_full

            tensors = load_full(self.path / SHARDED_DIR, MODEL_PREFIX if name == MODEL_FILE else OPTIM_PREFIX)
            try:
                check_finite(tensors, f"checkpoint {self.path / SHARDED_DIR}")
            except NonFiniteError as err:
                raise CheckpointError(str(err).replace("; not writing it", "; refusing to load it")) from None
            return tensors
        try:
            tensors = load_file(self.path / name)
        except FileNotFoundError:
            raise CheckpointError(f"checkpoint {self.path / name}: missing") from None
        except Exception as err:  # safetensors raises its own error type on a damaged file
            if type(err).__name__ != "SafetensorError":
                raise
            raise CheckpointError(f"checkpoint {self.path / name}: unreadable safetensors ({err})") from None
        if name in (MODEL_FILE, OPTIM_FILE):
            try:
                check_finite(tensors, f"checkpoint {self.path / name}")
            except NonFiniteError as err:
                raise CheckpointError(str(err).replace("; not writing it", "; refusing to load it")) from None
        return tensors

    def model_tensors(self) -> dict[str, torch.Tensor]:
        return self._load(MODEL_FILE)

    def optimizer_tensors(self) -> dict[str, torch.Tensor]:
        return self._load(OPTIM_FILE)

    def rng_tensors(self) -> dict[str, torch.Tensor]:
        return self._load(RNG_FILE)


def open_checkpoint(path: str | Path, *, checksums: bool = True) -> Checkpoint:
    """Verify a checkpoint (`verify_checkpoint`) and read its state.json and spec.yaml.

    CheckpointError names the file and the problem (missing directory or file, damage, bad values).
    """
    path = Path(path)
    state = verify_checkpoint(path, checksums=checksums)
    try:
        spec = read_spec(path / SPEC_FILE)
    except (ValueError, UnicodeDecodeError) as err:
        raise CheckpointError(f"checkpoint {path / SPEC_FILE}: {err}".replace("\n", "; ")) from None
    except Exception as err:  # yaml.YAMLError: a damaged file
        if not type(err).__module__.startswith("yaml"):
            raise
        raise CheckpointError(f"checkpoint {path / SPEC_FILE}: not valid YAML ({type(err).__name__})") from None
    check_state_fits_spec(path, state, spec)
    return Checkpoint(path=path, spec=spec, state=state.model_dump(mode="json"))


def check_same_model(stored: ModelConfig, wanted: ModelConfig, where: str | Path) -> None:
    """ConfigError naming the model fields that differ between a checkpoint and a spec.

    `preset` is informational and ignored.
    """
    a, b = stored.model_dump(mode="json"), wanted.model_dump(mode="json")
    a.pop("preset", None), b.pop("preset", None)
    keys = differing_keys(a, b)
    if keys:
        detail = describe_differences(a, b, keys, "checkpoint", "spec")
        raise ConfigError(f"checkpoint {where} holds another model: model fields differ: "
                         f"{', '.join('model.' + k for k in keys)} ({detail})")


def load_model_weights(model: torch.nn.Module, tensors: dict[str, torch.Tensor], where: str | Path) -> None:
    """Copy saved weights into `model` exactly; missing/unexpected names or shapes are a ConfigError."""
    own = model.state_dict()
    missing, unexpected = sorted(own.keys() - tensors.keys()), sorted(tensors.keys() - own.keys())
    if missing or unexpected:
        raise ConfigError(f"checkpoint {where} does not match the model: missing {missing[:5]}, unexpected {unexpected[:5]}")
    bad = [k for k, v in tensors.items() if tuple(v.shape) != tuple(own[k].shape)]
    if bad:
        raise ConfigError(f"checkpoint {where} does not match the model: shapes differ for {bad[:5]}")
    model.load_state_dict(tensors)
