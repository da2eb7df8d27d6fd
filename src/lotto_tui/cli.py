"""Command line entry point: ``lotto-tui``.

Parsing imports nothing heavy (no torch, no pydantic, no textual), so ``--help``
answers at once; each command imports what it needs when it runs.

    lotto-tui [--preset P | --config F] [--set K=V ...] [--store DIR] [--device D]   (explorer)
    lotto-tui --batch [--preset P | --config F] [--set K=V ...] [--store DIR] [--device D]
    lotto-tui config [--preset P | --config F] [--set K=V ...] [--reference]
    lotto-tui export [--store DIR] [--experiment ID] --format json|csv [--out FILE]
    lotto-tui report [--store DIR] [--experiment ID [--experiment ID2]] --out DIR [--format png,svg,pdf]
    lotto-tui experiments [--store DIR]
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

PRESET_NAMES = ("demo", "reviewer", "seed-paper")  # checked against lotto_engine.config.PRESETS in tests
COMMANDS = ("config", "export", "experiments", "report")

EXIT_OK, EXIT_FAILED_RUNS, EXIT_USAGE, EXIT_INTERNAL, EXIT_INTERRUPTED = 0, 1, 2, 70, 130
#: 128 + SIGPIPE: the reader of standard output went away, as a shell reports it.
EXIT_OUTPUT_CLOSED = 141
DEBUG_ENV = "LOTTO_TUI_DEBUG"
PATH_OPTIONS = ("config", "store", "out")  # options naming a file or folder


def _config_source(parser: argparse.ArgumentParser) -> None:
    source = parser.add_mutually_exclusive_group()
    source.add_argument("--preset", choices=PRESET_NAMES, help="start from a named preset")
    source.add_argument("--config", metavar="FILE", help="start from a TOML config file")
    parser.add_argument(
        "--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
        help="override one key, e.g. --set train.lr=0.05 --set grid.sparsities=[0.5,0.9] (repeatable)",
    )


def main_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lotto-tui",
        description="Lottery-ticket pruning experiments: activations x pruning methods x sparsities.",
        epilog=(
            "other commands: lotto-tui config | export | experiments | report (each has --help). "
            "Exit codes: 0 ok, 1 a run failed or diverged, 2 bad input, 70 internal error, "
            "130 interrupted, 141 standard output closed (the reader went away)."
        ),
    )
    parser.add_argument(
        "--batch", action="store_true",
        help="run the grid headless (scripts, CI, nohup); without it the explorer opens (default preset: demo)",
    )
    _config_source(parser)
    parser.add_argument("--store", metavar="DIR", help="results folder (default: run.store, ./lotto-runs)")
    parser.add_argument("--device", metavar="D", help="auto | cpu | cuda | cuda:N | mps (sets run.device)")
    return parser


def config_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lotto-tui config",
        description="Print a complete, commented TOML config (every key, its meaning and default).",
    )
    _config_source(parser)
    parser.add_argument("--reference", action="store_true", help="print the key reference as Markdown")
    return parser


def export_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lotto-tui export", description="Export an experiment's runs as JSON or CSV."
    )
    parser.add_argument("--store", metavar="DIR", default="lotto-runs", help="results folder (default ./lotto-runs)")
    parser.add_argument("--experiment", type=int, metavar="ID", help="experiment id (default: the latest)")
    parser.add_argument("--format", choices=("json", "csv"), required=True)
    parser.add_argument("--out", metavar="FILE", help="write here instead of standard output")
    parser.add_argument("--history", action="store_true", help="include every attempt, not only the latest")
    return parser


def report_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="lotto-tui report",
        description=(
            "Write paper figures (accuracy vs sparsity, mask vs target sparsity, stability vs sparsity, "
            "training curves per activation, per-layer sparsity per method) and report.md (config, provenance, "
            "tables of mean ± 95% CI over seeds, flags, every figure linked) into a folder. Two --experiment "
            "options compare: tables side by side with B − A, figures overlaid."
        ),
    )
    parser.add_argument("--store", metavar="DIR", default="lotto-runs", help="results folder (default ./lotto-runs)")
    parser.add_argument("--experiment", type=int, action="append", metavar="ID",
                        help="experiment id (default: the latest); give it twice to compare two (B against A)")
    parser.add_argument("--out", metavar="DIR", required=True, help="folder to write into (made when missing)")
    parser.add_argument("--format", default="png", metavar="png,svg,pdf",
                        help="figure formats, comma-separated (default png)")
    return parser


def experiments_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="lotto-tui experiments", description="List the experiments in a store.")
    parser.add_argument("--store", metavar="DIR", default="lotto-runs", help="results folder (default ./lotto-runs)")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run a command; an unexpected error is one line (traceback with LOTTO_TUI_DEBUG=1)."""
    import os

    try:
        code = _dispatch(list(sys.argv[1:] if argv is None else argv))
        sys.stdout.flush()  # what is still buffered fails here, not at interpreter exit
        return code
    except KeyboardInterrupt:
        print("lotto-tui: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except BrokenPipeError:  # the reader of standard output went away (``| head``, ``| true``)
        from .commands import discard_stdout, output_closed

        discard_stdout()
        return output_closed()
    except Exception as err:  # a bug, or an environment problem nothing anticipated
        if os.environ.get(DEBUG_ENV):
            raise
        from lotto_engine.errors import one_line

        print(
            f"lotto-tui: internal error: {type(err).__name__}: {one_line(err)} "
            f"(finished runs are saved; set {DEBUG_ENV}=1 for the traceback)",
            file=sys.stderr,
        )
        return EXIT_INTERNAL


def _bad_path_option(opts: argparse.Namespace) -> str | None:
    """The problem with a path option holding a control character (a NUL byte cannot
    be opened; a newline or ESC would break lines or drive the terminal), or None."""
    from lotto_engine.errors import first_control

    for option in PATH_OPTIONS:
        value = getattr(opts, option, None)
        bad = first_control(value) if isinstance(value, str) else None
        if bad is not None:
            return f"--{option}: the path {value!r} contains a control character ({bad})"
    return None


def _dispatch(args: list[str]) -> int:
    if args and args[0] in COMMANDS:
        command, rest = args[0], args[1:]
        parser = {"config": config_parser, "export": export_parser, "experiments": experiments_parser,
                  "report": report_parser}[command]()
        opts = parser.parse_args(rest)
    else:
        command, opts = "", main_parser().parse_args(args)
    problem = _bad_path_option(opts)
    if problem is not None:
        print(f"lotto-tui: {problem}", file=sys.stderr)
        return EXIT_USAGE
    if command == "config":
        from .commands import config_command

        return config_command(opts)
    if command == "export":
        from .commands import export_command

        return export_command(opts)
    if command == "report":
        from .commands import report_command

        return report_command(opts)
    if command == "experiments":
        from .commands import experiments_command

        return experiments_command(opts)
    if opts.batch:
        from .batch import batch_command

        return batch_command(opts)
    from .explore import explore_command

    return explore_command(opts)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
