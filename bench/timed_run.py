"""Run a command, timed: wall seconds, the peak resident memory of its largest process, its
exit status and (for ``lotto-tui --batch``) the lines of its own summary that give its
wall time and peak memory (``peak memory cuda:0 ... GiB``, CUDA's max allocated). A
portable ``/usr/bin/time -v`` for machines without it.

    python bench/timed_run.py --log run.log --out run.json -- python -m lotto_tui --batch --preset demo
"""

from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import time
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--log", required=True, help="the command's output (stdout and stderr) goes here")
    parser.add_argument("--out", required=True, help="write the timing as JSON here")
    parser.add_argument("command", nargs=argparse.REMAINDER, help="-- COMMAND ARGS...")
    args = parser.parse_args(argv)
    command = args.command[1:] if args.command[:1] == ["--"] else args.command
    if not command:
        parser.error("give the command to run after --")
    start = time.perf_counter()
    try:
        with open(args.log, "w") as log:
            rc = subprocess.run(command, stdout=log, stderr=subprocess.STDOUT).returncode
    except OSError as err:
        print(f"timed_run: cannot run {command[0]}: {err.strerror or err}", file=sys.stderr)
        return 127
    wall = time.perf_counter() - start
    peak_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024  # Linux: KiB
    text = Path(args.log).read_text(errors="replace")
    summary = [line.strip() for line in text.splitlines() if "peak memory" in line or "wall" in line.lower()]
    result = {"command": command, "rc": rc, "wall_s": round(wall, 2), "peak_rss_mib": round(peak_rss, 1),
              "summary_lines": summary[-5:]}
    Path(args.out).write_text(json.dumps(result, indent=2) + "\n")
    print(f"rc={rc} wall={wall:.1f}s peak_rss={peak_rss:.0f} MiB" + "".join(f"\n  {line}" for line in summary[-3:]))
    return rc


if __name__ == "__main__":
    sys.exit(main())
