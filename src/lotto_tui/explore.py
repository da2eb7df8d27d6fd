"""``lotto-tui`` (no ``--batch``): open the explorer on a config (default: the demo preset)."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from typing import IO, Any

from .cli import EXIT_OK, EXIT_USAGE
from .commands import config_from_options, print_error


def terminal_output() -> IO[str] | None:
    """The stream the explorer draws on: stderr, as Textual does, unless only stdout
    is a terminal (``lotto-tui 2>err.log``); None when neither is."""
    for stream in (sys.__stderr__, sys.__stdout__):
        if stream is not None and _is_tty(stream):
            return stream
    return None


def _is_tty(stream: IO[str]) -> bool:
    try:
        return os.isatty(stream.fileno())
    except (OSError, ValueError):  # closed, or not backed by a file descriptor
        return False


def explore_command(opts: argparse.Namespace) -> int:
    from lotto_engine.errors import LottoError

    if not opts.preset and not opts.config:
        opts.preset = "demo"
    try:
        config = config_from_options(opts)
    except LottoError as err:
        print_error(str(err))
        return err.exit_code
    screen = terminal_output()
    if screen is None or not sys.stdin.isatty():
        print_error("the explorer needs a terminal; use --batch for scripts and pipes")
        return EXIT_USAGE

    from .explorer import create_app
    from .explorer.terminal import driver_for

    app = create_app(config, config_path=opts.config, preset=opts.preset, driver_class=driver_for(screen))
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
