"""``lotto-tui`` (no ``--batch``): open the explorer on a config (default: the demo preset)."""

from __future__ import annotations

import argparse
import signal
import sys
from typing import Any

from .cli import EXIT_OK, EXIT_USAGE
from .commands import config_from_options, print_error


def explore_command(opts: argparse.Namespace) -> int:
    from lotto_engine.errors import LottoError

    if not opts.preset and not opts.config:
        opts.preset = "demo"
    try:
        config = config_from_options(opts)
    except LottoError as err:
        print_error(str(err))
        return err.exit_code
    if not (sys.stdin.isatty() and sys.stdout.isatty()):
        print_error("the explorer needs a terminal; use --batch for scripts and pipes")
        return EXIT_USAGE

    from .explorer import create_app

    app = create_app(config, config_path=opts.config, preset=opts.preset)
    previous: dict[int, Any] = {}

    def hang_up(signum: int, frame: Any) -> None:
        # SSH dropped or `kill`: stop the running job at its next batch, then exit
        # cleanly, so the store stays consistent and the next start resumes.
        app.cancel.set()
        loop = getattr(app, "_loop", None)
        if loop is not None:
            loop.call_soon_threadsafe(app.exit, 0)

    for sig in (signal.SIGHUP, signal.SIGTERM):
        previous[sig] = signal.signal(sig, hang_up)
    try:
        app.run()
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return app.return_code or EXIT_OK
