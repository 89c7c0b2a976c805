"""RunDir and load_checkpoint read back what the loop wrote; evaluate reproduces the logged val loss."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from wsdlab.data import load_data
from wsdlab.train import RunDir, RunSpec, evaluate, load_checkpoint, run_preset, train
from wsdlab.train.runstore import load_checkpoint_model


@pytest.fixture(scope="module")
def run(tmp_path_factory: pytest.TempPathFactory) -> RunDir:
    data = run_preset("micro").model_dump()
    data["train"].update(steps=6, checkpoint_every=3, eval_every=3, snapshot_every=None, snapshot_steps=[2, 3],
                         progress=False)
    return train(RunSpec.model_validate(data), tmp_path_factory.mktemp("run"))


def test_run_dir_lists_what_was_written(run: RunDir) -> None:
    again = RunDir(run.path)
    assert again.spec == run.spec and again.is_complete
    assert again.checkpoint_steps() == [0, 3, 6] and again.latest_checkpoint() == run.path / "checkpoints" / "6"
    assert again.snapshot_steps() == [2, 3]
    assert len(again.metrics()) == 6 and [r["step"] for r in again.eval_rows()] == [0, 3, 6]
    assert again.batch_indices().shape == (6, run.spec.train.batch_size)
    with pytest.raises(FileNotFoundError, match="no checkpoint at step 4"):
        again.checkpoint(4)
    with pytest.raises(FileNotFoundError, match="not a run directory"):
        RunDir(run.path / "checkpoints")


def test_models_and_snapshots_load(run: RunDir) -> None:
    final = run.load_model()
    assert not final.training
    same = run.load_model(6)
    assert all(torch.equal(a, b) for a, b in zip(final.state_dict().values(), same.state_dict().values()))
    snap = run.load_snapshot(3)
    at3 = run.load_model(3).state_dict()
    assert snap.keys() == at3.keys() and all(torch.equal(snap[k], at3[k]) for k in snap)
    model, spec, state = load_checkpoint(run.checkpoint(3))
    assert spec == run.spec and state["step"] == 3 and state["data_cursor"] == 3 * spec.train.batch_size
    assert isinstance(load_checkpoint_model(run.checkpoint(0)), torch.nn.Module)
    with pytest.raises(FileNotFoundError):
        run.load_snapshot(5)


def test_evaluate_reproduces_the_logged_val_loss(run: RunDir) -> None:
    """Fixed validation batches: evaluating a checkpoint again gives the row written during training."""
    spec = run.spec
    data = load_data(spec.data, progress=False)
    size = spec.train.eval_batch_size or spec.train.batch_size
    for row in run.eval_rows():
        value = evaluate(run.load_model(row["step"]), data, spec.train.eval_batches, size, "cpu")
        assert value == pytest.approx(row["val_loss"], rel=1e-6)


def test_an_empty_directory_has_no_run(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        RunDir(tmp_path)
