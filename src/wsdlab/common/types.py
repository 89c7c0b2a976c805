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
