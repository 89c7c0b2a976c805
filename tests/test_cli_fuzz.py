"""Bad input to every command: exit != 0, exactly one `error:` line naming the problem, no traceback,
and nothing written (no --out / study folder, no new cache entry).

Most cases run in-process with typer's CliRunner and fail during validation, before any training.
Disk full and permission denied are simulated by monkeypatching the atomic writers (tests run as
root, so chmod would not stop us). A few cases run `python -m wsdlab` in a subprocess to see what a
user sees: the traceback with --debug / WSDLAB_DEBUG=1, none without.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import yaml
from safetensors.torch import save_file
from typer.testing import CliRunner

from wsdlab.cli import app
from wsdlab.common.errors import ConfigError
from wsdlab.models import build_model
from wsdlab.train import run_preset
from wsdlab.train.checkpoint import write_stub_checkpoint
from wsdlab.train.spec_io import dump_spec

runner = CliRunner()



@dataclass
class Case:
    args: list[str]
    needle: str  # text the error must contain: the option, field or file at fault
    out: Path | None = None  # must not exist afterwards
    marks: list = field(default_factory=list)


def error_lines(output: str) -> list[str]:
    return [line for line in output.splitlines() if line.startswith("error:")]


def assert_one_error(result, needle: str) -> None:
    out = result.output
    assert result.exit_code not in (0, None), out
    assert isinstance(result.exception, (SystemExit, type(None))), repr(result.exception)
    assert "Traceback" not in out and "internal error" not in out, out
    errors = error_lines(out)
    assert len(errors) == 1, out
    assert needle in out, (needle, out)


@pytest.fixture
def cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An empty cache directory for this test (WSDLAB_CACHE is what default_cache_dir reads)."""
    path = tmp_path / "cache"
    path.mkdir()
    monkeypatch.setenv("WSDLAB_CACHE", str(path))
    return path


def write_files(root: Path) -> dict[str, Path]:
    """Broken config/spec/study files, and checkpoint directories with damaged weights."""
    root.mkdir(parents=True, exist_ok=True)
    files = {
        "syntax": b"train:\n  steps: [1, 2\nmodel: {}\n",
        "latin1": "name: caf\xe9\n".encode("latin-1"),
        "binary": b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR",
        "list": b"- 1\n- 2\n",
        "scalar": b"just a string\n",
        "unknown": yaml.safe_dump({"bogus_key": 1}).encode(),
        "wrongtype": yaml.safe_dump({"train": {"steps": "many"}}).encode(),
        "negative": yaml.safe_dump({"train": {"steps": -4}}).encode(),
        "study_unknown": yaml.safe_dump({"name": "s", "bogus_key": 1}).encode(),
        "study_wrongtype": yaml.safe_dump({"name": "s", "cooldown": {"steps": "ten"}}).encode(),
        "data_wrongtype": yaml.safe_dump({"seq_len": "long"}).encode(),
        "data_unknown": yaml.safe_dump({"colour": "red"}).encode(),
    }
    paths = {}
    for name, data in files.items():
        paths[name] = root / f"{name}.yaml"
        paths[name].write_bytes(data)
    paths["dir"] = root / "adir.yaml"
    paths["dir"].mkdir()
    paths["file"] = root / "plain-file"
    paths["file"].write_text("not a directory\n")

    spec = run_preset("tiny")
    spec.train.steps = 4
    spec.schedule.warmup_steps = 0
    model_bytes = (root / "model-full.safetensors")
    save_file({k: v.contiguous() for k, v in build_model(spec.model).state_dict().items()}, model_bytes)
    for name, data in (("truncated", model_bytes.read_bytes()[:200]), ("garbage", b"\x00garbage" * 10)):
        ckpt = root / f"run-{name}" / "checkpoints" / "2"
        ckpt.mkdir(parents=True)
        (ckpt / "model.safetensors").write_bytes(data)
        (ckpt / "optimizer.safetensors").write_bytes(data)
        (ckpt / "rng.safetensors").write_bytes(data)
        (ckpt / "state.json").write_text(json.dumps({"format": 1, "step": 2, "start_step": 0, "data_cursor": 2,
                                                     "tokens": 0}))
        (ckpt / "spec.yaml").write_text(dump_spec(spec))
        (ckpt.parent.parent / "spec.yaml").write_text(dump_spec(spec))
        paths[f"ckpt_{name}"] = ckpt
    paths["ckpt_ok"] = write_stub_checkpoint(root / "run-ok" / "checkpoints" / "4", spec)
    (root / "run-ok" / "spec.yaml").write_text(dump_spec(spec))
    return paths


