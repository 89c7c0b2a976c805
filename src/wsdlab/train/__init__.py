"""wsdlab.train: the training engine (one loop for every stage), checkpoints, branches, run store."""

from wsdlab.train.branch import branch_from_checkpoint, branch_spec
from wsdlab.train.config import BranchConfig, OptimConfig, RunSpec, TrainConfig
from wsdlab.train.evaluate import evaluate, evaluate_metrics
from wsdlab.train.loop import train
from wsdlab.train.metrics import JsonlSink, MetricsSink, TensorBoardSink, WandbSink
from wsdlab.train.presets import RUN_PRESETS, run_preset
from wsdlab.train.runstore import RunDir, load_checkpoint, load_checkpoint_model, run_of

__all__ = [
    "RUN_PRESETS",
    "BranchConfig",
    "JsonlSink",
    "MetricsSink",
    "OptimConfig",
    "RunDir",
    "RunSpec",
    "TensorBoardSink",
    "TrainConfig",
    "WandbSink",
    "branch_from_checkpoint",
    "branch_spec",
    "evaluate",
    "evaluate_metrics",
    "load_checkpoint",
    "load_checkpoint_model",
    "run_of",
    "run_preset",
    "train",
]
