"""wsdlab.schedules: shapes, factories, joins, config binding, against hand formulas and direct references."""

from __future__ import annotations

import builtins
import math

import numpy as np
import pytest
from pydantic import ValidationError

from wsdlab.schedules import (
    SHAPE_NAMES,
    MidTrainingConfig,
    ScheduleConfig,
    build_schedule,
    compile_shape_expr,
    cooldown_steps,
    get_shape,
    join_schedules,
    linear_warmup,
    register_shape,
    schedule_values,
    warmup_cosine,
    warmup_linear_decay,
    warmup_stable,
    warmup_stable_decay,
    with_mid_training,
)

# --- direct (slow) references, written from the papers' formulas with numpy ------------------------

HAND_SHAPES = {
    "linear": lambda x, p: 1 - x,
    "cosine": lambda x, p: (1 + np.cos(np.pi * x)) / 2,
    "mirror_cosine": lambda x, p: 2 * (1 - x) - (1 + np.cos(np.pi * x)) / 2,
    "square": lambda x, p: 1 - x**2,
    "sqrt": lambda x, p: 1 - np.sqrt(x),
    "lowered_linear": lambda x, p: (0.7 if p is None else p) * (1 - x),
}
XS = [0.0, 0.1, 0.25, 1 / 3, 0.5, 0.75, 0.9, 1.0]


def ref_pre(kind, t, T, Tw, cool=None, shape="sqrt", p=None, alpha=0.0):
    """Pre-training factor at step t of a T-step schedule, straight from the formulas."""
    t = min(t, T)
    if Tw > 0 and t <= Tw:
        return t / Tw
    if kind == "wso":
        return 1.0
    if kind == "cosine":
        return alpha + (1 - alpha) / 2 * (1 + np.cos(np.pi * (t - Tw) / (T - Tw)))
    if kind == "linear":
        return alpha + (1 - alpha) * (T - t) / (T - Tw)
    Tc = T - cool
    if t <= Tc:
        return 1.0
    return alpha + (1 - alpha) * HAND_SHAPES[shape]((t - Tc) / (T - Tc), p)


def ref_mid(pre, t, T_pre, T_mid, alpha_mid):
    """Mid-training stage: f_pre(T_pre) * ((1 - a)(T_pre + T_mid - t)/T_mid + a)."""
    if t <= T_pre:
        return pre(t)
    t = min(t, T_pre + T_mid)
    return pre(T_pre) * ((1 - alpha_mid) * (T_pre + T_mid - t) / T_mid + alpha_mid)


# --- shapes --------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", list(HAND_SHAPES))
def test_shape_matches_hand_formula(name):
    shape = get_shape(name)
    for x in XS:
        assert shape(x) == pytest.approx(float(HAND_SHAPES[name](x, None)), abs=1e-15)


def test_shapes_hand_computed_values():
    assert get_shape("cosine")(0.5) == pytest.approx(0.5)
    assert get_shape("mirror_cosine")(0.5) == pytest.approx(0.5)  # 2*0.5 - 0.5
    assert get_shape("mirror_cosine")(0.25) == pytest.approx(1.5 - (1 + math.sqrt(0.5)) / 2)
    assert get_shape("square")(0.5) == pytest.approx(0.75)
    assert get_shape("sqrt")(0.25) == pytest.approx(0.5)
    assert get_shape("lowered_linear")(0.0) == pytest.approx(0.7)
    assert get_shape("lowered_linear", 0.5)(0.5) == pytest.approx(0.25)


@pytest.mark.parametrize("name", list(HAND_SHAPES))
def test_shape_limits_and_monotonicity(name):
    shape = get_shape(name)
    assert shape(0.0) == pytest.approx(0.7 if name == "lowered_linear" else 1.0)
    assert shape(1.0) == pytest.approx(0.0, abs=1e-15)
    ys = [shape(i / 200) for i in range(201)]
    assert all(b <= a + 1e-15 for a, b in zip(ys, ys[1:]))
    assert all(-1e-15 <= y <= 1.0 for y in ys)


