"""A real single-node Slurm cluster for tests: munged, slurmctld and slurmd started as
root in the foreground, every file (config, munge key and socket, spool, state, pid
files, logs) under one temporary folder, free ports picked at start.

Clients find it through ``SLURM_CONF`` (see :attr:`SlurmCluster.env`); jobs inherit
it, so a job can ``scontrol requeue`` itself as submitit does. There is no
accounting storage (``sacct`` answers "accounting storage is disabled"): job states
come from ``squeue``/``scontrol`` while the controller remembers the job
(``MinJobAge``), and from the ``jobcomp/filetxt`` log after that.

On this machine (2 cores, shared) the daemons answer in about 1 s and a job starts
about 0.6 s after sbatch. ``cred_expire=5`` lets a requeued job start again after
about 7 s (Slurm's default is 120 s), ``sched_interval=1`` makes the scheduler look
every second instead of every minute.

:func:`single_node_slurm` raises :class:`ClusterUnavailable` (with the reason, one
line, and the tail of the failing daemon's log) when a piece is missing or a daemon
does not come up; it stops every daemon it started, by pid, whatever happens, and
the daemons get SIGTERM from the kernel should the test process die without
cleaning up (``PR_SET_PDEATHSIG``). A watchdog then kills what is left of what the
cluster started (job processes outlive slurmd), and only that (see ``_SWEEP``).
"""

from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

#: where Debian puts the daemons (not always on a non-login PATH)
SBIN = ("/usr/sbin", "/sbin", "/usr/local/sbin")
DAEMONS = ("munged", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "squeue", "sinfo", "scontrol", "scancel", "srun")


class ClusterUnavailable(RuntimeError):
    """A real slurmctld/slurmd could not be started here; the message says why."""


@dataclass
class SlurmCluster:
    root: Path
    conf: Path
    host: str
    #: environment for clients (and the jobs they submit): os.environ plus SLURM_CONF
    env: dict[str, str]
    #: seconds from starting munged to the node answering "idle"
    startup_s: float = 0.0
    processes: dict[str, subprocess.Popen] = field(default_factory=dict)

    def run(self, *args: str, timeout: float = 30) -> str:
        """A Slurm client command against this cluster; its stdout (raises on failure)."""
        out = subprocess.run(list(args), env=self.env, capture_output=True, text=True, timeout=timeout)
        if out.returncode:
            raise RuntimeError(f"{' '.join(args)}: {out.stderr.strip() or out.stdout.strip()}")
        return out.stdout

    def jobcomp(self) -> str:
        """The job completion log (one line per ended job, with its JobState)."""
        path = self.root / "log" / "jobcomp.txt"
        return path.read_text() if path.exists() else ""

    def log_tail(self, name: str, lines: int = 15) -> str:
        path = self.root / "log" / f"{name}.log"
        if not path.exists():
            return ""
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])


def _which(name: str) -> str | None:
    return shutil.which(name) or next(
        (str(Path(d) / name) for d in SBIN if os.access(Path(d) / name, os.X_OK)), None
    )


def _free_ports(n: int) -> list[int]:
    sockets = []
    try:
        for _ in range(n):
            s = socket.socket()
            s.bind(("127.0.0.1", 0))
            sockets.append(s)
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


def _config(root: Path, host: str, ports: list[int], cpus: int, memory_mb: int) -> str:
    return "\n".join([
        "ClusterName=lottotest",
        f"SlurmctldHost={host}(127.0.0.1)",
        f"SlurmctldPort={ports[0]}",
        f"SlurmdPort={ports[1]}",
        "SlurmUser=root",
        "SlurmdUser=root",
        "AuthType=auth/munge",
        "CredType=cred/munge",
        # cred_expire: also how long a requeued job waits before it may start again (default 120 s)
        f"AuthInfo=socket={root}/munge/munge.socket,cred_expire=5",
        f"StateSaveLocation={root}/state",
        f"SlurmdSpoolDir={root}/spool",
        f"SlurmctldPidFile={root}/slurmctld.pid",
        f"SlurmdPidFile={root}/slurmd.pid",
        f"SlurmctldLogFile={root}/log/slurmctld.log",
        f"SlurmdLogFile={root}/log/slurmd.log",
        # no cgroups: works in a container without a writable cgroup tree
        "ProctrackType=proctrack/linuxproc",
        "TaskPlugin=task/none",
        "JobAcctGatherType=jobacct_gather/none",
        "AccountingStorageType=accounting_storage/none",
        "JobCompType=jobcomp/filetxt",
        f"JobCompLoc={root}/log/jobcomp.txt",
        "SelectType=select/cons_tres",
        "SelectTypeParameters=CR_Core",
        "SchedulerType=sched/backfill",
        "SchedulerParameters=sched_interval=1,bf_interval=1",
        "MpiDefault=none",
        "ReturnToService=2",
        "SlurmctldTimeout=30",
        "SlurmdTimeout=30",
        "InactiveLimit=0",
        "KillWait=5",
        "MinJobAge=300",
        f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} RealMemory={memory_mb} State=UNKNOWN",
        f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP",
        "",
    ])


