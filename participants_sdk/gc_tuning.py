"""`tune_gc()`: Python's cyclic garbage collector set for a process that handles messages all day.

Such a process allocates thousands of container objects a second, nearly all freed at once by
reference counting, so the default young-generation collection every 700 allocations mostly
finds nothing and only costs CPU. Collections 70 times rarer (and rarer full ones, whose pause
grows with everything alive) took 17 to 28% off the daemon's CPU per step; the price is a longer
pause when one does run. The measurements are in docs/performance.md.
"""

from __future__ import annotations

import gc
from typing import Final

GC_THRESHOLDS: Final = (50_000, 20, 100)


def tune_gc() -> None:
    """Freeze what exists now and collect less often; call once, after start-up's imports."""
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
