"""`wsdlab analyze ...` on a small WSD run of the `micro` LM: files written, --json keys, errors exit 2.

The run directory is written here in the run-store layout (spec.yaml, checkpoints, snapshots) from a
short AdamW training of `micro` on a synthetic pattern; the data bundle is a small in-memory stand-in
for `wsdlab.data.load_data` (patched into each geometry unit's module), so the test does not prepare a corpus.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pytest
import torch
import yaml
from safetensors.torch import load_file, save_file
from typer.testing import CliRunner

from wsdlab.analysis import read_table, unit_names
from wsdlab.analysis.geometry import common, interpolate, landscape, probes, sharpness, trajectory
from wsdlab.analysis.geometry.common import eval_batches, run_model, weights_at
from wsdlab.analysis.geometry.landscape import landscape_table
from wsdlab.analysis.geometry.trajectory import trajectory_run_table
from wsdlab.analysis.evalset import mean_loss
from wsdlab.analysis.geometry_config import EvalSetConfig
from wsdlab.cli import app
from wsdlab.data.config import DataConfig
from wsdlab.models import batch_loss, build_model, model_config
from wsdlab.schedules import ScheduleConfig, build_schedule
from wsdlab.train import RunSpec, TrainConfig
from wsdlab.train.checkpoint import save_checkpoint
from wsdlab.train.spec_io import write_spec

runner = CliRunner()
STEPS, COOLDOWN = 30, 10


class PatternData:
    """DataBundle stand-in: sequences where each token is the previous one plus 1 or 2 (mod 32)."""

    vocab_size, num_classes, tokens_per_item = 32, None, 16

    def __init__(self, seed: int, num_train: int = 64, num_val: int = 32) -> None:
        g = torch.Generator().manual_seed(seed)
        n = num_train + num_val
        start = torch.randint(0, 32, (n, 1), generator=g)
        self.items = torch.cat([start, start + torch.randint(1, 3, (n, 16), generator=g).cumsum(1)], 1) % 32
        self.num_train, self.num_val = num_train, num_val

    def train_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.items[torch.as_tensor(indices)]

    def val_batch(self, indices: np.ndarray) -> torch.Tensor:
        return self.items[self.num_train + torch.as_tensor(indices)]


def _spec() -> RunSpec:
    data = DataConfig(tokenizer="char", vocab_size=32, seq_len=16)
    return RunSpec(name="geo", model=model_config("micro", vocab_size=32, seq_len=16), data=data,
                   schedule=ScheduleConfig(kind="wsd", warmup_steps=2, cooldown_steps=COOLDOWN, shape="linear"),
                   train=TrainConfig(steps=STEPS, batch_size=8, snapshot_every=2, checkpoint_every=10))


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("geo-run")
    spec = _spec()
    write_spec(spec, root / "spec.yaml")
    torch.manual_seed(0)
    model = build_model(spec.model)
    schedule = build_schedule(spec.schedule, STEPS)
    opt = torch.optim.AdamW(model.parameters(), lr=2e-2, weight_decay=0.0)
    data = PatternData(0)
    for step in range(STEPS + 1):
        state = {k: v.detach().clone() for k, v in model.state_dict().items()}
        if step % 2 == 0:
            save_file({k: v.contiguous() for k, v in state.items()}, str(_mk(root / "snapshots") / f"{step}.safetensors"))
        if step % 10 == 0:
            save_checkpoint(root / "checkpoints" / str(step), model_state=state, optim_state={}, rng_state={},
                            state={"step": step, "data_cursor": 8 * step, "tokens": 8 * step * 16}, spec=spec)
        if step == STEPS:
            break
        for group in opt.param_groups:
            group["lr"] = 2e-2 * schedule(step + 1)
        loss = batch_loss(model, data.train_batch(np.arange(8 * step, 8 * step + 8) % 64))
        opt.zero_grad()
        loss.backward()
        opt.step()
    (root / "COMPLETE").write_text("")
    return root


def _mk(path: Path) -> Path:
    path.mkdir(parents=True, exist_ok=True)
    return path


@pytest.fixture(autouse=True)
def _pattern_data(monkeypatch: pytest.MonkeyPatch) -> None:
    bundle = PatternData(0)
    for module in (common, sharpness, interpolate, landscape, trajectory, probes):
        monkeypatch.setattr(module, "run_data", lambda run, data=None: data or bundle)
    for module in (common, sharpness):
        monkeypatch.setattr(module, "load_other", lambda cfg: PatternData(cfg.split_seed + 100))


def invoke(*args: str) -> dict:
    result = runner.invoke(app, ["analyze", *args])
    assert result.exit_code == 0, result.output
    return json.loads(result.stdout)


def test_all_geometry_analyses_are_registered_commands():
    geometry = {"sharpness", "landscape", "interpolate", "trajectory", "probes"}
    assert geometry <= set(unit_names())
    listing = runner.invoke(app, ["analyze", "--help"]).output
    assert all(name in listing for name in geometry)


class _WithParams(torch.nn.Module):
    """`model` called with the parameters `params` (a name -> tensor dict) instead of its own."""

    def __init__(self, model: torch.nn.Module, params: dict[str, torch.Tensor]) -> None:
        super().__init__()
        self.inner, self.params = [model], params

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.func.functional_call(self.inner[0], self.params, (x,))


def hessian_by_autograd(model: torch.nn.Module, batches: list) -> torch.Tensor:
    """The full Hessian of the mean loss over equal-size `batches` by `torch.func.hessian` on the flattened
    parameters: the slow reference for the analyses' Hutchinson, Lanczos and exact methods (micro: ~1.1K)."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    named = [(n, p.shape) for n, p in model.named_parameters()]
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])

    def loss(x: torch.Tensor) -> torch.Tensor:
        parts = torch.split(x, [s.numel() for _, s in named])
        call = _WithParams(model, {n: t.reshape(s) for (n, s), t in zip(named, parts)})
        return sum(batch_loss(call, b) for b in batches) / len(batches)

    with sdpa_kernel(SDPBackend.MATH):  # the one SDPA kernel with a double backward
        return torch.func.hessian(loss)(flat).double()