def test_shape_params_are_checked():
    with pytest.raises(ValueError, match="shape_param"):
        get_shape("lowered_linear", 1.5)
    with pytest.raises(ValueError, match="shape_param.*cosine.*no parameter"):
        get_shape("cosine", 0.5)
    with pytest.raises(ValidationError) as err:
        ScheduleConfig(shape="lowered_linear", shape_param=-0.1)
    assert err.value.errors()[0]["loc"] == ("shape_param",)


def test_unknown_shape_lists_known_names():
    with pytest.raises(ValueError, match="unknown cooldown shape 'nope'") as err:
        get_shape("nope")
    for name in HAND_SHAPES:
        assert name in str(err.value)
    # A name that may be registered later is accepted by the config but fails to build.
    cfg = ScheduleConfig(shape="not_registered_here")
    with pytest.raises(ValueError, match="known: linear, cosine"):
        build_schedule(cfg, 10)


def test_register_shape_and_reject_duplicates():
    register_shape("test_cubic", lambda p: (lambda x: 1 - x**3))
    assert "test_cubic" in SHAPE_NAMES
    assert get_shape("test_cubic")(0.5) == pytest.approx(0.875)
    f = build_schedule(ScheduleConfig(shape="test_cubic", cooldown_steps=4), 8)
    assert f(6) == pytest.approx(1 - 0.5**3)
    with pytest.raises(ValueError, match="already registered"):
        register_shape("test_cubic", lambda p: (lambda x: 1 - x))
    with pytest.raises(ValueError, match="already registered"):
        register_shape("linear", lambda p: (lambda x: 1 - x))
    with pytest.raises(ValueError, match="already registered"):
        register_shape("expr", lambda p: (lambda x: 1 - x))
    with pytest.raises(ValueError, match="identifier"):
        register_shape("bad:name", lambda p: (lambda x: 1 - x))


def test_registered_shape_out_of_range_is_rejected():
    register_shape("test_too_big", lambda p: (lambda x: 2.0 - x))
    with pytest.raises(ValueError, match="test_too_big.*into \\[0,1\\]"):
        get_shape("test_too_big")


# --- expression shapes ---------------------------------------------------------------------------


def test_expr_shape_matches_formula():
    shape = get_shape("expr", expr="1 - x**3")
    for x in XS:
        assert shape(x) == pytest.approx(1 - x**3)
    fancy = compile_shape_expr("(1 + cos(pi*x))/2 * exp(-x) + 0*sin(x)*log(1 + x) - -0*sqrt(x)")
    for x in XS:
        assert fancy(x) == pytest.approx((1 + math.cos(math.pi * x)) / 2 * math.exp(-x))


