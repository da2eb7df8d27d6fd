"""``lotto-tui`` (no ``--batch``): open the explorer on a config.

Which config: ``--preset``, ``--config`` and ``--set`` name one, and any of them wins.
With none of them, the explorer reopens the experiment last opened or run in the
store (``<store>/explorer-state.json``), with its stored config; ``--store`` picks
the store and ``--device`` still applies. A store with nothing remembered, or a
remembered experiment that is gone or no longer loads, opens the demo preset.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path
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


def explorer_options(opts: argparse.Namespace) -> dict[str, Any]:
    """The explorer's config and :func:`~lotto_tui.explorer.create_app` options for the
    command line ``opts``. Raises LottoError for a bad config."""
    from lotto_engine.config import load_config
    from lotto_engine.errors import ConfigError
    from lotto_engine.naming import DEFAULTS, name_origin

    explicit = bool(opts.preset or opts.config or opts.overrides)
    if not explicit:
        opts.preset = "demo"
    config = config_from_options(opts)
    if not explicit:
        found = reopened(config, device=getattr(opts, "device", None))
        if found is not None:
            config, experiment_id = found
            return {"config": config, "reopen": experiment_id, "origin": name_origin(config)}
    origin: tuple[str, Any]
    if config.run.name:
        origin = name_origin(config)
    elif opts.preset:
        origin = (opts.preset, None)
    elif opts.config:
        try:  # the file as written: what --set changed shows in the name
            origin = (Path(opts.config).stem, load_config(file=opts.config))
        except ConfigError:
            origin = (Path(opts.config).stem, None)
    else:
        origin = (DEFAULTS, None)
    return {"config": config, "config_path": opts.config, "preset": opts.preset, "origin": origin}


def reopened(config: Any, *, device: str | None = None) -> tuple[Any, int] | None:
    """(stored config, id) of the experiment remembered in ``config``'s store, in that
    store and on ``device`` when given; None when nothing (valid) is remembered."""
    from lotto_engine.errors import LottoError
    from lotto_engine.store import DB_NAME, Store
    from lotto_engine.views.progress import experiment_config

    from .explorer.state import remembered

    root = Path(config.run.store)
    memory = remembered(root)
    if memory is None or not (root / DB_NAME).is_file():
        return None
    try:
        with Store(root, create=False) as store:
            record = store.experiment(memory.experiment_id)
        if record.identity != memory.identity:  # the store was rebuilt: another experiment
            return None
        stored = experiment_config(record)
    except LottoError:
        return None
    run = {"store": config.run.store, **({"device": config.run.device} if device is not None else {})}
    return stored.model_copy(update={"run": stored.run.model_copy(update=run)}), record.id


def explore_command(opts: argparse.Namespace) -> int:
    from lotto_engine.errors import LottoError

    try:
        options = explorer_options(opts)
    except LottoError as err:
        print_error(str(err))
        return err.exit_code
    screen = terminal_output()
    if screen is None or not sys.stdin.isatty():
        print_error("the explorer needs a terminal; use --batch for scripts and pipes")
        return EXIT_USAGE

    from .explorer import create_app
    from .explorer.terminal import driver_for

    app = create_app(options.pop("config"), **options, driver_class=driver_for(screen))
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
