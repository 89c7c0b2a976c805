"""`wsdlab schedule values|plot`: CSV against the formulas for every kind and shape; errors exit 2."""

from __future__ import annotations

import math

import pytest
from typer.testing import CliRunner

from wsdlab.cli.schedule import app

runner = CliRunner()

SHAPES = {
    "linear": lambda x, p: 1 - x,
    "cosine": lambda x, p: (1 + math.cos(math.pi * x)) / 2,
    "mirror_cosine": lambda x, p: 2 * (1 - x) - (1 + math.cos(math.pi * x)) / 2,
    "square": lambda x, p: 1 - x * x,
    "sqrt": lambda x, p: 1 - math.sqrt(x),
    "lowered_linear": lambda x, p: (0.7 if p is None else p) * (1 - x),
}


def expected(kind, t, T, Tw, cool=0, shape="sqrt", p=None, alpha=0.0, mid=0, alpha_mid=0.0):
    """The factor at step t, straight from the formulas (mid-training stage included)."""
    T_pre = T - mid
    if mid and t > T_pre:
        start = expected(kind, T_pre, T_pre, Tw, cool, shape, p, alpha)
        return start * ((1 - alpha_mid) * (T - t) / mid + alpha_mid)
    if Tw > 0 and t <= Tw:
        return t / Tw
    if kind == "wso":
        return 1.0
    if kind == "cosine":
        return alpha + (1 - alpha) / 2 * (1 + math.cos(math.pi * (t - Tw) / (T_pre - Tw)))
    if kind == "linear":
        return alpha + (1 - alpha) * (T_pre - t) / (T_pre - Tw)
    Tc = T_pre - cool
    return 1.0 if t <= Tc else alpha + (1 - alpha) * SHAPES[shape]((t - Tc) / cool, p)


def run_values(*args: str):
    result = runner.invoke(app, ["values", *args])
    return result


def parse_csv(text: str) -> list[tuple[int, float]]:
    lines = text.strip().splitlines()
    assert lines[0] == "step,lr_factor"
    rows = []
    for line in lines[1:]:
        step, value = line.split(",")
        rows.append((int(step), float(value)))
    return rows


def assert_matches(rows, T, fn):
    assert [s for s, _ in rows] == list(range(T + 1))  # one row for every step 0..T
    for step, value in rows:
        assert math.isclose(value, fn(step), rel_tol=1e-9, abs_tol=1e-12), (step, value, fn(step))


def one_line(text: str) -> str:
    return " ".join(text.split())  # rich wraps long error lines


@pytest.mark.parametrize("kind", ["wsd", "wso", "cosine", "linear"])
@pytest.mark.parametrize("alpha", ["0", "0.15"])
def test_values_every_kind_matches_formula(kind, alpha):
    T, Tw = 40, 6
    result = run_values("--kind", kind, "--total-steps", str(T), "--warmup-steps", str(Tw),
                        "--cooldown-fraction", "0.3", "--shape", "cosine", "--alpha", alpha)
    assert result.exit_code == 0, result.output
    rows = parse_csv(result.stdout)
    assert len(rows) == T + 1
    assert_matches(rows, T, lambda t: expected(kind, t, T, Tw, 12, "cosine", None, float(alpha)))


@pytest.mark.parametrize("shape", list(SHAPES))
def test_values_every_shape_matches_formula(shape):
    T, Tw = 33, 3  # F*T = 6.6 -> cooldown 7
    result = run_values("--total-steps", str(T), "--warmup-steps", str(Tw), "--cooldown-fraction", "0.2",
                        "--shape", shape)
    assert result.exit_code == 0, result.output
    assert_matches(parse_csv(result.stdout), T, lambda t: expected("wsd", t, T, Tw, 7, shape))


