"""Hand-made study tables shared by the claims tests (test_claims.py, test_claims_catalogue.py)."""

from __future__ import annotations

from wsdlab.common.types import Row


def val_curves(finals: dict[str, list[float]]) -> list[Row]:
    """val_curves rows: each shape's seeds end at the given validation losses (step 40; step 0 higher)."""
    out = []
    for shape, losses in finals.items():
        for seed, v in enumerate(losses):
            out += [{"shape": shape, "seed": seed, "step": 0, "val_loss": 9.0},
                    {"shape": shape, "seed": seed, "step": 40, "val_loss": v}]
    return out