def cases(f: dict[str, Path], tmp: Path) -> list[Case]:
    out = tmp / "out"
    T = ["train", "--preset", "tiny", "--steps", "100"]  # valid on its own (the tiny preset warms up 40 steps)
    TO = [*T, "--out", str(out)]
    cfg = lambda name: ["train", "--config", str(f[name]), "--out", str(out)]  # noqa: E731
    cd = lambda *a: ["cooldown", "--from", str(f["ckpt_ok"]), "--shape", "sqrt", "--steps", "2",  # noqa: E731
                     "--out", str(out), *a]
    study = lambda name: ["study", "run", str(f[name]), "--out", str(out)]  # noqa: E731
    sharp = ["analyze", "sharpness", "--out", str(out)]
    ck = str(f["ckpt_ok"])  # a valid (tensor-less) checkpoint: the case's own bad argument is what fails
    return [
        # ---- train: option values
        Case([*T, "--steps", "abc", "--out", str(out)], "--steps", out),
        Case([*TO, "--steps", "-5"], "train.steps", out),
        Case([*TO, "--steps", "0"], "train.steps", out),
        Case([*TO, "--checkpoint-every", "-1"], "checkpoint_every", out),
        Case([*TO, "--seed", "1.5"], "--seed", out),
        Case([*TO, "--set", "optim.lr=nan"], "optim.lr", out),
        Case([*TO, "--set", "optim.lr=inf"], "optim.lr", out),
        Case([*TO, "--set", "optim.lr=-1"], "optim.lr", out),
        Case([*TO, "--set", "optim.lr=fast"], "optim.lr", out),
        Case([*TO, "--set", "train.batch_size=-3"], "train.batch_size", out),
        Case([*TO, "--set", "schedule.kind=wsd", "--set", "schedule.shape=nope"], "nope", out),
        Case([*TO, "--set", "schedule.kind=nope"], "schedule.kind", out),
        Case([*TO, "--set", "schedule.kind=wsd", "--set", "schedule.cooldown_fraction=nan"], "cooldown_fraction", out),
        Case([*TO, "--set", "model.arch=nope"], "model.arch", out),
        Case([*TO, "--set", "nokey"], "--set", out),
        Case([*TO, "--set", "=1"], "--set", out),
        Case([*TO, "--set", "train.steps.x=1"], "train.steps", out),
        Case([*TO, "--set", "data.source=text", "--set", f"data.path={tmp / 'missing.txt'}"], "data.path", out),
        Case([*TO, "--set", "data.source=jsonl", "--set", f"data.path={f['dir']}"], "data.path", out),
        Case(["train", "--preset", "", "--out", str(out)], "--preset", out),
        Case(["train", "--preset", "nope", "--out", str(out)], "nope", out),
        Case(["train", "--out", ""], "--out", None),
        Case([*T, "--wandb", "", "--out", str(out)], "--wandb", out),
        Case(["train", "--preset", "tiny", "--config", str(f["unknown"]), "--out", str(out)], "--config", out),
        Case([*T], "--out", None),
        Case([*TO, "--bogus-flag"], "--bogus-flag", out),
        # ---- train: config files
        Case(cfg("syntax"), "line 3, column 6", out),
        Case(cfg("latin1"), "UTF-8", out),
        Case(cfg("binary"), "binary", out),
        Case(cfg("list"), "got a list", out),
        Case(cfg("scalar"), "got a string", out),
        Case(cfg("unknown"), "bogus_key", out),
        Case(cfg("wrongtype"), "train.steps", out),
        Case(cfg("negative"), "train.steps", out),
        Case(cfg("dir"), "is a directory", out),
        Case(["train", "--config", str(tmp / "missing.yaml"), "--out", str(out)], "missing.yaml", out),
        Case(["train", "--config", "", "--out", str(out)], "--config", out),
        Case([*T, "--out", str(f["file"])], "not a directory", None),
        # ---- cooldown
        Case(cd("--steps", "0"), "steps", out),
        Case(cd("--steps", "-2"), "steps", out),
        Case(["cooldown", "--from", ck, "--shape", "nope", "--steps", "2", "--out", str(out)], "nope", out),
        Case(["cooldown", "--from", ck, "--shape", "", "--steps", "2", "--out", str(out)], "--shape", out),
        Case(cd("--alpha", "nan"), "alpha", out),
        Case(cd("--alpha", "2"), "alpha", out),
        Case(cd("--batch-scale", "-1"), "batch_scale", out),
        Case(cd("--beta-power", "0"), "beta_power", out),
        Case(cd("--match-half-life"), "match_half_life", out),
        Case(cd("--shape-param", "5"), "shape_param", out),
        Case(cd("--set", "model.n_layers=3"), "model.n_layers", out),
        Case(["cooldown", "--from", str(tmp / "nock"), "--shape", "sqrt", "--steps", "2", "--out", str(out)],
             "nock", out),
        Case(["cooldown", "--from", str(f["file"]), "--shape", "sqrt", "--steps", "2", "--out", str(out)],
             "plain-file", out),
        Case(["cooldown", "--from", "", "--shape", "sqrt", "--steps", "2", "--out", str(out)], "--from", out),
        Case(["cooldown", "--from", str(f["ckpt_truncated"]), "--shape", "sqrt", "--steps", "2", "--out", str(out)],
             "model.safetensors", out),
        Case(["cooldown", "--from", str(f["ckpt_garbage"]), "--shape", "sqrt", "--steps", "2", "--out", str(out)],
             "model.safetensors", out),
        # ---- study run / status / report
        Case(study("syntax"), "line 3, column 6", out),
        Case(study("latin1"), "UTF-8", out),
        Case(study("binary"), "binary", out),
        Case(study("list"), "got a list", out),
        Case(study("study_unknown"), "bogus_key", out),
        Case(study("study_wrongtype"), "cooldown.steps", out),
        Case(study("dir"), "is a directory", out),
        Case(["study", "run", str(tmp / "missing.yaml"), "--out", str(out)], "missing.yaml", out),
        Case(["study", "run", "", "--out", str(out)], "NAME|FILE", out),
        Case(["study", "run", "--quick", "--out", ""], "--out", None),
        Case(["study", "run", "--quick", str(f["syntax"]), "--out", str(out)], "--quick", out),
        Case(["study", "run", "--quick", "--workers", "0", "--out", str(out)], "--workers", out),
        Case(["study", "run", "--quick", "--executor", "nope", "--out", str(out)], "nope", out),
        Case(["study", "status", str(tmp / "nostudy")], "nostudy", None),
        Case(["study", "report", str(f["file"])], "plain-file", None),
        # ---- analyze
        Case([*sharp, "--checkpoint", str(tmp / "nock")], "nock", out),
        Case([*sharp, "--checkpoint", ck, "--device", "tpu"], "--device", out),
        Case([*sharp, "--checkpoint", ck, "--samples", "0"], "--samples", out),
        Case([*sharp, "--checkpoint", ck, "--samples", "nan"], "--samples", out),
        Case([*sharp, "--checkpoint", ck, "--second-data", str(f["syntax"])], "line 3, column 6", out),
        Case([*sharp, "--checkpoint", ck, "--second-data", str(f["data_unknown"])], "colour", out),
        Case([*sharp, "--checkpoint", ck, "--second-data", str(f["binary"])], "binary", out),
        Case([*sharp, "--checkpoint", ck, str(tmp / "run")], "either", out),
        Case([*sharp], "either", out),
        Case(["analyze", "sharpness", "--checkpoint", ck, "--out", str(f["file"])], "not a directory", None),
        Case([*sharp, "--checkpoint", str(f["ckpt_truncated"])], "model.safetensors", out),
        Case([*sharp, "--checkpoint", str(f["ckpt_garbage"])], "model.safetensors", out),
        Case(["analyze", "interpolate", str(tmp / "norun"), "--from", "0", "--out", str(out)], "norun", out),
        Case(["analyze", "interpolate", str(tmp / "norun"), "--from", "0", "--alphas", "x", "--out", str(out)],
             "--alphas", out),
        Case(["analyze", "interpolate", str(tmp / "norun"), "--from", "0", "--alphas", "0:1:0", "--out", str(out)],
             "--alphas", out),
        Case(["analyze", "interpolate", "", "--from", "0", "--out", str(out)], "RUN", out),
        Case(["analyze", "landscape", str(tmp / "norun"), "--points", "a,b", "--out", str(out)], "--points", out),
        Case(["analyze", "probes", str(tmp / "norun"), "--steps", "1,x", "--out", str(out)], "--steps", out),
        Case(["analyze", "trajectory", str(tmp / "norun"), "--out", str(out)], "norun", out),
        # ---- schedule
        Case(["schedule", "values", "--total-steps", "0"], "--total-steps", None),
        Case(["schedule", "values", "--total-steps", "inf"], "--total-steps", None),
        Case(["schedule", "values", "--total-steps", "10", "--shape", "nope"], "nope", None),
        Case(["schedule", "values", "--total-steps", "10", "--shape", ""], "--shape", None),
        Case(["schedule", "values", "--total-steps", "10", "--cooldown-fraction", "nan"], "cooldown_fraction", None),
        Case(["schedule", "values", "--total-steps", "10", "--cooldown-fraction", "-0.5"], "cooldown_fraction", None),
        Case(["schedule", "values", "--total-steps", "10", "--alpha", "inf"], "alpha", None),
        Case(["schedule", "values", "--total-steps", "10", "--warmup-steps", "20"], "warmup", None),
        Case(["schedule", "values", "--total-steps", "10", "--shape-expr", "__import__('os')"], "shape_expr", None),
        Case(["schedule", "values", "--total-steps", "10", "--alpha-mid", "0.5"], "--mid-steps", None),
        Case(["schedule", "plot", "--out", str(tmp / "plot.txt")], ".png", tmp / "plot.txt"),
        Case(["schedule", "plot", "--out", ""], "--out", None),
        Case(["schedule", "plot", "--out", str(tmp / "p.png"), "--shapes", "linear:x"], "--shapes", tmp / "p.png"),
        Case(["schedule", "plot", "--out", str(tmp / "p.png"), "--shapes", "nope"], "nope", tmp / "p.png"),
        Case(["schedule", "plot", "--out", str(tmp / "p.png"), "--shape-expr", "open('f')"], "shape_expr",
             tmp / "p.png"),
        # ---- data
        Case(["data", "prepare", "--config", str(f["syntax"])], "line 3, column 6", None),
        Case(["data", "prepare", "--config", str(f["latin1"])], "UTF-8", None),
        Case(["data", "prepare", "--config", str(f["list"])], "got a list", None),
        Case(["data", "prepare", "--config", str(f["data_wrongtype"])], "seq_len", None),
        Case(["data", "prepare", "--config", str(f["data_unknown"])], "colour", None),
        Case(["data", "prepare", "--config", ""], "--config", None),
        Case(["data", "prepare", "--set", "source=text", "--set", f"path={tmp / 'missing.txt'}"], "data.path", None),
        Case(["data", "prepare", "--set", "vocab_size=-1"], "vocab_size", None),
        Case(["data", "prepare", "--set", "seq_len=nan"], "seq_len", None),
        Case(["data", "prepare", "--set", "nokey"], "--set", None),
        Case(["data", "prepare", "--set", "source=hf"], "hf_name", None),
        Case(["data", "show", "--config", str(f["binary"])], "binary", None),
    ]


