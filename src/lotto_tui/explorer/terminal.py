"""Draw on whichever standard stream is the terminal.

Textual's Linux driver always writes to stderr, so ``lotto-tui 2>err.log`` would paint
the whole screen into the log and leave the terminal blank. This driver writes to the
stream it is given, and measures that terminal.
"""

from __future__ import annotations

import os
import sys
from typing import IO, Any

from textual.driver import Driver


def driver_for(stream: IO[str]) -> type[Driver] | None:
    """A driver class that draws on ``stream``; None (Textual's own) for stderr or off Linux."""
    if stream is sys.__stderr__ or sys.platform == "win32":
        return None
    from textual.drivers.linux_driver import LinuxDriver

    class StreamDriver(LinuxDriver):
        def __init__(self, app: Any, **options: Any) -> None:
            super().__init__(app, **options)
            self._file = stream

        def _get_terminal_size(self) -> tuple[int, int]:
            try:
                size = os.get_terminal_size(stream.fileno())
            except OSError:
                return super()._get_terminal_size()
            return size.columns or 80, size.lines or 25

    return StreamDriver
