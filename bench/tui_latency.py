"""Key-to-repaint latency of the explorer, measured from outside, through tmux.

It starts the real app (``python -m lotto_tui --preset demo --store <fresh tmp dir>``,
with the same Python that runs this script, in a fresh temporary cwd) in a detached
tmux session of a given size, on a private tmux server (``tmux -L``, no user config),
and then:

1. waits until the jobs panel shows the plan (the pane contains ``pending``; the
   engine imports torch in the background for about 2 s);
2. **idle**: takes N samples of key-to-repaint latency. A sample sends one key with
   ``tmux send-keys`` and polls ``tmux capture-pane -p`` in a tight loop until the
   pane shows what the key asked for; the time from just before ``send-keys`` to the
   first capture that shows it is the latency;
3. presses ``r`` to start the demo grid (reported: ``r_to_running_s``, until the jobs
   panel says ``running``) and takes N more samples **while the grid trains**. The
   jobs panel must say ``running`` at or after a sample for it to count; sampling stops
   when the grid has ended, and samples after that are left out of the statistics;
4. presses ``q`` (during a run, the app cancels the running job, then quits) and
   times how long the process takes to exit, with its exit status;
5. kills the tmux server (and, unless ``--keep``, removes the temporary folder).

Keys (``--keys``):

- ``auto`` (default): ``down`` if a plain ``capture-pane -p`` sees the jobs cursor
  move, else ``panels``. With the default theme the row cursor is only a colour, so
  this picks ``panels``.
- ``panels``: alternate ``4`` (history) and ``2`` (jobs). A sample is done when the
  pane shows the target panel (history: its ``space mark`` hint; jobs: the table
  header ``act  method  target  status``). This works while the grid trains, when the screen
  also changes by itself.
- ``down``: alternate ``down`` and ``up`` in the jobs table, captured with
  ``capture-pane -e`` (escape sequences): a sample is done when the highlighted line
  (learned once, idle, from one ``down``) sits on the next row. This is the cheap
  key: it measures the app's floor, where ``panels`` measures a panel switch.

Each sample records two times: ``ms``, until the pane shows the key's effect (the
statistics), and ``first_change_ms``, until the pane differs at all from just before
the key. Idle, the pane is first let settle (the tab underline animates for about
0.5 s after a switch), so both agree unless the repaint comes in pieces; during the
run the screen also changes by itself (progress bars, the log), so there only ``ms``
means anything.

``capture-pane`` itself costs a few milliseconds (fork + exec + a round trip to the
tmux server); that cost is in every number and is reported as the poll resolution
(``poll_ms``), not subtracted. ``send-keys`` costs about the same and is included
too. What is measured is therefore an upper bound of what a person sees, at the
resolution of one capture. The tight loop keeps about one core busy (tmux and the
forks); on a 2-core machine that competes with the app and its training thread, so
``--poll-sleep 0.005`` is worth a comparison there.

The app runs under ``sh -c '...; echo $? > exit-status'`` so its exit is seen the
moment it happens: tmux is slow to reap a pane's process, which would otherwise sit
as a zombie and look alive. Linux only (``/proc`` finds the app's pid).

Exit status: 0 when the app quit with status 0 within 5 s of ``q``, else 1 (2: bad
usage, no tmux, or ``lotto_tui`` not importable).

    .venv/bin/python bench/tui_latency.py
    .venv/bin/python bench/tui_latency.py --keys down --samples 50 --size 120x40 --out bench/out/tui_latency.json
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import random
import re
import shlex
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Callable

ESC = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]")
HISTORY_MARK = "space mark"  # the history panel's hint line
JOBS_MARK = re.compile(r" act +method +target +(?:seed +)?status ")  # the jobs table's header


class Tmux:
    """One private tmux server (its own socket) holding one session."""

    def __init__(self, name: str) -> None:
        self.base = ["tmux", "-L", name, "-f", os.devnull]
        self.target = name
        self.socket: str | None = None

    def __call__(self, *args: str, check: bool = True) -> str:
        done = subprocess.run([*self.base, *args], capture_output=True, text=True)
        if check and done.returncode != 0:
            raise RuntimeError(f"tmux {' '.join(args)}: {done.stderr.strip()}")
        return done.stdout

    def start(self, command: list[str], width: int, height: int, cwd: str, status: Path) -> int:
        """Run ``command`` under ``sh``, which writes its exit status to ``status`` the moment
        it ends (tmux is slow to reap a pane's process: a zombie would look alive). Returns
        the app's pid."""
        wrapper = ['sh', '-c', f'"$@"; echo $? > {shlex.quote(str(status))}.tmp; mv {shlex.quote(str(status))}.tmp '
                   f'{shlex.quote(str(status))}; sleep 3600', "sh", *command]
        # remain-on-exit keeps the pane (and its last screen) after the app exits
        self(
            "new-session", "-d", "-s", self.target, "-x", str(width), "-y", str(height), "-c", cwd,
            shlex.join(wrapper), ";", "set-option", "-t", self.target, "remain-on-exit", "on",
        )
        shell_pid, self.socket = self("display-message", "-p", "-t", self.target, "#{pane_pid} #{socket_path}").split(" ", 1)
        self.socket = self.socket.strip()
        shell = int(shell_pid)
        end = time.monotonic() + 10
        while time.monotonic() < end:
            try:
                children = Path(f"/proc/{shell}/task/{shell}/children").read_text().split()
            except OSError:
                children = []
            if children:
                return int(children[0])
            time.sleep(0.01)
        raise RuntimeError("the app did not start")

    def capture(self, escapes: bool = False) -> str:
        return self("capture-pane", "-p", *(["-e"] if escapes else []), "-t", self.target)

    def keys(self, *keys: str) -> None:
        self("send-keys", "-t", self.target, *keys)

    def kill(self) -> None:
        self("kill-server", check=False)
        if self.socket:  # tmux leaves the socket file of a killed server behind
            Path(self.socket).unlink(missing_ok=True)


def wait_for(tmux: Tmux, test: Callable[[str], bool], timeout: float, escapes: bool = False) -> str:
    end = time.monotonic() + timeout
    while True:
        screen = tmux.capture(escapes)
        if test(screen):
            return screen
        if time.monotonic() > end:
            raise TimeoutError(screen)
        time.sleep(0.05)


def plain(screen: str) -> str:
    return ESC.sub("", screen)


# ---------------------------------------------------------------------- key modes


class PanelKeys:
    """Alternate 4 (history) and 2 (jobs); done when the target panel shows."""

    escapes = False
    name = "panels"

    def __init__(self) -> None:
        self.next = "4"

    def prepare(self, tmux: Tmux) -> None:
        tmux.keys("2")
        wait_for(tmux, lambda s: JOBS_MARK.search(s) and HISTORY_MARK not in s, 10)
        self.next = "4"

    def step(self) -> tuple[str, Callable[[str], bool]]:
        key = self.next
        self.next = "2" if key == "4" else "4"
        if key == "4":
            return key, lambda s: HISTORY_MARK in s and not JOBS_MARK.search(s)
        return key, lambda s: JOBS_MARK.search(s) and HISTORY_MARK not in s

    @staticmethod
    def running(screen: str) -> bool | None:
        """Whether the jobs summary says a job runs (None: jobs panel not shown)."""
        if not JOBS_MARK.search(screen):
            return None
        return " running" in JOBS_MARK.split(screen)[0]


class CursorKeys:
    """Alternate down and up in the jobs table; done when the highlighted line moved."""

    name = "down"

    def __init__(self, escapes: bool) -> None:
        self.escapes = escapes
        self.next = "Down"
        self.signature = ""
        self.row = -1

    def _lines(self, screen: str) -> list[str]:
        return screen.split("\n")

    def cursor_row(self, screen: str) -> int:
        for i, line in enumerate(self._lines(screen)):
            if self.signature and line.startswith(self.signature):
                return i
        return -1

    def prepare(self, tmux: Tmux) -> None:
        """Show the jobs panel; the first time (idle), learn what the cursor line looks
        like: press down once and see which two lines changed."""
        tmux.keys("2")
        wait_for(tmux, lambda s: JOBS_MARK.search(plain(s)), 10, self.escapes)
        time.sleep(0.5)
        if self.signature:
            self.row = self.cursor_row(tmux.capture(self.escapes))
            if self.row < 0:
                raise RuntimeError("cannot find the jobs table cursor")
            return
        before = tmux.capture(self.escapes)
        tmux.keys("Down")
        after = wait_for(tmux, lambda s: s != before, 5, self.escapes)
        time.sleep(0.3)
        after = tmux.capture(self.escapes)
        old, new = self._lines(before), self._lines(after)
        moved = [i for i, (a, b) in enumerate(zip(old, new)) if a != b and not JOBS_MARK.search(plain(b))]
        if len(moved) < 2:
            raise RuntimeError("down did not visibly move the jobs table cursor")
        # the new cursor line is the later one (we pressed down); its leading escapes are the look
        line = new[moved[-1]]
        text_at = len(line) - len(line.lstrip(" \x1b[0123456789;m"))
        self.signature = line[:text_at]
        self.row = moved[-1]
        self.next = "Up"

    def step(self) -> tuple[str, Callable[[str], bool]]:
        key = self.next
        self.next = "Up" if key == "Down" else "Down"
        start = self.row
        target = start + (1 if key == "Down" else -1)

        def test(screen: str) -> bool:
            row = self.cursor_row(screen)
            if row == target:
                self.row = row
                return True
            return False

        return key, test

    @staticmethod
    def running(screen: str) -> bool | None:
        text = plain(screen)
        if not JOBS_MARK.search(text):
            return None
        return " running" in JOBS_MARK.split(text)[0]


def plain_down_moves(tmux: Tmux) -> bool:
    """Does ``down`` change a plain capture of the jobs panel?"""
    tmux.keys("2")
    wait_for(tmux, lambda s: JOBS_MARK.search(s), 10)
    time.sleep(0.5)
    before = tmux.capture()
    tmux.keys("Down")
    time.sleep(0.5)
    changed = tmux.capture() != before
    tmux.keys("Up")
    time.sleep(0.3)
    return changed


# ---------------------------------------------------------------------- sampling


def sample(tmux: Tmux, mode, timeout: float, poll_sleep: float = 0.0) -> dict:  # type: ignore[no-untyped-def]
    """One key, polled until the pane shows its effect. Times in milliseconds."""
    before = tmux.capture(mode.escapes)
    key, test = mode.step()
    polls = []
    t0 = time.perf_counter()
    tmux.keys(key)
    sent = time.perf_counter()
    first_change = None
    while True:
        p0 = time.perf_counter()
        screen = tmux.capture(mode.escapes)
        now = time.perf_counter()
        polls.append(now - p0)
        if first_change is None and screen != before:
            first_change = now - t0
        if test(plain(screen) if not mode.escapes else screen):
            break
        if now - t0 > timeout:
            return {"key": key, "timeout": True, "ms": None}
        if poll_sleep:
            time.sleep(poll_sleep)
    return {
        "key": key,
        "ms": (now - t0) * 1000,
        "first_change_ms": (first_change or now - t0) * 1000,
        "send_keys_ms": (sent - t0) * 1000,
        "polls": len(polls),
        "poll_ms": statistics.median(polls) * 1000,
        "running": mode.running(screen),
        "timeout": False,
    }


def stats(values: list[float]) -> dict:
    if not values:
        return {"n": 0}
    ordered = sorted(values)
    p90 = ordered[min(len(ordered) - 1, max(0, round(0.9 * len(ordered)) - 1))]
    return {
        "n": len(values),
        "median_ms": round(statistics.median(values), 1),
        "p90_ms": round(p90, 1),
        "max_ms": round(max(values), 1),
        "min_ms": round(min(values), 1),
    }


def settle(tmux: Tmux, escapes: bool, quiet: float = 0.3, limit: float = 1.5) -> bool:
    """Wait until the pane has not changed for ``quiet`` seconds (at most ``limit``), so the
    tab underline's animation from the previous key does not count as this key's first
    change. While the grid trains the pane never settles; then this just waits ``limit``."""
    end = time.monotonic() + limit
    last, since = tmux.capture(escapes), time.monotonic()
    while time.monotonic() < end:
        time.sleep(0.05)
        now = tmux.capture(escapes)
        if now != last:
            last, since = now, time.monotonic()
        elif time.monotonic() - since >= quiet:
            return True
    return False


def take(tmux: Tmux, mode, n: int, gap: float, timeout: float, want_running: bool | None,
         poll_sleep: float = 0.0) -> list[dict]:  # type: ignore[no-untyped-def]
    samples = []
    while len(samples) < n:
        # idle: let the previous key's animation finish; during the run the pane never settles
        settled = False if want_running else settle(tmux, mode.escapes)
        time.sleep(gap * (0.75 + 0.5 * random.random()))  # jitter: no lock-step with the 0.25 s refresh
        s = sample(tmux, mode, timeout, poll_sleep)
        s["settled"] = settled
        samples.append(s)
        if want_running and s.get("running") is False and mode.name == "panels" and s["key"] == "2":
            # the jobs panel shows no running job: the grid ended; stop sampling "during run"
            break
    return samples


def summarise(samples: list[dict], want_running: bool) -> dict:
    ok = [s for s in samples if not s["timeout"]]
    if want_running:
        # a sample counts when the grid was seen running at or after it (panels mode sees
        # the jobs summary every other sample; the grid never restarts once it stopped)
        last_running = max((i for i, s in enumerate(samples) if s.get("running")), default=-1)
        ok = [s for i, s in enumerate(samples) if i <= last_running and not s["timeout"]]
    out = stats([s["ms"] for s in ok])
    out["first_change"] = stats([s["first_change_ms"] for s in ok])
    out["by_key"] = {key: stats([s["ms"] for s in ok if s["key"] == key]) for key in sorted({s["key"] for s in ok})}
    out["timeouts"] = sum(1 for s in samples if s["timeout"])
    out["taken"] = len(samples)
    if want_running:
        out["left_out_after_grid_ended"] = len(samples) - len(ok) - out["timeouts"]
    return out


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--samples", "-n", type=int, default=30, help="samples idle and again during the run (30)")
    parser.add_argument("--size", default="80x24", help="terminal COLSxROWS (80x24)")
    parser.add_argument("--keys", choices=("auto", "panels", "down"), default="auto",
                        help="which keys to time (auto: down if a plain capture sees it, else panels)")
    parser.add_argument("--gap", type=float, default=0.15, help="pause between samples, seconds, jittered (0.15)")
    parser.add_argument("--poll-sleep", type=float, default=0.0,
                        help="sleep between two captures, seconds (0: a tight loop, which keeps about one "
                             "core busy with tmux; on a small machine that competes with the app)")
    parser.add_argument("--timeout", type=float, default=10.0, help="give up on one sample after this (10 s)")
    parser.add_argument("--preset", default="demo", help="preset to open (demo)")
    parser.add_argument("--no-run", action="store_true", help="idle samples only; do not start the grid")
    parser.add_argument("--keep", action="store_true", help="keep the temporary store and cwd")
    parser.add_argument("--out", type=Path, help="write the results as JSON here")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if shutil.which("tmux") is None:
        print("tui_latency: tmux is not installed", file=sys.stderr)
        return 2
    try:
        width, height = (int(v) for v in args.size.lower().split("x"))
    except ValueError:
        print(f"tui_latency: --size: want COLSxROWS, got {args.size!r}", file=sys.stderr)
        return 2
    import importlib.util

    spec = importlib.util.find_spec("lotto_tui.__main__")
    if spec is None:
        print(f"tui_latency: {sys.executable} cannot import lotto_tui.__main__", file=sys.stderr)
        return 2

    work = Path(tempfile.mkdtemp(prefix="lotto-latency-"))
    store = work / "store"
    command = [sys.executable, "-m", "lotto_tui", "--preset", args.preset, "--store", str(store)]
    tmux = Tmux(f"lotto-latency-{os.getpid()}")
    result: dict = {
        "command": " ".join(command),
        "size": f"{width}x{height}",
        "samples_wanted": args.samples,
        "poll_sleep_s": args.poll_sleep,
        "python": sys.version.split()[0],
        "platform": platform.platform(),
        "cpus": os.cpu_count(),
        "loadavg_start": os.getloadavg(),
        "tmux": subprocess.run(["tmux", "-V"], capture_output=True, text=True).stdout.strip(),
    }
    try:
        t_start = time.perf_counter()
        status_file = work / "exit-status"
        pid = tmux.start(command, width, height, str(work), status_file)
        result["pid"] = pid
        try:
            wait_for(tmux, lambda s: "pending" in s, 60)
        except TimeoutError as err:
            print("tui_latency: the plan never showed; last screen:\n" + str(err), file=sys.stderr)
            return 1
        result["startup_to_plan_s"] = round(time.perf_counter() - t_start, 2)

        keys = args.keys
        if keys == "auto":
            keys = "down" if plain_down_moves(tmux) else "panels"
            result["auto_note"] = (
                "plain capture sees the jobs cursor move" if keys == "down"
                else "down changes only colours (invisible to capture-pane -p): using panels 4/2"
            )
        mode = PanelKeys() if keys == "panels" else CursorKeys(escapes=True)
        mode.prepare(tmux)
        result["keys"] = keys if keys == "panels" else "down/up (capture-pane -e)"

        idle = take(tmux, mode, args.samples, args.gap, args.timeout, None, args.poll_sleep)
        result["idle"] = summarise(idle, want_running=False)
        result["idle_samples"] = idle
        done = [s for s in idle if not s["timeout"]]
        result["poll_ms"] = round(statistics.median(s["poll_ms"] for s in done), 2) if done else None
        result["send_keys_ms"] = round(statistics.median(s["send_keys_ms"] for s in done), 2) if done else None

        running_at_quit = False
        if not args.no_run:
            mode.prepare(tmux)  # back on the jobs panel
            t_run = time.perf_counter()
            tmux.keys("r")
            try:
                wait_for(tmux, lambda s: " running" in JOBS_MARK.split(plain(s))[0], 30, mode.escapes)
            except TimeoutError as err:
                print("tui_latency: the grid did not start; last screen:\n" + str(err), file=sys.stderr)
                return 1
            result["r_to_running_s"] = round(time.perf_counter() - t_run, 2)
            mode.prepare(tmux)
            run = take(tmux, mode, args.samples, args.gap, args.timeout, True, args.poll_sleep)
            result["during_run"] = summarise(run, want_running=True)
            result["run_samples"] = run
            result["run_samples_s"] = round(time.perf_counter() - t_run, 1)
            screen = plain(tmux.capture(mode.escapes))
            running_at_quit = " running" in JOBS_MARK.split(screen)[0] if JOBS_MARK.search(screen) else None
            result["loadavg_end_of_run_samples"] = os.getloadavg()

        # quit: "q" (a running job is cancelled first) and time the exit
        t_q = time.perf_counter()
        tmux.keys("q")
        exit_s = None
        status = None
        while time.perf_counter() - t_q < 30:
            if status_file.exists():
                exit_s = time.perf_counter() - t_q
                status = int(status_file.read_text().strip() or -1)
                break
            time.sleep(0.005)
        result["quit"] = {
            "running_at_q": running_at_quit,
            "q_to_exit_s": round(exit_s, 3) if exit_s is not None else None,
            "exit_status": status,
            "exited": exit_s is not None,
        }
        if exit_s is None:
            result["quit"]["last_screen"] = plain(tmux.capture())
    finally:
        tmux.kill()
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
        else:
            result["work_dir"] = str(work)

    print_summary(result)
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps(result, indent=2) + "\n", encoding="utf-8")
        print(f"wrote {args.out}")
    quit_ok = result["quit"]["exited"] and result["quit"]["q_to_exit_s"] < 5 and result["quit"]["exit_status"] == 0
    return 0 if quit_ok else 1


