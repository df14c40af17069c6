"""Entry point: `python3 -m bench_load` (from `scripts/`) or
`python3 scripts/bench_load` (the directory itself)."""

import os
import sys

if not __package__:
    # Run as a directory: its parent must be importable for `bench_load.*`.
    sys.path.insert(0, os.path.dirname(os.path.dirname(os.path.abspath(__file__))))

from bench_load.cli import main  # noqa: E402

sys.exit(main())