def test_values_shape_param_expr_and_cooldown_steps():
    r = run_values("--total-steps", "20", "--cooldown-steps", "5", "--shape", "lowered_linear", "--shape-param", "0.4")
    assert r.exit_code == 0, r.output
    assert_matches(parse_csv(r.stdout), 20, lambda t: expected("wsd", t, 20, 0, 5, "lowered_linear", 0.4))
    r = run_values("--total-steps", "20", "--cooldown-steps", "5", "--shape", "expr", "--shape-expr", "1 - x**3")
    assert r.exit_code == 0, r.output
    assert_matches(parse_csv(r.stdout), 20, lambda t: 1.0 if t <= 15 else 1 - ((t - 15) / 5) ** 3)


@pytest.mark.parametrize("kind", ["wsd", "wso"])
def test_values_mid_training(kind):
    T, Tw, M = 30, 2, 8
    r = run_values("--kind", kind, "--total-steps", str(T), "--warmup-steps", str(Tw), "--cooldown-fraction", "0.25",
                   "--shape", "linear", "--alpha", "0.1", "--mid-steps", str(M), "--alpha-mid", "0.3")
    assert r.exit_code == 0, r.output
    rows = parse_csv(r.stdout)
    assert len(rows) == T + 1
    assert_matches(rows, T, lambda t: expected(kind, t, T, Tw, round(0.25 * (T - M)), "linear", None, 0.1, M, 0.3))


def test_values_prints_ten_significant_digits():
    r = run_values("--kind", "wso", "--total-steps", "4", "--warmup-steps", "3")
    assert r.stdout.splitlines()[1:] == ["0,0", "1,0.3333333333", "2,0.6666666667", "3,1", "4,1"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--total-steps", "10", "--shape", "nope"], "unknown cooldown shape 'nope'; known: linear, cosine"),
        (["--total-steps", "10", "--cooldown-fraction", "1.5"], "cooldown_fraction"),
        (["--total-steps", "10", "--cooldown-fraction", "0"], "cooldown_fraction"),
        (["--total-steps", "10", "--warmup-steps", "9", "--cooldown-steps", "2"], "warmup_steps (9) + cooldown_steps"),
        (["--total-steps", "10", "--warmup-steps", "9"], "warmup_steps (9) + round(cooldown_fraction * 10) (2)"),
        (["--total-steps", "10", "--shape-expr", "__import__('os').system('echo hi')"], "shape_expr"),
        (["--total-steps", "10", "--shape", "lowered_linear", "--shape-param", "2"], "shape_param"),
        (["--total-steps", "10", "--alpha", "-0.5"], "alpha"),
        (["--total-steps", "10", "--alpha-mid", "0.5"], "--alpha-mid needs --mid-steps"),
        (["--total-steps", "10", "--mid-steps", "10"], "mid.steps (10) must be < total_steps (10)"),
        (["--total-steps", "0"], "--total-steps"),
        (["--total-steps", "10", "--kind", "step"], "--kind"),
    ],
)
def test_values_bad_input_exits_2_naming_the_field(args, needle):
    r = run_values(*args)
    assert r.exit_code == 2
    assert r.stdout == ""  # no CSV at all
    assert needle in one_line(r.stderr)


def test_plot_writes_png_atomically(tmp_path):
    out = tmp_path / "figs" / "shapes.png"
    r = runner.invoke(app, ["plot", "--out", str(out), "--shapes", "linear,lowered_linear:0.5,sqrt",
                            "--shape-expr", "1 - x**3", "--total-steps", "50", "--warmup-steps", "5",
                            "--kinds", "wsd,cosine,wso"])
    assert r.exit_code == 0, r.output
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert sorted(p.name for p in out.parent.iterdir()) == ["shapes.png"]  # no temporary left behind
    r = runner.invoke(app, ["plot", "--out", str(tmp_path / "all.png")])  # defaults: every known shape
    assert r.exit_code == 0, r.output
    assert (tmp_path / "all.png").stat().st_size > 1000