#: run by a watchdog process: on SIGTERM (the test process ended, or _stop), SIGKILL what
#: this cluster started and nothing else: the daemons (their pids, listed in argv[2] as they
#: start), the job processes of this cluster (slurmstepd and the job's own processes: they
#: carry its SLURM_CONF with SLURM_JOB_ID, or are slurmstepd with its SLURM_CONF; they are
#: no children of slurmd, which double-forks them), and every descendant of these
_SWEEP = """
import os, signal, sys, time
mark, listed = ("SLURM_CONF=" + sys.argv[1]).encode() + b"\\0", sys.argv[2]
keep = {os.getpid(), os.getppid()}
def read(pid, name):
    try:
        with open(f"/proc/{pid}/{name}", "rb") as f:
            return f.read()
    except OSError:
        return b""
def ours(pid):
    environ = read(pid, "environ")
    if mark not in environ:
        return False
    job = b"\\0SLURM_JOB_ID=" in environ or environ.startswith(b"SLURM_JOB_ID=")
    return job or read(pid, "comm").strip() == b"slurmstepd"
def sweep(*_):
    pids = [int(p) for p in os.listdir("/proc") if p.isdigit()]
    parent = {}
    for pid in pids:
        stat = read(pid, "stat")
        if stat:
            parent[pid] = int(stat[stat.rindex(b")") + 2:].split()[1])
    try:
        started = {int(p) for p in open(listed).read().split()}
    except OSError:
        started = set()
    chosen = {pid for pid in pids if pid in started or ours(pid)}
    grew = True
    while grew:
        more = {pid for pid, ppid in parent.items() if ppid in chosen and pid not in chosen}
        chosen |= more
        grew = bool(more)
    for pid in chosen - keep:
        try:
            os.kill(pid, signal.SIGKILL)
        except OSError:
            pass
    sys.exit(0)
signal.signal(signal.SIGTERM, sweep)
while True:
    time.sleep(3600)
"""


def _libc_prctl() -> Any:
    """libc's prctl, looked up here once: a child between fork and exec must not
    import or load anything (another thread may hold the import lock)."""
    try:
        import ctypes

        return ctypes.CDLL(None, use_errno=True).prctl
    except Exception:  # not Linux
        return None


_PRCTL = _libc_prctl()


def _die_with_parent() -> None:
    """In the daemon, before exec: SIGTERM when the test process ends, even killed
    (SIGKILL, a CI timeout) without running its cleanup (Linux; elsewhere nothing)."""
    if _PRCTL is not None:
        _PRCTL(1, signal.SIGTERM)  # PR_SET_PDEATHSIG


