"""The synthetic tables take their schedule shapes from `wsdlab.schedules` (values worked out by hand)."""

from __future__ import annotations

import math

import pytest

from wsdlab.report.synthetic import shape_schedule, synthetic_tables


def test_schedules_table_holds_the_shapes_of_wsdlab_schedules() -> None:
    """Stable 80 steps then a 20-step cooldown: step 95 is x = 15 / 20 = 0.75 into it."""
    rows = {(r["shape"], r["step"]): r["lr_factor"] for r in synthetic_tables(seed=0)["schedules"]}
    assert rows[("sqrt", 95)] == pytest.approx(1 - math.sqrt(0.75), abs=1e-15)  # 0.1339745962155614
    assert rows[("square", 95)] == pytest.approx(1 - 0.75**2, abs=1e-15)  # 0.4375
    assert rows[("cosine", 90)] == pytest.approx(0.5, abs=1e-15)  # (1 + cos(pi / 2)) / 2
    assert rows[("mirror_cosine", 90)] == pytest.approx(0.5, abs=1e-15)  # 2 (1 - 1/2) - 1/2
    assert rows[("lowered_linear-0.7", 85)] == pytest.approx(0.7 * 0.75, abs=1e-15)  # p (1 - x), x = 0.25
    assert rows[("linear", 80)] == 1.0 and rows[("linear", 100)] == 0.0  # end of the stable phase; end


def test_shape_schedule_reads_the_parameter_from_the_label() -> None:
    schedule = shape_schedule("lowered_linear-0.5", stable_steps=10, cooldown_steps=4)
    assert [schedule(t) for t in (10, 11, 13, 14)] == pytest.approx([1.0, 0.5 * 0.75, 0.5 * 0.25, 0.0], abs=1e-15)
