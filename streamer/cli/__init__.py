"""Console scripts: argument parsing and wiring only."""

from __future__ import annotations

import logging
import sys
from collections.abc import Callable

from streamer.core.errors import SerError


def run_main(main: Callable[[], int]) -> None:
    """Run a console script: SerError becomes one line on stderr and exit status 2."""
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    try:
        code = main()
    except SerError as exc:
        print(f"error: {exc}", file=sys.stderr)
        sys.exit(2)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        sys.exit(130)
    sys.exit(code)