def _all_cases() -> list:
    """(id, index) params; the case list itself needs tmp files, so it is built inside the test."""
    probe = cases({k: Path(k) for k in _FILE_KEYS}, Path("/tmp"))
    return [pytest.param(i, id=f"{i:03d}-{'-'.join(c.args[:2])}", marks=c.marks) for i, c in enumerate(probe)]


_FILE_KEYS = ("syntax", "latin1", "binary", "list", "scalar", "unknown", "wrongtype", "negative", "study_unknown",
              "study_wrongtype", "data_wrongtype", "data_unknown", "dir", "file", "ckpt_truncated", "ckpt_garbage",
              "ckpt_ok")


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    return write_files(tmp_path_factory.mktemp("fuzz-files"))


@pytest.mark.parametrize("index", _all_cases())
def test_bad_input(index: int, files: dict[str, Path], tmp_path: Path, cache: Path) -> None:
    case = cases(files, tmp_path)[index]
    result = runner.invoke(app, case.args)
    assert_one_error(result, case.needle)
    if case.out is not None:
        assert not case.out.exists(), (case.args, sorted(case.out.rglob("*")) if case.out.is_dir() else case.out)
    assert sorted(cache.iterdir()) == [], "a failed command left a cache entry"
    assert files["file"].read_text() == "not a directory\n"