def test_expr_shape_never_calls_eval(monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("eval/exec must not be used")

    monkeypatch.setattr(builtins, "eval", forbidden)
    monkeypatch.setattr(builtins, "exec", forbidden)
    assert get_shape("expr", expr="1 - sqrt(x)")(0.25) == pytest.approx(0.5)


@pytest.mark.parametrize(
    "expr",
    [
        "__import__('os')",
        "__import__('os').system('echo pwned')",
        "x.__class__",
        "().__class__.__bases__",
        "open('/etc/passwd')",
        "lambda: 1",
        "[x][0]",
        "x if x else 1",
        "x < 1",
        "y",
        "True",
        "'1'",
        "1j",
        "sqrt(x, 2)",
        "sqrt(x=x)",
        "math.sqrt(x)",
        "1 - x; 1",
        "",
        "x" + " + 0" * 200,
        "9**9**9",  # overflows at once (float power), no huge integer
        "1/x",  # division by zero at x = 0
        "log(x)",  # domain error at x = 0
        "2 - x",  # leaves [0, 1]
        "(-x)**0.5",  # would be complex
    ],
)
def test_bad_or_malicious_expr_rejected_at_config_time(expr):
    with pytest.raises(ValidationError) as err:
        ScheduleConfig(shape="expr", shape_expr=expr)
    assert err.value.errors()[0]["loc"] == ("shape_expr",)
    assert "shape_expr" in str(err.value)


def test_expr_config_rules():
    with pytest.raises(ValidationError, match="needs shape_expr"):
        ScheduleConfig(shape="expr")
    with pytest.raises(ValidationError, match="only used with shape: expr"):
        ScheduleConfig(shape="linear", shape_expr="1 - x")
    cfg = ScheduleConfig(shape="expr", shape_expr="1 - x**2", cooldown_steps=4)
    assert schedule_values(cfg, 8)[6] == pytest.approx(0.75)


# --- warmup, joins -------------------------------------------------------------------------------


def test_warmup_limits_and_every_boundary_step():
    f = warmup_stable(4)
    assert [f(t) for t in range(7)] == [0.0, 0.25, 0.5, 0.75, 1.0, 1.0, 1.0]
    assert f(10**7) == 1.0
    assert linear_warmup(4)(2) == 0.5
    g = warmup_stable(0)
    assert g(0) == 1.0 and g(1) == 1.0  # T_w = 0: no warmup, factor 1 from step 0


def test_join_pieces_see_step_minus_boundary_and_boundary_is_left():
    f = join_schedules([lambda s: 100.0 + s, lambda s: 200.0 + s, lambda s: 300.0 + s], [3, 5])
    assert [f(t) for t in range(8)] == [100, 101, 102, 103, 201, 202, 301, 302]
    with pytest.raises(ValueError, match="one more schedule"):
        join_schedules([lambda s: 1.0], [3])
    with pytest.raises(ValueError, match="non-decreasing"):
        join_schedules([lambda s: 1.0] * 3, [5, 3])
    with pytest.raises(ValueError, match="step must be >= 0"):
        f(-1)


# --- WSD -----------------------------------------------------------------------------------------


def test_wsd_hand_computed():
    f = warmup_stable_decay(10, 2, 3, "cosine")
    assert [f(t) for t in range(12)] == pytest.approx([0, 0.5, 1, 1, 1, 1, 1, 1, 0.75, 0.25, 0, 0], abs=1e-15)


@pytest.mark.parametrize("shape", list(HAND_SHAPES))
@pytest.mark.parametrize("alpha", [0.0, 0.1])
def test_wsd_every_boundary_step(shape, alpha):
    T, Tw, cool = 20, 4, 5
    Tc = T - cool
    f = warmup_stable_decay(T, Tw, cool, shape, alpha)
    s = get_shape(shape)
    assert f(0) == 0.0
    assert f(Tw - 1) == 0.75
    assert f(Tw) == 1.0
    assert f(Tw + 1) == 1.0
    assert f(Tc) == 1.0  # the boundary step belongs to the stable phase (t > T_c decays)
    assert f(Tc + 1) == pytest.approx(alpha + (1 - alpha) * s(1 / cool))
    assert f(T) == pytest.approx(alpha, abs=1e-15)
    assert f(T + 1) == f(T) and f(10 * T) == f(T)  # steps past T keep the final value
    values = [f(t) for t in range(T + 1)]
    assert all(b >= a for a, b in zip(values[: Tw + 1], values[1 : Tw + 1]))
    assert all(b <= a + 1e-15 for a, b in zip(values[Tw:], values[Tw + 1 :]))


@pytest.mark.parametrize(
    ("T", "Tw", "F", "shape", "p", "alpha"),
    [
        (13, 2, 0.2, "sqrt", None, 0.0),  # F*T = 2.6 -> 3
        (17, 0, 0.3, "cosine", None, 0.05),  # F*T = 5.1 -> 5
        (23, 5, 0.45, "mirror_cosine", None, 0.0),  # 10.35 -> 10
        (11, 1, 0.5, "lowered_linear", 0.4, 0.2),  # 5.5 -> 6 (half to even)
        (30, 3, 0.1, "square", None, 0.0),
        (9, 0, 0.9, "linear", None, 0.3),
    ],
)
def test_wsd_from_config_matches_reference_at_every_step(T, Tw, F, shape, p, alpha):
    cfg = ScheduleConfig(kind="wsd", warmup_steps=Tw, cooldown_fraction=F, shape=shape, shape_param=p, alpha=alpha)
    cool = round(F * T)
    assert cooldown_steps(cfg, T) == cool
    f = build_schedule(cfg, T)
    for t in range(T + 3):
        assert f(t) == pytest.approx(float(ref_pre("wsd", t, T, Tw, cool, shape, p, alpha)), abs=1e-14), t


def test_cooldown_rounding_uses_python_round():
    # Python's round (half to even) is what RunSpec validates with; the two must agree.
    assert cooldown_steps(ScheduleConfig(cooldown_fraction=0.2), 13) == 3
    assert cooldown_steps(ScheduleConfig(cooldown_fraction=0.25), 10) == 2  # 2.5 -> 2
    assert cooldown_steps(ScheduleConfig(cooldown_fraction=0.25), 14) == 4  # 3.5 -> 4
    assert cooldown_steps(ScheduleConfig(cooldown_fraction=0.2, cooldown_steps=7), 13) == 7


def test_build_accepts_exactly_what_runspec_accepts():
    from wsdlab.train.config import RunSpec, TrainConfig

    for T in range(1, 16):
        for Tw in range(0, T + 2):
            for kind, extra in [("wsd", {"cooldown_fraction": 0.3}), ("wsd", {"cooldown_steps": 3}), ("cosine", {})]:
                cfg = ScheduleConfig(kind=kind, warmup_steps=Tw, **extra)
                try:
                    RunSpec(train=TrainConfig(steps=T), schedule=cfg)
                    spec_ok = True
                except ValidationError:
                    spec_ok = False
                try:
                    build_schedule(cfg, T)
                    build_ok = True
                except ValueError:
                    build_ok = False
                assert spec_ok == build_ok, (T, Tw, kind, extra)


def test_wsd_argument_checks():
    with pytest.raises(ValueError, match="warmup \\(5\\) \\+ cooldown \\(6\\) exceed total \\(10\\)"):
        warmup_stable_decay(10, 5, 6, "linear")
    with pytest.raises(ValueError, match="total must be >= 1"):
        warmup_stable_decay(0, 0, 0, "linear")
    with pytest.raises(ValueError, match="warmup must be >= 0"):
        warmup_stable_decay(10, -1, 2, "linear")
    with pytest.raises(ValueError, match="alpha must be in"):
        warmup_stable_decay(10, 1, 2, "linear", alpha=1.5)
    with pytest.raises(ValueError, match="integer"):
        warmup_stable_decay(10.5, 1, 2, "linear")
    with pytest.raises(ValueError, match="unknown cooldown shape"):
        warmup_stable_decay(10, 1, 2, "nope")
    cfg = ScheduleConfig(warmup_steps=9, cooldown_steps=2)
    with pytest.raises(ValueError, match="warmup_steps \\(9\\) \\+ cooldown_steps \\(2\\) exceed the total_steps \\(10\\)"):
        build_schedule(cfg, 10)
    with pytest.raises(ValueError, match="total_steps"):
        build_schedule(cfg, 0)


def test_wsd_zero_cooldown_is_stable_to_the_end():
    f = build_schedule(ScheduleConfig(cooldown_fraction=0.2, warmup_steps=1), 2)  # round(0.4) = 0
    assert [f(t) for t in range(4)] == [0.0, 1.0, 1.0, 1.0]


@pytest.mark.parametrize("shape", list(HAND_SHAPES))
def test_cooldown_branch_reproduces_stable_run(shape):
    """A cooldown of N steps started at any k, with total k + N, equals the stable run for t <= k."""
    Tw = 3
    stable = warmup_stable(Tw)
    for k in [3, 4, 7, 20]:
        for N in [1, 2, 5]:
            f = build_schedule(ScheduleConfig(kind="wsd", warmup_steps=Tw, cooldown_steps=N, shape=shape), k + N)
            assert [f(t) for t in range(k + 1)] == [stable(t) for t in range(k + 1)]
            assert f(k + N) == pytest.approx(0.0, abs=1e-15)
            s = get_shape(shape)
            assert f(k + 1) == pytest.approx(s(1 / N))


# --- WSO, cosine, linear ---------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["wso", "cosine", "linear"])
@pytest.mark.parametrize(("T", "Tw", "alpha"), [(12, 3, 0.0), (15, 0, 0.1), (7, 7, 0.2), (9, 1, 1.0)])
def test_other_kinds_match_formulas_at_every_step(kind, T, Tw, alpha):
    f = build_schedule(ScheduleConfig(kind=kind, warmup_steps=Tw, alpha=alpha), T)
    for t in range(T + 3):
        assert f(t) == pytest.approx(float(ref_pre(kind, t, T, Tw, alpha=alpha)), abs=1e-14), t


def test_cosine_and_linear_limits():
    for factory in (warmup_cosine, warmup_linear_decay):
        f = factory(20, 4, 0.1)
        assert f(0) == 0.0 and f(4) == 1.0
        assert f(20) == pytest.approx(0.1) and f(25) == pytest.approx(0.1)
        values = [f(t) for t in range(4, 21)]
        assert all(b < a for a, b in zip(values, values[1:]))
    assert warmup_cosine(20, 4)(12) == pytest.approx(0.5)  # halfway through the decay
    assert warmup_linear_decay(20, 4, 0.2)(12) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="warmup \\(5\\) exceeds total \\(4\\)"):
        warmup_cosine(4, 5)


