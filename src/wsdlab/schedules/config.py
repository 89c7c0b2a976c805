"""Schedule config: names and numbers only, so it serializes to YAML and hashes stably."""

from __future__ import annotations

from typing import Literal

from pydantic import ConfigDict, Field, ValidationInfo, field_validator, model_validator

from wsdlab.common.config import StrictModel
from wsdlab.schedules.shapes import EXPR, get_shape, is_known_shape

ScheduleKind = Literal["wsd", "wso", "cosine", "linear"]


class MidTrainingConfig(StrictModel):
    """Optional mid-training stage after pre-training (WSO paper): linear decay to alpha_mid."""

    model_config = ConfigDict(allow_inf_nan=False)

    steps: int = Field(gt=0, description="T_mid: number of mid-training steps.")
    alpha_mid: float = Field(0.0, ge=0.0, le=1.0, description="Final factor of the stage, relative to its start.")


class ScheduleConfig(StrictModel):
    """LR factor schedule (multiplies optim.lr). Total steps come from train.steps.

    wsd: warmup, stable at 1, cooldown over the last `cooldown_fraction` of the run
         (or exactly `cooldown_steps`, which wins when set; a cooldown branch uses it; or by the
         stable ratio `stable_ratio`, which wins over `cooldown_fraction`).
    wso: warmup then constant (the stable phase; no decay).
    cosine / linear: warmup then decay to `alpha` at the end.
    """

    model_config = ConfigDict(allow_inf_nan=False)  # NaN / inf numbers are rejected

    kind: ScheduleKind = "wsd"
    warmup_steps: int = Field(0, ge=0)
    cooldown_fraction: float = Field(0.2, gt=0.0, lt=1.0, description="F: the cooldown is the last round(F*T) steps.")
    cooldown_steps: int | None = Field(None, gt=0, description="Exact cooldown length; overrides cooldown_fraction.")
    shape: str = Field("sqrt", description="Cooldown shape name: linear, cosine, mirror_cosine, square, sqrt, lowered_linear, or a registered/expr shape.")
    shape_param: float | None = Field(None, description="Parameter of the shape (p of lowered_linear).")
    shape_expr: str | None = Field(None, description="A shape written as an expression of x, e.g. '1 - x**3'; used when shape == 'expr'.")
    stable_ratio: float | None = Field(
        None, ge=0.0, le=1.0,
        description="rho (WSO paper, Table 6): 'the LR remains stable for 75% of training after warmup, with decay "
                    "occurring in the final 25%'. wsd: cooldown = round((1 - rho) * (T_pre - warmup_steps)); "
                    "overrides cooldown_fraction (not cooldown_steps).")
    alpha: float = Field(0.0, ge=0.0, le=1.0, description="Minimum-LR factor reached at the end of the decay.")
    start_step: int = Field(
        0, ge=0, description="The schedule's own step 0: it sees t - start_step and lasts train.steps - start_step "
                             "(a fine-tuning stage warms up from its own start; 0 = the absolute step).")
    mid: MidTrainingConfig | None = None

    @field_validator("shape_param")
    @classmethod
    def _check_shape_param(cls, value: float | None, info: ValidationInfo) -> float | None:
        """A parameter the shape does not take, or one out of its range, is an error here (not at build)."""
        shape = info.data.get("shape")
        if value is not None and isinstance(shape, str) and shape != EXPR and is_known_shape(shape):
            get_shape(shape, value)
        return value

    @field_validator("shape_expr")
    @classmethod
    def _check_shape_expr(cls, value: str | None, info: ValidationInfo) -> str | None:
        """Parse the expression now, so a bad one is reported against shape_expr when the config loads."""
        if value is not None:
            shape = info.data.get("shape")
            if shape != EXPR:
                raise ValueError(f"shape_expr is only used with shape: expr (shape is '{shape}')")
            get_shape(EXPR, expr=value)
        return value

    @model_validator(mode="after")
    def _check_expr(self) -> "ScheduleConfig":
        if self.shape == "expr" and not self.shape_expr:
            raise ValueError("shape 'expr' needs shape_expr, e.g. shape_expr: '1 - x**2'")
        # Re-check the combination (assignments change one field at a time). Unknown names are left to
        # build_schedule: a shape registered by user code may not be registered in every reading process.
        if is_known_shape(self.shape):
            get_shape(self.shape, self.shape_param, self.shape_expr)
        return self
