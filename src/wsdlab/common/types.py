"""Type aliases shared by several layers, each declared once here (torch is imported for type checking only).

`Schedule` is owned by `wsdlab.schedules` (`Schedule = Callable[[int], float]`) and imported from there.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, Union

if TYPE_CHECKING:
    from torch import Tensor

Row = dict[str, Any]  # one row of a table (written as CSV by wsdlab.analysis.tables.write_table)
Tables = dict[str, list[Row]]  # table name (CSV file name without .csv) -> rows
# LM: LongTensor (B, T+1) of token ids; vision: (images (B,C,H,W) float32, labels (B,) long)
Batch = Union["Tensor", Sequence["Tensor"]]


class MaskedBatch(tuple):  # type: ignore[type-arg]
    """An LM batch with a loss mask (supervised fine-tuning): `(tokens (B, T+1) long, mask (B, T) float)`.

    `mask[b, i]` = 1 where target token `tokens[b, i + 1]` is scored (a response token), else 0. A tuple
    subclass, so code that moves batches (`type(batch)(parts)`) keeps the type.
    """

    @property
    def tokens(self) -> "Tensor":
        return self[0]

    @property
    def mask(self) -> "Tensor":
        return self[1]