def test_case_count() -> None:
    """The fuzz list stays large: at least 100 distinct bad inputs."""
    assert len(_all_cases()) >= 100


# ---------------------------------------------------------------------------- the environment fails


def test_hub_dataset_unreachable_offline(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, cache: Path) -> None:
    """An HF hub dataset without network: DataUnavailableError naming hf_name, no cache entry, no --out."""
    datasets = pytest.importorskip("datasets")

    def offline(*args, **kwargs):
        raise ConnectionError("Couldn't reach 'someone/corpus' on the Hub (OfflineModeIsEnabled)")

    monkeypatch.setattr(datasets, "load_dataset", offline)
    out = tmp_path / "out"
    result = runner.invoke(app, ["train", "--preset", "tiny", "--steps", "100", "--out", str(out),
                                 "--set", "data.source=hf", "--set", "data.hf_name=someone/corpus"])
    assert_one_error(result, "data.hf_name")
    assert "someone/corpus" in error_lines(result.output)[0]
    assert not out.exists() and sorted(cache.iterdir()) == []
    result = runner.invoke(app, ["data", "prepare", "--set", "source=hf", "--set", "hf_name=someone/corpus"])
    assert_one_error(result, "offline" if "offline" in result.output else "network")
    assert sorted(cache.iterdir()) == []


