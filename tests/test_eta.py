"""snnsim.training.eta: the arithmetic of the time estimates (no clock is read).

Expected values are worked out by hand from the stated rule: median × count,
range from the quartiles (batches) or from the fastest and slowest epoch.
"""
from __future__ import annotations

import pytest

from snnsim.training import eta


def test_window_needs_enough_batches_and_seconds():
    n, s = eta.WINDOW_BATCHES, eta.WINDOW_SECONDS
    assert not eta.window_complete(n - 1, 10 * s, batches_left=100)   # too few batches
    assert not eta.window_complete(10 * n, s - 0.1, batches_left=100)  # too short
    assert eta.window_complete(n, s, batches_left=100)
    assert not eta.window_complete(10 * n, 10 * s, batches_left=0)   # epoch over: epoch estimate


def test_from_batches_median_and_quartiles():
    # 0.1 s batches with one 1.0 s outlier (another job started): the median ignores it
    times = [0.1] * 8 + [0.2, 1.0]
    est = eta.from_batches(times, 600)
    assert est.seconds == pytest.approx(0.1 * 600)
    # quartiles of the sorted times [0.1 x8, 0.2, 1.0] (linear interpolation):
    # q1 at position 2.25 -> 0.1, q3 at position 6.75 -> 0.1
    assert est.low == pytest.approx(60.0) and est.high == pytest.approx(60.0)
    spread = eta.from_batches([1.0, 2.0, 3.0, 4.0, 5.0], 10)
    # positions 1 and 3 of [1..5]: q1 = 2, q3 = 4, median 3
    assert (spread.seconds, spread.low, spread.high) == pytest.approx((30.0, 20.0, 40.0))
    assert "5 batch times" in spread.basis
    with pytest.raises(ValueError):
        eta.from_batches([], 10)


def test_from_epochs_median_and_extremes():
    est = eta.from_epochs([50.0, 70.0, 60.0, 200.0], 10)
    # median of [50, 60, 70, 200] = 65; fastest 50, slowest 200
    assert (est.seconds, est.low, est.high) == pytest.approx((650.0, 500.0, 2000.0))
    one = eta.from_epochs([12.0], 3)
    assert (one.seconds, one.low, one.high) == pytest.approx((36.0, 36.0, 36.0))
    # one epoch of 12 s, batch times [1, 2, 3, 4, 5]: quartiles 2 and 4 around median 3,
    # so the range is widened to 12 x 2/3 = 8 s .. 12 x 4/3 = 16 s per epoch
    wide = eta.from_epochs([12.0], 3, batch_seconds=[1.0, 2.0, 3.0, 4.0, 5.0])
    assert (wide.seconds, wide.low, wide.high) == pytest.approx((36.0, 24.0, 48.0))
    # from MIN_EPOCHS_FOR_RANGE epochs on, the epochs' own spread decides
    many = eta.from_epochs([12.0] * eta.MIN_EPOCHS_FOR_RANGE, 3, batch_seconds=[1.0, 5.0])
    assert (many.low, many.high) == pytest.approx((36.0, 36.0))
    with pytest.raises(ValueError):
        eta.from_epochs([], 3)


@pytest.mark.parametrize("seconds, text", [(42.0, "42.0 s"), (119.9, "119.9 s"),
                                           (210.0, "3.5 min"), (7560.0, "2.1 h")])
def test_format_seconds(seconds, text):
    assert eta.format_seconds(seconds) == text


def test_format_estimate_states_the_range():
    est = eta.Estimate(210.0, 174.0, 264.0, "test")
    assert eta.format_estimate(est) == "about 3.5 min (2.9 min-4.4 min)"
