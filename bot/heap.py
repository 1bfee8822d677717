"""The cyclic garbage collector in a process that reads large fleets.

What is loaded at startup (modules, classes, compiled patterns, the check registry) lives as long as the
process, yet every full collection walks all of it again. A run over a large fleet allocates enough (2.7 MB of
JSON at 2,000 agents and 200,000 tasks) to trigger a full collection mid-run, and re-walking the startup heap is
most of its cost. `settle_startup_heap()` moves everything alive at that point into the permanent generation
(`gc.freeze`, meant for exactly this in long-lived processes), so later collections look only at what came
after. Nothing frozen is freed later; startup objects never are anyway.
"""

from __future__ import annotations

import gc


def settle_startup_heap() -> bool:
    """Freeze what startup built; once per process (later calls do nothing: the heap is frozen already). True when
    this call froze it."""
    if gc.get_freeze_count():
        return False
    gc.freeze()
    return True
