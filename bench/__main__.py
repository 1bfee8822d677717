"""`python -m bench [--quick] [--only ...] [--json PATH]`: see bench/run.py."""

import sys

from bench.run import main

sys.exit(main())