def _stop(processes: dict[str, subprocess.Popen], listed: Path) -> None:
    """SIGTERM the daemons (newest first), SIGKILL what is left after 5 s; then the
    watchdog, whose sweep takes any job process still there (``listed`` first loses
    the daemons already reaped: their pids are free for any process now)."""
    daemons = [proc for name, proc in reversed(processes.items()) if name != "watchdog"]
    for group in (daemons, [processes["watchdog"]] if "watchdog" in processes else []):
        if group is not daemons:
            with contextlib.suppress(OSError):
                listed.write_text("".join(f"{proc.pid}\n" for proc in daemons if proc.poll() is None))
        for proc in group:
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    proc.send_signal(signal.SIGTERM)
        deadline = time.monotonic() + 5
        for proc in group:
            try:
                proc.wait(max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    proc.kill()
                proc.wait(5)


def _cancel_jobs(cluster: SlurmCluster) -> None:
    """scancel every job of the cluster and wait (up to 15 s) for them to leave the
    node: slurmstepd is no child of slurmd, stopping slurmd would leave jobs running."""
    with contextlib.suppress(Exception):
        ids = cluster.run("squeue", "-h", "-o", "%A", timeout=10).split()
        if ids:
            cluster.run("scancel", *sorted(set(ids)), timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and cluster.run("squeue", "-h", "-o", "%A", timeout=10).strip():
            time.sleep(0.2)


@contextlib.contextmanager
def single_node_slurm(root: Path, *, cpus: int = 2, memory_mb: int = 1000, timeout: float = 30) -> Iterator[SlurmCluster]:
    """Start a one-node cluster under ``root`` (an empty folder); stop it on exit."""
    missing = [name for name in (*DAEMONS, *CLIENTS) if _which(name) is None]
    if missing:
        raise ClusterUnavailable(f"not installed: {', '.join(missing)} (apt-get install slurm-wlm munge)")
    if os.geteuid() != 0:
        raise ClusterUnavailable("slurmd must run as root to start jobs (these tests are not root)")
    root = Path(root).absolute()
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir(parents=True, exist_ok=True)
    os.chmod(root / "munge", 0o700)
    key = root / "munge" / "munge.key"
    key.write_bytes(os.urandom(128))
    os.chmod(key, 0o600)
    host = socket.gethostname().split(".")[0]
    conf = root / "slurm.conf"
    conf.write_text(_config(root, host, _free_ports(2), cpus, memory_mb))
    env = {**os.environ, "SLURM_CONF": str(conf)}
    cluster = SlurmCluster(root, conf, host, env)
    started = time.monotonic()
    munge = root / "munge"
    commands = {
        "watchdog": [sys.executable, "-c", _SWEEP, str(conf), str(root / "pids")],
        "munged": [_which("munged"), "--foreground", "--force", f"--key-file={key}", f"--socket={munge}/munge.socket",
                   f"--pid-file={munge}/munged.pid", f"--log-file={root}/log/munged.log", f"--seed-file={munge}/seed"],
        "slurmctld": [_which("slurmctld"), "-D", "-f", str(conf)],
        "slurmd": [_which("slurmd"), "-D", "-f", str(conf)],
    }
    try:
        for name, command in commands.items():
            with open(root / "log" / f"{name}.out", "wb") as out:
                # own session: a Ctrl-C of the test run reaches the daemons only through _stop
                cluster.processes[name] = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT,
                                                           stdin=subprocess.DEVNULL, start_new_session=True,
                                                           preexec_fn=_die_with_parent)
            if name != "watchdog":  # what the watchdog may kill
                with open(root / "pids", "a") as f:
                    f.write(f"{cluster.processes[name].pid}\n")
            if name == "munged":
                _wait_for(lambda: (munge / "munge.socket").exists(), cluster, timeout, "munged's socket")
        _wait_for(lambda: _node_idle(cluster), cluster, timeout, "the node to be idle")
        cluster.startup_s = time.monotonic() - started
        yield cluster
    finally:
        if cluster.processes.get("slurmctld") and cluster.processes["slurmctld"].poll() is None:
            _cancel_jobs(cluster)
        _stop(cluster.processes, root / "pids")


def _node_idle(cluster: SlurmCluster) -> bool:
    out = subprocess.run(["sinfo", "-h", "-o", "%T"], env=cluster.env, capture_output=True, text=True, timeout=10)
    return out.returncode == 0 and out.stdout.strip() == "idle"


def _wait_for(ready, cluster: SlurmCluster, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not ready():
        dead = [name for name, proc in cluster.processes.items() if proc.poll() is not None]
        if dead or time.monotonic() > deadline:
            name = dead[0] if dead else list(cluster.processes)[-1]
            out = cluster.root / "log" / f"{name}.out"
            tail = out.read_text(errors="replace").strip().splitlines()[-3:] if out.exists() else []
            tail += cluster.log_tail(name, 3).splitlines()
            why = f"{name} exited with {cluster.processes[name].returncode}" if dead else f"waited {timeout:g} s for {what}"
            raise ClusterUnavailable(f"{why}: {' | '.join(tail[-4:])}")
        time.sleep(0.1)