def _model_at(run_dir: Path, step: int) -> torch.nn.Module:
    model = build_model(_spec().model)
    model.load_state_dict(_ckpt_state(run_dir, step))
    return model


@pytest.mark.filterwarnings("ignore:`torch.jit.script` is deprecated:DeprecationWarning")  # torch.func.hessian's jvp rules
def test_sharpness_of_a_checkpoint_json_keys_and_files(run_dir: Path, tmp_path: Path):
    ckpt = run_dir / "checkpoints" / "30"
    common = ["--checkpoint", str(ckpt), "--batches", "2", "--batch-size", "4", "--seed", "1", "--out", str(tmp_path)]
    trace = invoke("sharpness", *common, "--method", "trace", "--samples", "30", "--json")
    assert {"trace", "trace_stderr", "samples"} <= trace.keys() and trace["samples"] == 30
    # a checkpoint's data is its spec's, loaded by _load_other (here PatternData(split_seed 0 + 100)); --seed 1
    batches = eval_batches(PatternData(100), EvalSetConfig(batches=2, batch_size=4, seed=1))
    model = _model_at(run_dir, 30)
    assert trace["loss"] == pytest.approx(mean_loss(model, batch_loss, batches), rel=1e-6)
    hessian = hessian_by_autograd(model, batches)
    true_trace, eigenvalues = float(hessian.trace()), torch.linalg.eigvalsh((hessian + hessian.T) / 2).flip(0)
    assert trace["step"] == 30 and abs(trace["trace"] - true_trace) <= 3 * trace["trace_stderr"]
    assert (tmp_path / "sharpness.csv").is_file() and (tmp_path / "sharpness.png").stat().st_size > 1000
    eig = invoke("sharpness", *common, "--method", "top-eigen", "--top-k", "2", "--json")
    assert eig["eigenvalues"] == pytest.approx(eigenvalues[:2].tolist(), rel=0.01)
    exact = invoke("sharpness", *common, "--method", "exact", "--top-k", "2", "--json")
    assert exact["trace"] == pytest.approx(true_trace, rel=1e-5)
    assert exact["eigenvalues"] == pytest.approx(eigenvalues[:2].tolist(), rel=1e-5)