@pytest.mark.parametrize(("code", "reason"), [(errno.ENOSPC, "No space left on device"),
                                              (errno.EACCES, "Permission denied"),
                                              (errno.EROFS, "Read-only file system")])
def test_disk_errors_name_the_file(code: int, reason: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    import wsdlab.common.io as io

    def fail(path, data) -> None:
        raise OSError(code, os.strerror(code), str(path))

    monkeypatch.setattr(io, "atomic_write_bytes", fail)
    target = tmp_path / "shapes.png"
    result = runner.invoke(app, ["schedule", "plot", "--out", str(target), "--shapes", "linear"])
    assert_one_error(result, reason)
    assert error_lines(result.output) == [f"error: {target}: {reason}"]
    assert not target.exists()


def test_disk_full_while_writing_a_study(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """ENOSPC from atomic_write_text while the study folder is set up: one line naming the file."""
    import wsdlab.study.runner as runner_mod

    def full(path, text) -> None:
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))

    monkeypatch.setattr(runner_mod, "atomic_write_text", full)
    monkeypatch.setattr(runner_mod, "study_num_train", lambda study, progress=False: 10_000)
    out = tmp_path / "study"
    result = runner.invoke(app, ["study", "run", "--quick", "--out", str(out)])
    assert_one_error(result, "No space left on device")
    assert error_lines(result.output)[0].startswith(f"error: {out / 'study.yaml'}: ")


