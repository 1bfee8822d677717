"""The store does not pull numpy into every process (sqlite-utils would import it when installed; numpy is there
for the charts only), and numpy still imports later for a chart."""

from __future__ import annotations

import subprocess
import sys


def test_the_store_and_the_serve_stack_start_without_numpy_which_stays_importable() -> None:
    code = (
        "import sys\n"
        "import bot.slack.serve, bot.slack.app, bot.slack.background\n"
        "from bot.store import Store\n"
        "store = Store(':memory:')\n"
        "store.db['t'].insert({'a': 1})\n"
        "print(sys.modules.get('numpy') is not None)\n"
        "import numpy\n"
        "print(bool(numpy.__version__), list(store.db['t'].rows))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    assert out.stdout.split("\n")[:2] == ["False", "True [{'a': 1}]"]