def test_sharpness_along_a_run_on_two_datasets(run_dir: Path, tmp_path: Path):
    second = tmp_path / "second.yaml"
    second.write_text(yaml.safe_dump({"tokenizer": "char", "vocab_size": 32, "seq_len": 16, "split_seed": 3}))
    out = invoke("sharpness", str(run_dir), "--steps", "10,30", "--samples", "8", "--batch-size", "4",
                 "--second-data", str(second), "--json")
    assert [(r["step"], r["dataset"]) for r in out["rows"]] == [(10, "val"), (10, "second"), (30, "val"), (30, "second")]
    rows = read_table(run_dir / "analysis" / "sharpness.csv")
    assert {"run", "step", "dataset", "method", "loss", "trace", "trace_stderr", "products"} <= rows[0].keys()
    evalset = EvalSetConfig(batch_size=4)  # the val set of the run's data, and the second data set (split_seed 3)
    for r in rows:
        data = PatternData(0) if r["dataset"] == "val" else PatternData(3 + 100)
        batches = eval_batches(data, evalset)
        assert r["loss"] == pytest.approx(mean_loss(_model_at(run_dir, r["step"]), batch_loss, batches), rel=1e-6)


def test_interpolate_endpoints_and_barrier(run_dir: Path, tmp_path: Path):
    out = invoke("interpolate", str(run_dir), "--from", "20", "--alphas", "0,0.5,1,1.5", "--batches", "1",
                 "--batch-size", "8", "--out", str(tmp_path), "--json")
    assert {"from_step", "to_step", "loss_from", "loss_to", "barrier"} <= out.keys()
    assert out["to_step"] == 30
    model = build_model(_spec().model)
    model.load_state_dict(_ckpt_state(run_dir, 20))
    batches = eval_batches(PatternData(0), EvalSetConfig(batches=1, batch_size=8))
    assert out["loss_from"] == pytest.approx(mean_loss(model, batch_loss, batches), rel=1e-5)
    rows = read_table(tmp_path / "interpolate.csv")
    assert [r["alpha"] for r in rows] == [0, 0.5, 1, 1.5]


def _ckpt_state(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "checkpoints" / str(step) / "model.safetensors")


def _snapshot(run_dir: Path, step: int) -> dict[str, torch.Tensor]:
    from safetensors.torch import load_file

    return load_file(run_dir / "snapshots" / f"{step}.safetensors")


def _norm(weights: dict[str, torch.Tensor]) -> float:
    return math.sqrt(sum(float((t.double() ** 2).sum()) for t in weights.values()))


def test_landscape_grid_and_json(run_dir: Path, tmp_path: Path):
    out = invoke("landscape", str(run_dir), "--points", "22", "--offset", "4", "--a", "0,1", "--b", "-1:1:3",
                 "--batches", "1", "--batch-size", "4", "--out", str(tmp_path), "--json")
    point = out["points"]["22"]
    w = {step: _snapshot(run_dir, step) for step in (20, 22, 26, 30)}
    e1 = {k: w[30][k] - w[20][k] for k in w[30]}  # final - pre-cooldown
    e2 = {k: w[26][k] - w[22][k] for k in w[22]}  # the next `offset` = 4 steps from the point
    assert point["e1_norm"] == pytest.approx(_norm(e1), rel=1e-6)
    assert point["e2_norm"] == pytest.approx(_norm(e2), rel=1e-6)
    rows = read_table(tmp_path / "landscape.csv")
    batches = eval_batches(PatternData(0), EvalSetConfig(batches=1, batch_size=4))
    model = build_model(_spec().model)
    for r in rows:  # the loss at point + a e1 + b e2, evaluated directly
        model.load_state_dict({k: w[22][k] + r["a"] * e1[k] + r["b"] * e2[k] for k in w[22]})
        assert r["loss"] == pytest.approx(mean_loss(model, batch_loss, batches), rel=1e-5), (r["a"], r["b"])
    at = {(r["a"], r["b"]): r["loss"] for r in rows}
    assert point["perplexity"] == pytest.approx(math.exp(at[(0.0, 0.0)]), rel=1e-9)
    best = min(at, key=at.get)
    assert (point["min_a"], point["min_b"]) == best and point["min_perplexity"] == pytest.approx(math.exp(at[best]))
    assert len(rows) == 6 and {r["pre_step"] for r in rows} == {STEPS - COOLDOWN}
    assert (tmp_path / "landscape.png").is_file()


