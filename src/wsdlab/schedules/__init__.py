"""wsdlab.schedules: LR schedules as pure `step -> factor` functions, built from a ScheduleConfig.

See docs/ARCHITECTURE.md ("schedules") for the contract; `core` holds the factories, `shapes` the
cooldown shapes and their registry, `expr` the safe shape expressions, `build` the config binding.
"""

from wsdlab.schedules.expr import compile_shape_expr
from wsdlab.schedules.shapes import (
    BUILTIN_SHAPES,
    SHAPE_NAMES,
    Shape,
    ShapeFactory,
    get_shape,
    is_known_shape,
    register_shape,
)
from wsdlab.schedules.core import (
    Schedule,
    constant_schedule,
    decay_piece,
    join_schedules,
    linear_warmup,
    warmup_cosine,
    warmup_linear_decay,
    warmup_stable,
    warmup_stable_decay,
    with_mid_training,
)
from wsdlab.schedules.config import MidTrainingConfig, ScheduleConfig, ScheduleKind
from wsdlab.schedules.build import build_schedule, cooldown_steps, pretrain_steps, schedule_values

__all__ = [
    "BUILTIN_SHAPES",
    "MidTrainingConfig",
    "SHAPE_NAMES",
    "Schedule",
    "ScheduleConfig",
    "ScheduleKind",
    "Shape",
    "ShapeFactory",
    "build_schedule",
    "compile_shape_expr",
    "constant_schedule",
    "cooldown_steps",
    "decay_piece",
    "get_shape",
    "is_known_shape",
    "join_schedules",
    "linear_warmup",
    "pretrain_steps",
    "register_shape",
    "schedule_values",
    "warmup_cosine",
    "warmup_linear_decay",
    "warmup_stable",
    "warmup_stable_decay",
    "with_mid_training",
]
