"""The run spec: everything that determines a run. A cooldown branch is a spec with `init_from` set."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import ConfigDict, Field, model_validator

from wsdlab.common.config import StrictModel, partial_model
from wsdlab.data.config import DataConfig
from wsdlab.models.config import LlamaConfig, LMConfig, ModelConfig
from wsdlab.schedules.config import ScheduleConfig

MAX_SEED = 2**64 - 1  # torch.manual_seed takes at most 64 bits
MAX_BATCH_ITEMS = 2**24  # sequences (or images) in one global / micro / eval batch
MAX_BATCH_TOKENS = 2**36
FINITE = ConfigDict(allow_inf_nan=False)  # NaN / inf floats are rejected with the field's name


class OptimConfig(StrictModel):
    """AdamW with decoupled weight decay (defaults: the papers' settings). Every number must be finite."""

    model_config = FINITE

    lr: float = Field(1e-3, gt=0.0, description="Peak learning rate; the schedule multiplies it.")
    beta1: float = Field(0.9, ge=0.0, lt=1.0)
    beta2: float = Field(0.95, ge=0.0, lt=1.0)
    eps: float = Field(1e-8, gt=0.0)
    weight_decay: float = Field(0.1, ge=0.0)
    grad_clip: float | None = Field(1.0, gt=0.0, description="Max global grad norm; None = no clipping.")
    decay_norms_and_biases: bool = Field(False, description="Apply weight decay to 1-D params too.")


class TrainConfig(StrictModel):
    """Loop settings. `steps` is the absolute step at which the run ends (a branch continues the count).

    Batch sizes are bounded (MAX_BATCH_ITEMS sequences, MAX_BATCH_TOKENS tokens) so an absurd value
    fails here rather than in an allocation; `validate_run_start` also checks them against memory.
    """

    model_config = FINITE

    steps: int = Field(gt=0)
    batch_size: int = Field(32, gt=0, le=MAX_BATCH_ITEMS, description="Global batch in sequences (or images).")
    batch_tokens: int | None = Field(None, gt=0, le=MAX_BATCH_TOKENS, description="Global batch in tokens; overrides batch_size.")
    micro_batch_size: int | None = Field(None, gt=0, le=MAX_BATCH_ITEMS, description="Per-process micro batch; gradient accumulation fills the global batch.")
    eval_every: int = Field(50, gt=0)
    eval_batches: int = Field(8, gt=0)
    eval_batch_size: int | None = Field(None, gt=0, le=MAX_BATCH_ITEMS, description="Val items per eval batch (the val set: eval_batches x this); None = the global batch.")
    checkpoint_every: int | None = Field(None, gt=0)
    checkpoint_steps: list[int] = Field(default_factory=list, description="Extra steps to checkpoint at.")
    checkpoint_every_minutes: float | None = Field(None, gt=0, description="Also checkpoint at the first step "
                                                   "after this many wall-clock minutes since the last checkpoint "
                                                   "(or the start), so a time-limited job always makes progress.")
    snapshot_every: int | None = Field(None, gt=0, description="Weight snapshots (trajectory) every k steps.")
    snapshot_steps: list[int] = Field(default_factory=list)
    log_every: int = Field(1, gt=0)
    seed: int = Field(0, ge=0, le=MAX_SEED, description="Initialisation seed (0 .. 2**64-1).")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    precision: Literal["auto", "fp32", "bf16"] = Field("auto", description="auto = bf16 autocast on GPU, fp32 on CPU.")
    compile: bool = False
    fsdp: bool = Field(False, description="Shard with FSDP2 (1B/8B presets): over the torchrun ranks, or a "
                      "process group of one on a single process; DDP otherwise.")
    activation_checkpointing: bool = Field(False, description="Recompute each transformer block in backward "
                                           "(1B/8B presets): activations of one block input per layer, ~1/3 more compute.")
    deterministic: bool = True
    progress: bool = True


SchedulePatch = partial_model(ScheduleConfig)  # a branch's own schedule (mode restart), fields set only
DataPatch = partial_model(DataConfig)  # DataConfig fields a branch replaces (nested sections merge)


class BranchConfig(StrictModel):
    """How a branch departs from the checkpoint it starts at: the one definition that `branch_spec`,
    the study stages, `wsdlab cooldown` and the branch's provenance record (`RunSpec.branch`) share.

    mode `cooldown` (the cooldown paper's branches): a WSD schedule whose decay of shape `shape` is the
    last `cooldown_steps` (default: all `steps`) of the branch, so a shorter decay first continues the
    parent's peak LR. mode `mid` (mid-training, WSO paper eq. 11): the parent's schedule continues from
    its final LR, decaying linearly to `alpha_mid` of it over the branch (the parent must end there).
    mode `restart` (fine-tuning, WSO paper Table 8: "Cosine with warmup", "Warmup steps 100", "Minimum LR 0"):
    a new schedule `schedule` (ScheduleConfig fields; default cosine, no warmup, alpha 0) that sees the
    branch's own steps (`schedule.start_step` = the parent step), so its warmup starts at the branch.
    """

    model_config = FINITE

    steps: int = Field(gt=0, description="Updates of the branch (train.steps = parent step + steps).")
    mode: Literal["cooldown", "mid", "restart"] = "cooldown"
    shape: str = Field("sqrt", description="Cooldown shape (mode cooldown).")
    shape_param: float | None = Field(None, description="Shape parameter (p of lowered_linear).")
    shape_expr: str | None = Field(None, description="Expression of x, for shape 'expr'.")
    cooldown_steps: int | None = Field(None, gt=0, description="Decay length at the end (None = the whole branch).")
    alpha: float | None = Field(None, ge=0.0, le=1.0, description="Final LR factor; None keeps the parent's.")
    alpha_mid: float = Field(0.0, ge=0.0, le=1.0, description="Mode mid: final factor relative to the start.")
    seed: int | None = Field(None, ge=0, le=MAX_SEED, description="Data-order seed of the branch (data.order.seed).")
    beta_power: float | None = Field(None, gt=0.0, description="betas -> beta**p; p < 1: larger betas, longer memory.")
    beta2_only: bool = Field(False, description="beta_power scales beta2 alone.")
    batch_scale: float | None = Field(None, gt=0.0, description="Global batch x k for steps // k (the same tokens).")
    match_half_life: bool = Field(False, description="Betas -> beta**k with batch x k: the EMA half-life in tokens kept.")
    weight_decay_off: bool = Field(False, description="No weight decay in the branch.")
    reset_optimizer: bool = Field(False, description="Start the branch with fresh AdamW moments.")
    schedule: SchedulePatch = Field(  # type: ignore[valid-type]
        default_factory=SchedulePatch, description="Mode restart: the branch's own schedule "
        "(ScheduleConfig fields; default kind cosine, warmup_steps 0, alpha 0).")
    data: DataPatch = Field(  # type: ignore[valid-type]
        default_factory=DataPatch, description="DataConfig fields replaced in the branch (nested sections merge; "
        "e.g. another source for mid-training, or SFT data).")
    overrides: dict[str, Any] = Field(default_factory=dict, description="Any other dotted RunSpec key, applied last.")
    parent_step: int | None = Field(None, ge=0, description="Provenance: the step the branch started at.")

    @model_validator(mode="after")
    def _check(self) -> "BranchConfig":
        from wsdlab.schedules.shapes import EXPR, get_shape

        if self.shape != EXPR or self.shape_expr is not None:  # (an expression may come with the overrides)
            get_shape(self.shape, self.shape_param, self.shape_expr)  # an unknown shape fails when the plan is made
        if self.match_half_life and self.batch_scale is None:
            raise ValueError("match_half_life needs batch_scale")
        if self.cooldown_steps is not None and self.cooldown_steps > self.steps:
            raise ValueError(f"cooldown_steps ({self.cooldown_steps}) exceeds the branch's steps ({self.steps})")
        if self.cooldown_steps is not None and self.batch_scale is not None:
            raise ValueError("cooldown_steps and batch_scale cannot be combined")
        if self.mode in ("mid", "restart") and (self.cooldown_steps is not None or self.batch_scale is not None):
            raise ValueError(f"mode '{self.mode}' takes neither cooldown_steps nor batch_scale")
        if self.schedule.model_fields_set and self.mode != "restart":
            raise ValueError("schedule is only used with mode 'restart'")
        if "start_step" in self.schedule.model_fields_set:
            raise ValueError("schedule.start_step is set by the branch (its parent step)")
        return self


class RunSpec(StrictModel):
    """A run is fully described by its spec."""

    name: str = "run"
    model: ModelConfig = Field(default_factory=LlamaConfig, description="Chosen by model.arch (llama, neox, cnn).")
    data: DataConfig = Field(default_factory=DataConfig)
    optim: OptimConfig = Field(default_factory=OptimConfig)
    schedule: ScheduleConfig = Field(default_factory=ScheduleConfig)
    train: TrainConfig
    init_from: str | None = Field(None, description="Checkpoint directory to start from (a branch).")
    branch: BranchConfig | None = None

    @model_validator(mode="after")
    def _check_lengths(self) -> "RunSpec":
        from wsdlab.common.errors import ConfigError
        from wsdlab.schedules.build import cooldown_steps

        try:  # T - T_c: the one rule (schedules.build.cooldown_steps) checks that warmup and cooldown fit
            cooldown_steps(self.schedule, self.train.steps)
        except ConfigError as err:
            raise ValueError(f"schedule: {err}") from None
        is_lm = isinstance(self.model, LMConfig)
        if self.train.activation_checkpointing and not is_lm:
            raise ValueError(f"train.activation_checkpointing needs a transformer (model.arch '{self.model.arch}' has no blocks)")
        if not self.data.is_vision and not is_lm:
            raise ValueError(f"model.arch '{self.model.arch}' needs a vision data source (fashion_mnist or cifar10)")
        if self.data.is_vision and is_lm:
            raise ValueError(f"data.source '{self.data.source}' is vision data; model.arch must be 'cnn'")
        if isinstance(self.model, LMConfig) and self.data.seq_len > self.model.seq_len:
            raise ValueError(f"data.seq_len ({self.data.seq_len}) exceeds model.seq_len ({self.model.seq_len})")
        return self