def test_trajectory_json(run_dir: Path, tmp_path: Path):
    out = invoke("trajectory", str(run_dir), "--batches", "1", "--batch-size", "4", "--out", str(tmp_path), "--json")
    assert set(out["pc1_share"]) == {"S", "D", "S'", "D'"}
    assert set(out["hv_norm"]) == {"v_s", "v_d"} and all(v > 0 for v in out["hv_norm"].values())
    rows = read_table(tmp_path / "trajectory.csv")
    path = [r for r in rows if r["kind"] == "path"]
    assert [r["step"] for r in path] == list(range(0, STEPS + 1, 2))
    # each set's PC1 share recomputed from the snapshots: numpy's SVD of the centred, flattened iterates
    model = build_model(_spec().model)
    names = [name for name, _ in model.named_parameters()]
    for row in (r for r in rows if r["kind"] == "pca"):
        steps = [s for s in range(0, STEPS + 1, 2) if row["first_step"] <= s <= row["last_step"]]
        assert len(steps) == row["num_iterates"]
        flat = np.stack([np.concatenate([load_file(str(run_dir / "snapshots" / f"{s}.safetensors"))[n].double().numpy()
                                         .ravel() for n in names]) for s in steps])
        sigma = np.linalg.svd(flat - flat.mean(axis=0), compute_uv=False)
        assert row["pc1_share"] == pytest.approx(sigma[0] ** 2 / (sigma ** 2).sum(), rel=1e-4)
        assert out["pc1_share"][row["set"]] == pytest.approx(row["pc1_share"], rel=1e-9)


def test_probes_json(run_dir: Path, tmp_path: Path):
    out = invoke("probes", str(run_dir), "--probe-steps", "5", "--train-batches", "1", "--batches", "1",
                 "--batch-size", "4", "--out", str(tmp_path), "--json")
    assert set(out["perplexity"]) == {"20", "30"}  # checkpoints from the decay start (step 20) on
    assert all(len(v) == 2 for v in out["perplexity"].values())  # one per layer: the embeddings and the block
    assert out["rel_perplexity"]["20"] == [1.0, 1.0]
    start, end = out["perplexity"]["20"], out["perplexity"]["30"]
    assert out["rel_perplexity"]["30"] == pytest.approx([b / a for a, b in zip(start, end)], rel=1e-9)


def test_errors_exit_2_with_a_message(run_dir: Path, tmp_path: Path):
    missing = runner.invoke(app, ["analyze", "sharpness", str(tmp_path / "nope")])
    assert missing.exit_code == 2 and "not a run directory" in missing.output
    both = runner.invoke(app, ["analyze", "sharpness", str(run_dir), "--checkpoint", str(run_dir / "checkpoints" / "30")])
    assert both.exit_code == 2 and "either a RUN" in both.output
    bad = runner.invoke(app, ["analyze", "interpolate", str(run_dir), "--from", "20", "--alphas", "x"])
    assert bad.exit_code == 2 and "--alphas" in bad.output
    step = runner.invoke(app, ["analyze", "interpolate", str(run_dir), "--from", "7", "--out", str(tmp_path)])
    assert step.exit_code == 2 and "step 7" in step.output


