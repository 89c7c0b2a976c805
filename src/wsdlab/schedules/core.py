"""Schedules as pure `step -> LR factor` functions, built by factories that check their arguments.

Composite schedules are pieces joined at boundaries (after optax's `join_schedules`), each piece
seeing `step - boundary`. One convention differs from optax and matches the papers' formulas
(`t <= T_w` is warmup, `t > T_c` is cooldown): the boundary step itself belongs to the piece on
its left. Every piece holds its last value past its end, so a schedule is defined for any step >= 0
and steps past the total keep the final value.
"""

from __future__ import annotations

import bisect
import operator
from collections.abc import Callable, Sequence

from wsdlab.common.errors import ConfigError
from wsdlab.schedules.shapes import Shape, cosine, get_shape, linear

Schedule = Callable[[int], float]  # step -> LR factor (multiplies optim.lr)


def _check_int(name: str, value: int, minimum: int) -> int:
    if isinstance(value, bool):
        raise ConfigError(f"{name} must be an integer, got {value!r}")
    try:
        value = operator.index(value)
    except TypeError:
        raise ConfigError(f"{name} must be an integer, got {value!r}") from None
    if value < minimum:
        raise ConfigError(f"{name} must be >= {minimum}, got {value}")
    return value


def _check_fraction(name: str, value: float) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
        raise ConfigError(f"{name} must be in [0, 1], got {value!r}")
    return float(value)


def _resolve_shape(shape: Shape | str) -> Shape:
    if isinstance(shape, str):
        return get_shape(shape)
    if not callable(shape):
        raise ConfigError(f"shape must be a shape name or a function of x, got {type(shape).__name__}")
    return shape


def constant_schedule(value: float) -> Schedule:
    """The factor `value` at every step."""
    value = float(value)

    def schedule(step: int) -> float:
        return value

    return schedule


def linear_warmup(warmup: int) -> Schedule:
    """Linear warmup piece: t / T_w, so 0 at step 0 and 1 at step T_w (then 1)."""
    warmup = _check_int("warmup", warmup, 1)

    def schedule(step: int) -> float:
        return min(max(step, 0), warmup) / warmup  # warmup factor t / T_w

    return schedule


def decay_piece(length: int, shape: Shape | str, alpha: float = 0.0) -> Schedule:
    """Decay piece over `length` steps, seeing s = t - T_c: alpha + (1 - alpha) * shape(s / length).

    s = length gives alpha + (1 - alpha) * shape(1); later steps keep that value.
    """
    length = _check_int("length", length, 1)
    fn = _resolve_shape(shape)
    alpha = _check_fraction("alpha", alpha)

    def schedule(step: int) -> float:
        x = min(max(step, 0), length) / length
        return alpha + (1.0 - alpha) * fn(x)  # WSD cooldown: alpha + (1 - alpha) * shape((t - T_c) / (T - T_c))

    return schedule


def join_schedules(schedules: Sequence[Schedule], boundaries: Sequence[int]) -> Schedule:
    """Piece i for boundaries[i-1] < step <= boundaries[i], seeing `step - boundaries[i-1]` (piece 0 sees step).

    Boundaries must be non-decreasing integers >= 0; there is one more piece than boundaries.
    """
    pieces = list(schedules)
    cuts = [_check_int(f"boundaries[{i}]", b, 0) for i, b in enumerate(boundaries)]
    if len(pieces) != len(cuts) + 1:
        raise ValueError(f"join_schedules needs one more schedule than boundaries, got {len(pieces)} and {len(cuts)}")
    if any(b < a for a, b in zip(cuts, cuts[1:])):
        raise ValueError(f"boundaries must be non-decreasing, got {cuts}")
    if not all(callable(p) for p in pieces):
        raise ValueError("join_schedules: every schedule must be a function of the step")
    offsets = [0, *cuts]

    def schedule(step: int) -> float:
        if step < 0:
            raise ValueError(f"step must be >= 0, got {step}")
        i = bisect.bisect_left(cuts, step)  # number of boundaries strictly below step
        return pieces[i](step - offsets[i])

    return schedule