def print_summary(r: dict) -> None:
    def line(name: str, s: dict) -> str:
        if not s.get("n"):
            return f"  {name:<10} no samples"
        return (f"  {name:<10} n={s['n']:<3} median {s['median_ms']:6.1f} ms  p90 {s['p90_ms']:6.1f} ms  "
                f"max {s['max_ms']:6.1f} ms")

    print(f"explorer key-to-repaint latency, {r['size']}, keys: {r['keys']}")
    print(f"  startup to plan shown {r['startup_to_plan_s']} s; poll (one capture-pane) {r['poll_ms']} ms, "
          f"send-keys {r['send_keys_ms']} ms (both included)")
    def keys(s: dict) -> str:
        return ", ".join(f"{k}: {v['median_ms']:.0f}" for k, v in s.get("by_key", {}).items() if v.get("n"))

    print(line("idle", r["idle"]) + f"  (median by key, ms: {keys(r['idle'])})")
    if "during_run" in r:
        d = r["during_run"]
        print(line("during run", d) + f"  (median by key, ms: {keys(d)})")
        print(f"  during run: {d['taken']} taken, {d.get('left_out_after_grid_ended', 0)} left out (grid had ended), "
              f"{d['timeouts']} timeouts; r to 'running' shown: {r['r_to_running_s']} s")
    q = r["quit"]
    state = "during the run" if q["running_at_q"] else "idle"
    if q["exited"]:
        print(f"  quit ({state}): exited {q['q_to_exit_s']} s after q, status {q['exit_status']}")
    else:
        print(f"  quit ({state}): still running 30 s after q")


if __name__ == "__main__":
    sys.exit(main())