def test_a_file_where_a_directory_is_needed(tmp_path: Path) -> None:
    blocker = tmp_path / "blocker"
    blocker.write_text("x")
    result = runner.invoke(app, ["schedule", "plot", "--out", str(blocker / "sub" / "a.png"), "--shapes", "linear"])
    assert_one_error(result, str(blocker))
    assert blocker.read_text() == "x"


# ---------------------------------------------------------------------------- how errors are printed


def test_messages_are_printed_literally(monkeypatch: pytest.MonkeyPatch) -> None:
    """Rich markup must not eat bracketed text such as an extra's name."""
    import wsdlab.schedules as schedules

    def needs_extra(*args, **kwargs):
        raise ConfigError("tensorboard is not installed; install it with: pip install 'wsdlab[tensorboard]' [bold]x[/]")

    monkeypatch.setattr(schedules, "schedule_values", needs_extra)
    result = runner.invoke(app, ["schedule", "values", "--total-steps", "10"])
    assert_one_error(result, "pip install 'wsdlab[tensorboard]' [bold]x[/]")


def test_a_multi_field_error_has_one_error_line(tmp_path: Path) -> None:
    cfg = tmp_path / "bad.yaml"
    cfg.write_text(yaml.safe_dump({"train": {"steps": "many", "batch_size": "big"}}))
    result = runner.invoke(app, ["train", "--config", str(cfg), "--out", str(tmp_path / "o")])
    assert_one_error(result, "train.steps")
    assert "train.batch_size" in result.output


def test_an_injected_bug_is_not_a_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    """A KeyError from deep code is a bug: 'internal error' with exit 1, never `error:` with exit 2."""
    import wsdlab.schedules as schedules

    def bug(*args, **kwargs):
        raise KeyError("cooldown_fraction")

    monkeypatch.setattr(schedules, "schedule_values", bug)
    result = runner.invoke(app, ["schedule", "values", "--total-steps", "10"])
    assert result.exit_code == 1
    assert error_lines(result.output) == []
    assert "internal error: KeyError" in result.output and "--debug" in result.output
    assert "Traceback" not in result.output


def test_debug_reraises_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    import wsdlab.schedules as schedules

    def bug(*args, **kwargs):
        raise KeyError("boom")

    monkeypatch.setattr(schedules, "schedule_values", bug)
    result = runner.invoke(app, ["--debug", "schedule", "values", "--total-steps", "10"])
    assert isinstance(result.exception, KeyError)
    result = runner.invoke(app, ["schedule", "values", "--total-steps", "10"])  # the flag does not stick
    assert result.exit_code == 1 and isinstance(result.exception, SystemExit)


def _wsdlab(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "wsdlab", *args], capture_output=True, text=True, timeout=120,
                          env={**os.environ, "OMP_NUM_THREADS": "1", **(env or {})})


def test_subprocess_error_line_and_debug_traceback(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("train: [1\n")
    args = ["train", "--config", str(bad), "--out", str(tmp_path / "o")]
    plain = _wsdlab(*args, env={"WSDLAB_DEBUG": ""})
    assert plain.returncode == 2 and plain.stdout == ""
    assert plain.stderr.splitlines() == [f"error: {bad}: YAML syntax error at line 2, column 1: "
                                         "expected ',' or ']', but got '<stream end>'"]
    debug = _wsdlab("--debug", *args)
    assert debug.returncode != 0 and "Traceback" in debug.stderr and "ConfigError" in debug.stderr
    env_debug = _wsdlab(*args, env={"WSDLAB_DEBUG": "1"})
    assert env_debug.returncode != 0 and "Traceback" in env_debug.stderr
    assert not (tmp_path / "o").exists()