def test_an_option_the_analysis_rejects_is_a_user_error(run_dir: Path, tmp_path: Path):
    """Options that pass their own validation but that the measurement rejects (more eigenvalues than solver
    iterations; an orthogonal plane whose e1 is zero because pre == final) print one `error:` line and exit 2, not
    'internal error ... a bug in wsdlab'."""
    ckpt = str(run_dir / "checkpoints" / "30")
    eigen = runner.invoke(app, ["analyze", "sharpness", "--checkpoint", ckpt, "--method", "top-eigen", "--top-k", "5",
                                "--max-iters", "3", "--batch-size", "4", "--out", str(tmp_path)])
    flat = runner.invoke(app, ["analyze", "landscape", str(run_dir), "--points", "22", "--pre", "30", "--final", "30",
                               "--offset", "2", "--orthogonal", "--a", "0,1", "--b", "0,1", "--out", str(tmp_path)])
    for result, message in ((eigen, "error: max_iters (3) must be >= k (5)"),
                            (flat, "error: e1 is zero: the pre-cooldown and final weights are equal")):
        assert result.exit_code == 2, result.output
        lines = result.output.strip().splitlines()
        assert lines == [message]


def test_landscape_after_weights_and_trajectory_parent(run_dir: Path, tmp_path: Path):
    import shutil

    from wsdlab.analysis.geometry_config import LandscapeConfig, TrajectoryConfig
    from wsdlab.train import RunDir

    run = RunDir(run_dir)
    model = run_model(run)
    cfg = LandscapeConfig(offset=4, a_values=[0.0, 1.0], b_values=[1.0], eval={"batches": 1, "batch_size": 4})
    own = landscape_table(run, cfg, points=[22])
    given = landscape_table(run, cfg, points=[22], after={22: weights_at(run, 26, model)})
    assert [r["loss"] for r in own] == pytest.approx([r["loss"] for r in given], rel=1e-6)
    # a cooldown branch holding only its own iterates (steps >= 20) + its parent = the whole run
    child = tmp_path / "child"
    (child / "snapshots").mkdir(parents=True)
    shutil.copy(run_dir / "spec.yaml", child / "spec.yaml")
    for step in range(20, STEPS + 1, 2):
        shutil.copy(run_dir / "snapshots" / f"{step}.safetensors", child / "snapshots")
    tcfg = TrajectoryConfig(hessian=False, eval={"batches": 1, "batch_size": 4})
    whole = trajectory_run_table(run, tcfg)
    joined = trajectory_run_table(child, tcfg, parent=run)
    strip = lambda rows: [{k: v for k, v in r.items() if k != "run"} for r in rows]  # noqa: E731
    assert len(joined) == len(whole)
    for a, b in zip(strip(joined), strip(whole)):
        assert a.keys() == b.keys()
        for k in a:
            if isinstance(a[k], float) and math.isnan(a[k]):
                assert math.isnan(b[k])
            elif isinstance(a[k], (int, float)) and not isinstance(a[k], bool):
                assert a[k] == pytest.approx(b[k], rel=1e-9), k
            else:
                assert a[k] == b[k], k


def test_real_micro_run_with_its_own_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """End to end on a run written by `wsdlab.train` (micro preset as a WSD run) and its prepared corpus."""
    from wsdlab.train import RunSpec, run_preset, train

    monkeypatch.undo()  # the real wsdlab.data.load_data
    data = run_preset("micro").model_dump()
    data["schedule"].update(kind="wsd", cooldown_steps=10, shape="linear")
    data["train"].update(steps=20, checkpoint_every=10, snapshot_every=5)
    run = train(RunSpec.model_validate(data), tmp_path / "run")
    eig = invoke("sharpness", "--checkpoint", str(run.checkpoint(20)), "--method", "top-eigen", "--batch-size", "4",
                 "--json")
    exact = invoke("sharpness", "--checkpoint", str(run.checkpoint(20)), "--method", "exact", "--batch-size", "4",
                   "--json")  # the dense Hessian's eigenvalues: the slow reference for Lanczos
    assert eig["step"] == 20 and eig["eigenvalues"] == pytest.approx(exact["eigenvalues"][:1], rel=0.01)
    line = invoke("interpolate", str(run.path), "--from", "10", "--alphas", "0,1", "--json")
    assert line["to_step"] == 20 and line["loss_to"] < line["loss_from"]
    assert (run.path / "analysis" / "interpolate.csv").is_file()