def warmup_stable(warmup: int) -> Schedule:
    """WSO: linear warmup over `warmup` steps, then 1 forever (no total needed)."""
    warmup = _check_int("warmup", warmup, 0)
    if warmup == 0:
        return join_schedules([constant_schedule(1.0)], [])
    return join_schedules([linear_warmup(warmup), constant_schedule(1.0)], [warmup])


def warmup_stable_decay(
    total: int, warmup: int, cooldown: int, shape: Shape | str, alpha: float = 0.0
) -> Schedule:
    """WSD: warmup to 1, stable at 1, then for t > T_c = total - cooldown decay to alpha along `shape`.

    cooldown = 0 means no decay (the stable phase runs to the end).
    """
    total = _check_int("total", total, 1)
    warmup = _check_int("warmup", warmup, 0)
    cooldown = _check_int("cooldown", cooldown, 0)
    if warmup + cooldown > total:
        raise ConfigError(f"warmup ({warmup}) + cooldown ({cooldown}) exceed total ({total}) steps")
    fn = _resolve_shape(shape)
    alpha = _check_fraction("alpha", alpha)
    pieces: list[Schedule] = [constant_schedule(1.0)]
    boundaries: list[int] = []
    if warmup > 0:
        pieces.insert(0, linear_warmup(warmup))
        boundaries.append(warmup)
    if cooldown > 0:
        pieces.append(decay_piece(cooldown, fn, alpha))
        boundaries.append(total - cooldown)
    return join_schedules(pieces, boundaries)


def warmup_cosine(total: int, warmup: int, alpha: float = 0.0) -> Schedule:
    """Linear warmup, then alpha + (1 - alpha)/2 (1 + cos(pi (t - T_w)/(T - T_w))): WSD with no stable phase."""
    total = _check_int("total", total, 1)
    warmup = _check_int("warmup", warmup, 0)
    if warmup > total:
        raise ConfigError(f"warmup ({warmup}) exceeds total ({total}) steps")
    return warmup_stable_decay(total, warmup, total - warmup, cosine, alpha)


def warmup_linear_decay(total: int, warmup: int, alpha: float = 0.0) -> Schedule:
    """Linear warmup, then alpha + (1 - alpha)(T - t)/(T - T_w) (WSO paper, Appendix B): WSD with no stable phase."""
    total = _check_int("total", total, 1)
    warmup = _check_int("warmup", warmup, 0)
    if warmup > total:
        raise ConfigError(f"warmup ({warmup}) exceeds total ({total}) steps")
    return warmup_stable_decay(total, warmup, total - warmup, linear, alpha)


def with_mid_training(base: Schedule, pretrain_steps: int, mid_steps: int, alpha_mid: float = 0.0) -> Schedule:
    """`base` up to T_pre, then a mid-training stage decaying linearly from base(T_pre) to alpha_mid * base(T_pre).

    For T_pre < t <= T_pre + T_mid: base(T_pre) * ((1 - alpha_mid)(T_pre + T_mid - t)/T_mid + alpha_mid).
    """
    if not callable(base):
        raise ValueError("base must be a schedule (a function of the step)")
    pretrain_steps = _check_int("pretrain_steps", pretrain_steps, 1)
    mid_steps = _check_int("mid_steps", mid_steps, 1)
    start = float(base(pretrain_steps))
    stage = decay_piece(mid_steps, linear, _check_fraction("alpha_mid", alpha_mid))

    def mid(step: int) -> float:
        return start * stage(step)  # WSO mid-training: f_pre(T_pre) * ((1 - a_mid)(T_mid - s)/T_mid + a_mid)

    return join_schedules([base, mid], [pretrain_steps])