def test_cooldown_steps_per_kind():
    assert cooldown_steps(ScheduleConfig(kind="cosine", warmup_steps=3), 20) == 17
    assert cooldown_steps(ScheduleConfig(kind="linear", warmup_steps=0), 20) == 20
    assert cooldown_steps(ScheduleConfig(kind="wso", warmup_steps=3), 20) == 0
    mid = MidTrainingConfig(steps=5)
    assert cooldown_steps(ScheduleConfig(kind="wsd", cooldown_fraction=0.2, mid=mid), 25) == 4  # of T_pre = 20


# --- mid-training --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("kind", "alpha", "alpha_mid"), [("wsd", 0.1, 0.0), ("wso", 0.0, 0.25), ("cosine", 0.2, 0.5), ("linear", 0.0, 1.0)]
)
def test_mid_training_matches_formula_at_every_step(kind, alpha, alpha_mid):
    T_pre, T_mid, Tw = 16, 6, 2
    cfg = ScheduleConfig(
        kind=kind, warmup_steps=Tw, cooldown_fraction=0.25, shape="cosine", alpha=alpha,
        mid=MidTrainingConfig(steps=T_mid, alpha_mid=alpha_mid),
    )
    f = build_schedule(cfg, T_pre + T_mid)
    cool = round(0.25 * T_pre)

    def pre(t):
        return float(ref_pre(kind, t, T_pre, Tw, cool, "cosine", None, alpha))

    for t in range(T_pre + T_mid + 3):
        assert f(t) == pytest.approx(ref_mid(pre, t, T_pre, T_mid, alpha_mid), abs=1e-14), t
    assert f(T_pre + T_mid) == pytest.approx(pre(T_pre) * alpha_mid)


