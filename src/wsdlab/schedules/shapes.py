"""Cooldown shapes: x in [0,1] (the fraction of the cooldown done) -> factor in [0,1].

The built-ins are the shapes of Dremov et al., *Training Dynamics of the Cooldown Stage in
Warmup-Stable-Decay*. More shapes come from `register_shape` (a registry that rejects duplicates)
or from a config expression (`shape: expr`, `shape_expr: "1 - x**3"`, see `expr.py`).
"""

from __future__ import annotations

import math
from collections.abc import Callable

from wsdlab.common.errors import ConfigError
from wsdlab.schedules.expr import Shape, compile_shape_expr

ShapeFactory = Callable[[float | None], Shape]  # shape_param (None = the shape's default) -> shape

LOWERED_LINEAR_DEFAULT_P = 0.7


def linear(x: float) -> float:
    """Linear cooldown: 1 - x."""
    return 1.0 - x


def cosine(x: float) -> float:
    """Cosine cooldown: (1 + cos(pi x)) / 2."""
    return 0.5 * (1.0 + math.cos(math.pi * x))


def mirror_cosine(x: float) -> float:
    """Mirror cosine (the cosine reflected about the linear): 2(1 - x) - (1 + cos(pi x)) / 2."""
    return 2.0 * (1.0 - x) - 0.5 * (1.0 + math.cos(math.pi * x))


def square(x: float) -> float:
    """Square cooldown: 1 - x^2."""
    return 1.0 - x * x


def one_minus_sqrt(x: float) -> float:
    """1-sqrt cooldown: 1 - sqrt(x)."""
    return 1.0 - math.sqrt(x)


def lowered_linear(p: float) -> Shape:
    """Lowered linear cooldown: p (1 - x), an immediate drop to p then linear to 0."""

    def shape(x: float) -> float:
        return p * (1.0 - x)

    return shape


def _without_param(name: str, shape: Shape) -> ShapeFactory:
    def factory(param: float | None) -> Shape:
        if param is not None:
            raise ConfigError(f"shape_param: shape '{name}' takes no parameter (got {param})")
        return shape

    return factory


def _lowered_linear_factory(param: float | None) -> Shape:
    p = LOWERED_LINEAR_DEFAULT_P if param is None else float(param)
    if not 0.0 <= p <= 1.0:
        raise ConfigError(f"shape_param: lowered_linear needs 0 <= p <= 1, got {param}")
    return lowered_linear(p)


_FACTORIES: dict[str, ShapeFactory] = {
    "linear": _without_param("linear", linear),
    "cosine": _without_param("cosine", cosine),
    "mirror_cosine": _without_param("mirror_cosine", mirror_cosine),
    "square": _without_param("square", square),
    "sqrt": _without_param("sqrt", one_minus_sqrt),
    "lowered_linear": _lowered_linear_factory,
}
BUILTIN_SHAPES: tuple[str, ...] = tuple(_FACTORIES)
EXPR = "expr"  # the shape name whose formula is `shape_expr`
SHAPE_NAMES: list[str] = list(BUILTIN_SHAPES)  # built-ins then registered shapes (not 'expr'); kept in sync
_GRID = [i / 100 for i in range(101)]


def register_shape(name: str, factory: ShapeFactory) -> None:
    """Make `factory(shape_param)` available as shape `name`; a name already taken raises ValueError."""
    if not isinstance(name, str) or not name.isidentifier():
        raise ValueError(f"shape name must be an identifier, got {name!r}")
    if name in _FACTORIES or name == EXPR:
        raise ValueError(f"shape '{name}' is already registered")
    if not callable(factory):
        raise ValueError(f"shape '{name}': factory must be callable, got {type(factory).__name__}")
    _FACTORIES[name] = factory
    SHAPE_NAMES.append(name)


def is_known_shape(name: str) -> bool:
    """True for built-in, registered and 'expr' shape names."""
    return name == EXPR or name in _FACTORIES


def _check_on_grid(shape: Shape, label: str) -> None:
    """A user shape must be finite and within [0,1] on x = 0, 0.01, ..., 1 (it scales the LR)."""
    for x in _GRID:
        y = shape(x)
        if not isinstance(y, (int, float)) or not math.isfinite(y) or not -1e-12 <= y <= 1.0 + 1e-12:
            raise ConfigError(f"{label} must map [0,1] into [0,1]; at x={x} it gives {y}")


def get_shape(name: str, param: float | None = None, expr: str | None = None) -> Shape:
    """The shape called `name` with parameter `param`; `expr` is the formula of shape 'expr'."""
    if name == EXPR:
        if expr is None:
            raise ConfigError("shape 'expr' needs shape_expr, e.g. shape_expr: '1 - x**2'")
        if param is not None:
            raise ConfigError(f"shape_param: shape 'expr' takes no parameter (got {param})")
        shape = compile_shape_expr(expr)
        _check_on_grid(shape, f"shape_expr {expr!r}")
        return shape
    if expr is not None:
        raise ConfigError(f"shape_expr is only used with shape 'expr' (shape is '{name}')")
    factory = _FACTORIES.get(name)
    if factory is None:
        known = ", ".join(SHAPE_NAMES)
        raise ConfigError(f"shape: unknown cooldown shape '{name}'; known: {known}, expr (with shape_expr)")
    shape = factory(param)
    if name not in BUILTIN_SHAPES:
        if not callable(shape):
            raise ValueError(f"shape '{name}': its factory returned {type(shape).__name__}, not a function")
        _check_on_grid(shape, f"shape '{name}'")
    return shape
