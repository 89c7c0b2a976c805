"""Measurements of the same weights on the same batches, computed once per process.

A study measures many points twice: the first sampled step of every cooldown branch is its parent's
final checkpoint (sharpness at the branch point), and every cooldown's trajectory walks the same
stable-phase iterates of the base run (the loss and gradient at each). A measurement is a function
of the weights, the batches and the settings only, so it is keyed by a digest of exactly those
(parameter names, shapes, dtypes and bytes; the model's class and config; the batches' bytes): a hit
is the very result the computation would return, bit for bit. Results are kept up to a byte budget
(least recently used first out); anything larger is simply recomputed.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Sequence
from typing import Any, TypeVar

import torch
from torch import Tensor, nn

T = TypeVar("T")
MAX_BYTES = 512 << 20  # results (e.g. gradients of a tiny model: 7 MB each) kept per process


def _update_tensor(h: Any, t: Tensor) -> None:
    t = t.detach()
    h.update(f"{tuple(t.shape)}|{t.dtype}|".encode())
    flat = t.contiguous().reshape(-1)
    if flat.numel():
        h.update(flat.view(torch.uint8).cpu().numpy().data)


def tensors_digest(tensors: Iterable[Tensor]) -> str:
    """blake2b of the shapes, dtypes and bytes of `tensors`, in order."""
    h = hashlib.blake2b(digest_size=20)
    for t in tensors:
        _update_tensor(h, t)
    return h.hexdigest()


def model_digest(model: nn.Module, *, mode: bool = True) -> str:
    """Digest of what a forward pass depends on: class, config, every named parameter and buffer, and
    (`mode`) whether it is in training mode; pass mode=False for measurements that set the mode themselves."""
    h = hashlib.blake2b(digest_size=20)
    h.update(f"{type(model).__module__}.{type(model).__qualname__}|{getattr(model, 'cfg', None)!r}|"
             f"{model.training if mode else ''}".encode())
    for name, t in [*model.named_parameters(), *model.named_buffers()]:
        h.update(name.encode())
        _update_tensor(h, t)
    return h.hexdigest()


def batches_digest(batches: Sequence[Any]) -> str:
    """Digest of a list of batches (LM tensors, (images, labels) tuples, masked batches)."""
    def leaves(b: Any) -> Iterable[Tensor]:
        if isinstance(b, Tensor):
            yield b
        else:
            for part in b:
                yield from leaves(part)

    h = hashlib.blake2b(digest_size=20)
    for b in batches:
        h.update(type(b).__name__.encode())
        h.update(tensors_digest(leaves(b)).encode())
    return h.hexdigest()


def function_key(fn: Callable[..., Any]) -> str | None:
    """A stable name of a module-level function (None for lambdas, closures and bound methods)."""
    module, qualname = getattr(fn, "__module__", None), getattr(fn, "__qualname__", None)
    if not module or not qualname or "<" in qualname or hasattr(fn, "__self__"):
        return None
    return f"{module}.{qualname}"


def nbytes(value: Any) -> int:
    """Bytes held by the tensors of a result (nested lists/tuples/dicts); other values count as 0."""
    if isinstance(value, Tensor):
        return value.element_size() * value.numel()
    if isinstance(value, (list, tuple)):
        return sum(nbytes(v) for v in value)
    if isinstance(value, dict):
        return sum(nbytes(v) for v in value.values())
    return 0


class Memo:
    """Thread-safe LRU of results keyed by content digests, bounded by the bytes of their tensors."""

    def __init__(self, max_bytes: int = MAX_BYTES) -> None:
        self.max_bytes = max_bytes
        self._items: OrderedDict[tuple[str, ...], tuple[Any, int]] = OrderedDict()
        self._bytes = 0
        self._lock = threading.Lock()
        self.hits = self.misses = 0

    def get_or_compute(self, key: tuple[str, ...], compute: Callable[[], T]) -> T:
        with self._lock:
            if key in self._items:
                self._items.move_to_end(key)
                self.hits += 1
                return self._items[key][0]
            self.misses += 1
        value = compute()
        size = nbytes(value)
        if size <= self.max_bytes:
            with self._lock:
                if key not in self._items:
                    self._items[key] = (value, size)
                    self._bytes += size
                while self._bytes > self.max_bytes and self._items:
                    _, (_, dropped) = self._items.popitem(last=False)
                    self._bytes -= dropped
        return value

    def clear(self) -> None:
        with self._lock:
            self._items.clear()
            self._bytes = 0
            self.hits = self.misses = 0


MEMO = Memo()
