"""How long the rest of a training run will take, with its uncertainty.

On a machine shared with other work, the time of a batch follows the load,
and a few batches say little about the next hour. So the estimate

- waits for a window of at least :data:`WINDOW_BATCHES` timed batches *and*
  :data:`WINDOW_SECONDS` seconds of them (an epoch shorter than that gets its
  first estimate when it ends);
- uses the median batch time, and gives a range from the lower and upper
  quartiles of the batch times in the window (the middle half of them);
- is renewed after every epoch from the measured epoch times (training and
  evaluation together): median × epochs left, range from the fastest to the
  slowest epoch so far (while fewer than three epochs are timed, at least as
  wide as the batch times' middle half);
- says that it holds only while the load stays as it was (the load average is
  printed with it).

Within an epoch, tqdm's bar shows its own running estimate of the epoch's rest.
The functions here are pure arithmetic on measured durations (tested in
``tests/test_eta.py``), so nothing here reads a clock.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import numpy as np

#: The first estimate needs at least this many timed batches ...
WINDOW_BATCHES = 10
#: ... and at least this many seconds of them (unless the epoch ends first).
WINDOW_SECONDS = 30.0
#: Quantiles of the batch times that bound the first estimate's range.
RANGE_QUANTILES = (0.25, 0.75)
#: With fewer epochs timed than this, the range from epoch times is widened by
#: the relative spread of the batch times (one epoch gives no spread of its own).
MIN_EPOCHS_FOR_RANGE = 3


@dataclass(frozen=True)
class Estimate:
    """``seconds`` (the central estimate) within ``low``..``high``; ``basis``
    says what it was computed from."""

    seconds: float
    low: float
    high: float
    basis: str


def window_complete(timed_batches: int, timed_seconds: float, batches_left: int) -> bool:
    """True once the timed batches are enough for a first estimate: at least
    WINDOW_BATCHES batches and WINDOW_SECONDS seconds, with batches of the epoch
    still to come (at the epoch's end the estimate from epoch times follows)."""
    if batches_left <= 0:
        return False
    return timed_batches >= WINDOW_BATCHES and timed_seconds >= WINDOW_SECONDS


def from_batches(batch_seconds, batches_left: int) -> Estimate:
    """The time of ``batches_left`` more batches: median batch time × batches_left,
    range from the RANGE_QUANTILES of the batch times."""
    t = np.asarray(batch_seconds, dtype=float)
    if t.size == 0:
        raise ValueError("no batch times")
    lo, hi = np.quantile(t, RANGE_QUANTILES)
    med = float(np.median(t))
    return Estimate(med * batches_left, float(lo) * batches_left, float(hi) * batches_left,
                    f"median of {t.size} batch times, range: their middle half")


def from_epochs(epoch_seconds, epochs_left: int, batch_seconds=()) -> Estimate:
    """The time of ``epochs_left`` more epochs: median epoch time × epochs_left,
    range from the fastest to the slowest epoch so far. With fewer than
    MIN_EPOCHS_FOR_RANGE epochs and some ``batch_seconds``, the range is widened
    to at least the median × the batch times' quartiles / their median."""
    t = np.asarray(epoch_seconds, dtype=float)
    if t.size == 0:
        raise ValueError("no epoch times")
    med = float(np.median(t))
    low, high = float(t.min()), float(t.max())
    basis = f"median of {t.size} epoch time{'s' if t.size > 1 else ''}, range: fastest to slowest"
    b = np.asarray(batch_seconds, dtype=float)
    if t.size < MIN_EPOCHS_FOR_RANGE and b.size:
        q_lo, q_hi = np.quantile(b, RANGE_QUANTILES) / np.median(b)
        low, high = min(low, med * float(q_lo)), max(high, med * float(q_hi))
        basis += ", widened by the spread of the batch times"
    return Estimate(med * epochs_left, low * epochs_left, high * epochs_left, basis)


def format_seconds(s: float) -> str:
    """``42.0 s``, ``3.5 min``, ``2.1 h``."""
    if s < 120:
        return f"{s:.1f} s"
    if s < 7200:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def format_estimate(est: Estimate) -> str:
    """``"about 3.5 min (2.9 min-4.4 min)"``."""
    return (f"about {format_seconds(est.seconds)} "
            f"({format_seconds(est.low)}-{format_seconds(est.high)})")


def load_note() -> str:
    """``"load 3.1 on 2 CPUs"``, or ``""`` where the load average is unknown."""
    try:
        load = os.getloadavg()[0]
    except (OSError, AttributeError):   # pragma: no cover - platforms without getloadavg
        return ""
    return f"load {load:.1f} on {os.cpu_count() or 1} CPUs"


__all__ = ["Estimate", "MIN_EPOCHS_FOR_RANGE", "RANGE_QUANTILES", "WINDOW_BATCHES",
           "WINDOW_SECONDS", "format_estimate", "format_seconds", "from_batches", "from_epochs",
           "load_note", "window_complete"]
