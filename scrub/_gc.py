"""The cyclic garbage collector paused while scrub makes many short-lived objects.

Context: a loaded model is ~500 000 objects the cyclic collector tracks. A scrub makes tens of
thousands of small ones (draws, per-example lists, the generated examples a result keeps: 3000
rows of dicts at n = 1000), enough to set off a full collection every few runs, and a full
collection walks every tracked object, the model's included: 0.1–0.2 s each on the induction
model at n = 1000, against a run of ~0.6 s. With the collector off for the run, no collection
runs inside it, and the run's temporaries are freed by reference counting before any
collection sees them, so they no longer push the next full one closer. Patching grids pause it
while their cells, trees and per-cell results are made (0.2 s of the 0.33 s that building the
IOI-toy activation grid's 672 trees took with it on).

Pitfall: this must not change the interpreter's state for the caller, so the collector is
turned back on at exit exactly if it was on at entry (a caller that turned it off keeps it off;
nested uses leave it to the outermost), and nothing is frozen (``gc.freeze`` after loading a
model was measured and not adopted: it changes the process's GC state for good). What a run
holds has no garbage cycles worth collecting mid-run; any it makes are collected after it.
"""

from __future__ import annotations

import contextlib
import gc
from collections.abc import Iterator

__all__ = ["no_gc"]


@contextlib.contextmanager
def no_gc() -> Iterator[None]:
    """The cyclic garbage collector off inside, restored on exit (also a decorator)."""
    was = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was:
            gc.enable()