def test_plot_draws_each_shape_and_schedule_by_its_formula(tmp_path, monkeypatch):
    """The curves handed to the renderer: shapes at 201 points of [0, 1]; WSD (warmup 2, the default last
    20% = 2 steps of decay) per shape, and warmup-cosine, over steps 0..10."""
    import wsdlab.schedules.plot as plot_module

    drawn = {}
    monkeypatch.setattr(plot_module, "render_png", lambda shapes, schedules=(), dpi=120: drawn.update(
        shapes={label: (list(xs), list(ys)) for label, xs, ys in shapes},
        schedules={label: (list(xs), list(ys)) for label, xs, ys in schedules}) or b"png")
    r = runner.invoke(app, ["plot", "--out", str(tmp_path / "s.png"), "--shapes", "linear,sqrt", "--shape-expr",
                            "1 - x**3", "--total-steps", "10", "--warmup-steps", "2", "--kinds", "wsd,cosine"])
    assert r.exit_code == 0, r.output
    xs = [i / 200 for i in range(201)]
    by_hand = {"linear": lambda x: 1 - x, "sqrt": lambda x: 1 - math.sqrt(x), "expr: 1 - x**3": lambda x: 1 - x**3}
    assert list(drawn["shapes"]) == list(by_hand)
    for label, f in by_hand.items():
        assert drawn["shapes"][label][0] == pytest.approx(xs)
        assert drawn["shapes"][label][1] == pytest.approx([f(x) for x in xs], abs=1e-12)
    steps = list(range(11))
    warmup = [0.0, 0.5]
    for label, f in by_hand.items():
        assert drawn["schedules"][f"wsd {label}"] == (steps, pytest.approx(
            warmup + [1.0] * 7 + [f((t - 8) / 2) for t in (9, 10)], abs=1e-12))
    cosine = warmup + [0.5 * (1 + math.cos(math.pi * (t - 2) / 8)) for t in range(2, 11)]
    assert drawn["schedules"]["cosine"] == (steps, pytest.approx(cosine, abs=1e-12))
    assert (tmp_path / "s.png").read_bytes() == b"png"


def test_render_png_draws_the_curves_it_is_given(monkeypatch):
    """One panel of shapes (vs x) and one of schedules (vs step), each line the given numbers and label."""
    import wsdlab.schedules.plot as plot_module

    figures = []

    class Kept(plot_module.Figure):
        def __init__(self, *args, **kwargs) -> None:
            super().__init__(*args, **kwargs)
            figures.append(self)

    monkeypatch.setattr(plot_module, "Figure", Kept)
    png = plot_module.render_png([("linear", [0.0, 0.5, 1.0], [1.0, 0.5, 0.0])], [("wsd", [0, 1, 2], [0.5, 1.0, 0.0])])
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    shapes, schedules = figures[0].axes
    assert (shapes.get_title(), schedules.get_title()) == ("Cooldown shapes", "Schedules")
    (line,) = shapes.lines
    assert line.get_label() == "linear"
    assert (list(line.get_xdata()), list(line.get_ydata())) == ([0.0, 0.5, 1.0], [1.0, 0.5, 0.0])
    (line,) = schedules.lines
    assert (line.get_label(), list(line.get_xdata()), list(line.get_ydata())) == ("wsd", [0, 1, 2], [0.5, 1.0, 0.0])


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--out", "x.jpg"], "--out must be a .png"),
        (["--out", "x.png", "--shapes", "linear,nope"], "unknown cooldown shape 'nope'"),
        (["--out", "x.png", "--shapes", "lowered_linear:abc"], "--shapes"),
        (["--out", "x.png", "--shape-expr", "open('f')"], "shape_expr"),
        (["--out", "x.png", "--total-steps", "10", "--warmup-steps", "20"], "warmup_steps"),
    ],
)
def test_plot_bad_input_exits_2_and_writes_nothing(tmp_path, args, needle):
    args = [a if a not in ("x.png", "x.jpg") else str(tmp_path / a) for a in args]
    r = runner.invoke(app, ["plot", *args])
    assert r.exit_code == 2
    assert needle in one_line(r.stderr)
    assert list(tmp_path.iterdir()) == []
