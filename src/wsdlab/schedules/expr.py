"""Cooldown shapes written as arithmetic expressions of x (`shape_expr: "1 - x**3"`).

The text is parsed with `ast` and compiled into nested closures from a whitelist: numbers, the
variable x, the constant pi, + - * / **, unary + and -, and the functions sqrt cos sin exp log.
Nothing else is accepted (names, attributes, calls of other functions, subscripts, ...), and
nothing is ever passed to eval(), so a config file cannot run code.
"""

from __future__ import annotations

import ast
import math
import operator
from collections.abc import Callable

from wsdlab.common.errors import ConfigError

Shape = Callable[[float], float]
_Node = Callable[[float], float]

MAX_EXPR_CHARS = 500  # keeps nesting (and so recursion while compiling) small
_FUNCTIONS: dict[str, Callable[[float], float]] = {
    "sqrt": math.sqrt,
    "cos": math.cos,
    "sin": math.sin,
    "exp": math.exp,
    "log": math.log,
}
_CONSTANTS: dict[str, float] = {"pi": math.pi}
# math.pow on floats: no giant integer powers (9**9**9 overflows at once) and no complex results.
_BINARY: dict[type[ast.operator], Callable[[float, float], float]] = {
    ast.Add: operator.add,
    ast.Sub: operator.sub,
    ast.Mult: operator.mul,
    ast.Div: operator.truediv,
    ast.Pow: math.pow,
}
_UNARY: dict[type[ast.unaryop], Callable[[float], float]] = {ast.USub: operator.neg, ast.UAdd: operator.pos}
_ALLOWED = "numbers, x, pi, + - * / **, unary -, and sqrt cos sin exp log"


def _reject(text: str, why: str) -> ConfigError:
    return ConfigError(f"invalid shape_expr {text!r}: {why} (allowed: {_ALLOWED})")


def _compile_node(node: ast.AST, text: str) -> _Node:
    """Turn one whitelisted AST node into a closure of x; anything else raises ValueError."""
    if isinstance(node, ast.Constant) and type(node.value) in (int, float):
        try:
            value = float(node.value)
        except OverflowError:
            raise _reject(text, f"number {node.value} is too large") from None
        return lambda x: value
    if isinstance(node, ast.Name):
        if node.id == "x":
            return lambda x: x
        if node.id in _CONSTANTS:
            const = _CONSTANTS[node.id]
            return lambda x: const
        raise _reject(text, f"unknown name '{node.id}'")
    if isinstance(node, ast.BinOp) and type(node.op) in _BINARY:
        op2 = _BINARY[type(node.op)]
        left, right = _compile_node(node.left, text), _compile_node(node.right, text)
        return lambda x: op2(left(x), right(x))
    if isinstance(node, ast.UnaryOp) and type(node.op) in _UNARY:
        op1 = _UNARY[type(node.op)]
        operand = _compile_node(node.operand, text)
        return lambda x: op1(operand(x))
    if isinstance(node, ast.Call):
        if not isinstance(node.func, ast.Name) or node.func.id not in _FUNCTIONS:
            name = node.func.id if isinstance(node.func, ast.Name) else ast.unparse(node.func)
            raise _reject(text, f"function '{name}' is not allowed")
        if len(node.args) != 1 or node.keywords or isinstance(node.args[0], ast.Starred):
            raise _reject(text, f"{node.func.id}() takes exactly one argument")
        fn = _FUNCTIONS[node.func.id]
        arg = _compile_node(node.args[0], text)
        return lambda x: fn(arg(x))
    raise _reject(text, f"'{ast.unparse(node)}' ({type(node).__name__}) is not allowed")


def compile_shape_expr(text: str) -> Shape:
    """Parse `text` (an expression of x) into a shape; syntax or whitelist violations raise ValueError.

    The returned shape raises ValueError naming the expression when it fails or is not finite at x.
    """
    if not isinstance(text, str) or not text.strip():
        raise ConfigError("shape_expr must be a non-empty expression of x, e.g. '1 - x**2'")
    if len(text) > MAX_EXPR_CHARS:
        raise ConfigError(f"shape_expr is too long ({len(text)} > {MAX_EXPR_CHARS} characters)")
    try:
        tree = ast.parse(text.strip(), mode="eval")
    except (SyntaxError, ValueError, RecursionError, MemoryError) as e:
        raise _reject(text, f"not an expression ({type(e).__name__})") from None
    body = _compile_node(tree.body, text)

    def shape(x: float) -> float:
        try:
            y = body(float(x))
        except (ArithmeticError, ValueError) as e:
            raise ConfigError(f"shape_expr {text!r} fails at x={x}: {e}") from None
        if not math.isfinite(y):
            raise ConfigError(f"shape_expr {text!r} is not finite at x={x}")
        return y

    return shape