def test_mid_training_hand_computed_and_checks():
    f = with_mid_training(warmup_stable(0), 4, 4, 0.5)
    assert [f(t) for t in range(10)] == pytest.approx([1, 1, 1, 1, 1, 0.875, 0.75, 0.625, 0.5, 0.5])
    with pytest.raises(ValueError, match="mid.steps \\(10\\) must be < total_steps \\(10\\)"):
        build_schedule(ScheduleConfig(mid=MidTrainingConfig(steps=10)), 10)
    with pytest.raises(ValueError, match="mid_steps must be >= 1"):
        with_mid_training(warmup_stable(0), 4, 0)
    with pytest.raises(ValueError, match="alpha_mid"):
        with_mid_training(warmup_stable(0), 4, 2, alpha_mid=2.0)


# --- serialization -------------------------------------------------------------------------------


def test_config_round_trips_and_rebuilds_identically():
    cfg = ScheduleConfig(
        kind="wsd", warmup_steps=2, cooldown_steps=5, shape="expr", shape_expr="1 - x**2", alpha=0.1,
        mid=MidTrainingConfig(steps=3, alpha_mid=0.2),
    )
    again = ScheduleConfig.model_validate_json(cfg.model_dump_json())
    assert again == cfg
    assert schedule_values(again, 20) == schedule_values(cfg, 20)
    assert len(schedule_values(cfg, 20)) == 21
