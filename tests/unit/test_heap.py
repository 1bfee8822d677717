"""bot/heap.py: startup's objects go to the permanent generation once per process."""

from __future__ import annotations

import subprocess
import sys


def test_the_startup_heap_is_frozen_once_per_process() -> None:
    # in a child: freezing the test runner's own heap would outlive this test
    code = (
        "import gc\n"
        "from bot.heap import settle_startup_heap\n"
        "assert gc.get_freeze_count() == 0\n"
        "first, second = settle_startup_heap(), settle_startup_heap()\n"
        "print(first, second, gc.get_freeze_count() > 0)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60)
    assert out.stdout.split() == ["True", "False", "True"]
