"""Analyses register by name (lm-evaluation-harness style); duplicates are rejected."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register_analysis(name: str) -> Callable[[F], F]:
    """Decorator: make `fn` available as `get_analysis(name)`."""

    def deco(fn: F) -> F:
        if name in _REGISTRY and _REGISTRY[name] is not fn:
            raise ValueError(f"analysis '{name}' is already registered by {_REGISTRY[name].__module__}")
        _REGISTRY[name] = fn
        return fn

    return deco


def get_analysis(name: str) -> Callable[..., Any]:
    if name not in _REGISTRY:
        raise ValueError(f"unknown analysis '{name}'; known: {', '.join(sorted(_REGISTRY)) or '(none)'}")
    return _REGISTRY[name]


def analysis_names() -> list[str]:
    return sorted(_REGISTRY)
