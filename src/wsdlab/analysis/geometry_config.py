"""Options of the geometry analyses (sharpness, landscape, interpolate, trajectory, probes) as configs.

Configs are data: a study spec or the command line fills them, and `wsdlab.analysis.geometry` reads them.
`EvalSetConfig` pins the fixed evaluation set (the WSO paper's Table 23 knobs for the Hessian
trace: number of batches, sequences per batch, sequence length).
"""

from __future__ import annotations

from typing import Literal

from pydantic import Field, model_validator

from wsdlab.common.config import StrictModel

# Command-line metadata (`wsdlab analyze` generates its flags from these fields): a field's flag is
# --<name with dashes>, or `cli` (False: not a flag); a nested model's fields get the prefix
# `cli_prefix` (default "<field>-"), except `cli_shared` fields, whose one flag sets them all.
SHARED = {"cli_shared": True}
NO_PREFIX = {"cli_prefix": ""}


class EvalSetConfig(StrictModel):
    """A fixed, seeded set of evaluation batches from one split of a run's data."""

    split: Literal["val", "train"] = "val"
    batches: int = Field(1, gt=0, description="Number of batches.")
    batch_size: int = Field(8, gt=0, description="Sequences (or images) per batch.", json_schema_extra=SHARED)
    seq_len: int | None = Field(None, gt=0, description="Cut LM sequences to this many targets; None = the data's.",
                                json_schema_extra=SHARED)
    seed: int = Field(0, description="Which items are drawn (without replacement).", json_schema_extra=SHARED)


class SharpnessConfig(StrictModel):
    """Hessian trace and/or top eigenvalues of the loss over an evaluation set."""

    method: Literal["trace", "top-eigen", "exact"] = "trace"
    estimator: Literal["hutchinson", "hutchpp"] = Field("hutchinson", description="Trace estimator.")
    samples: int = Field(100, gt=0, description="Products of the trace estimate (the most, with a target).")
    target_rel_stderr: float | None = Field(
        None, gt=0.0, description="Hutchinson: stop once stderr <= this * |trace|; None = all samples.")
    min_samples: int = Field(10, gt=1, description="Hutchinson with a target: probes before the target may stop it.")
    top_k: int = Field(1, gt=0, description="Eigenvalues of method top-eigen.")
    solver: Literal["lanczos", "power"] = "lanczos"
    max_iters: int = Field(100, gt=0, description="Most products per eigenvalue solve.")
    tol: float = Field(1e-4, gt=0.0, description="Relative tolerance of the eigenvalue solvers.")
    seed: int = Field(0, description="Seed of the random probe vectors.")
    probe_chunk: int = Field(16, gt=0, description="Products computed in one batched backward.")
    cache_graph: bool = Field(True, description="Reuse the gradient's graph across products (uses memory).")
    eval: EvalSetConfig = Field(default_factory=EvalSetConfig, json_schema_extra=NO_PREFIX)

    @model_validator(mode="after")
    def _target_needs_hutchinson(self) -> SharpnessConfig:
        if self.target_rel_stderr is not None and self.estimator != "hutchinson":
            raise ValueError(f"target_rel_stderr needs estimator 'hutchinson' (got {self.estimator!r})")
        return self


class InterpolateConfig(StrictModel):
    """1-D loss along theta(a) = (1 - a) theta0 + a theta1."""

    alphas: list[float] = Field(default_factory=lambda: [round(-0.5 + 0.1 * i, 10) for i in range(21)],
                                description="Grid of a: 'a,b,c' or 'start:stop:num'.")
    chunk_size: int = Field(8, gt=0, description="Grid points per vmapped forward.")
    eval: EvalSetConfig = Field(default_factory=lambda: EvalSetConfig(batches=2, batch_size=16), json_schema_extra=NO_PREFIX)


class LandscapeConfig(StrictModel):
    """2-D loss around cooldown points: e1 = pre-cooldown -> final, e2 = `offset` optimizer steps on."""

    offset: int = Field(10, gt=0, description="e2 = weights `offset` steps after the point minus the point.")
    a_values: list[float] = Field(default_factory=lambda: [round(-0.5 + 0.125 * i, 10) for i in range(13)],
                                  description="Grid along e1.", json_schema_extra={"cli": "--a"})
    b_values: list[float] = Field(default_factory=lambda: [round(-2.0 + 0.5 * i, 10) for i in range(9)],
                                  description="Grid along e2.", json_schema_extra={"cli": "--b"})
    orthogonal: bool = Field(False, description="Make e2 orthogonal to e1.")
    chunk_size: int = Field(8, gt=0)
    eval: EvalSetConfig = Field(default_factory=lambda: EvalSetConfig(batches=2, batch_size=16), json_schema_extra=NO_PREFIX)


class TrajectoryConfig(StrictModel):
    """PCA of iterate sets, ||H v|| at the decay start, quasi-convexity and norms along the path."""

    fraction: float = Field(0.2, gt=0.0, le=1.0, description="S' / D': last / first fraction of stable / decay.")
    every: int = Field(1, gt=0, description="Use every k-th available iterate for the path rows.")
    one_step: bool = Field(False, description="cos(-grad, update) over one optimizer step: a weight step s+1 "
                           "right after a sampled step s is x_{i+1} of s (train.snapshot_steps), not a sample.")
    hessian: bool = Field(True, description="Compute ||H v_s|| and ||H v_d|| at the decay start.")
    probe_chunk: int = Field(16, gt=0)
    eval: EvalSetConfig = Field(default_factory=lambda: EvalSetConfig(split="train", batches=2, batch_size=16), json_schema_extra=NO_PREFIX)


class ProbeConfig(StrictModel):
    """Linear probes per layer, initialised from the LM head."""

    steps: int = Field(50, ge=0, description="AdamW steps per probe.", json_schema_extra={"cli": "--probe-steps"})
    lr: float = Field(1e-3, gt=0.0, description="Probe learning rate.")
    weight_decay: float = Field(0.0, ge=0.0)
    train: EvalSetConfig = Field(default_factory=lambda: EvalSetConfig(split="train", batches=4, batch_size=16))
    eval: EvalSetConfig = Field(default_factory=lambda: EvalSetConfig(batches=2, batch_size=16), json_schema_extra=NO_PREFIX)
