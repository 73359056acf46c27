"""Leave nothing running behind a killed run.

`oldphoto archive` (and a deployment's flow run) starts helper processes: a temporary local Prefect API
(uvicorn) when no PREFECT_API_URL is set, and an embedded local Ray session (GCS, raylet, agents, workers).
When the run ends normally they are stopped. When the run is killed (`kill -9`, the OOM killer), Ray's GCS
and raylet follow it (Ray fate-shares them with the driver), but Ray's two agents linger for a minute or more
and the Prefect API server forever. So such a run starts a reaper first: a small process of its own session
(Ctrl-C and a signal to the run's process group do not reach it) that remembers the run's descendants
(pid and start time, so a reused pid is never touched) and, when the run is gone, stops those still alive:
SIGTERM, then SIGKILL after a grace period.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
import time

POLL_S = 0.5
GRACE_S = 5.0

_started: dict[int, subprocess.Popen] = {}


def start_reaper() -> subprocess.Popen | None:
    """Start the reaper of this process (once per process; Linux, where /proc lists the processes). Returns it,
    or None where not available."""
    me = os.getpid()
    if me in _started:
        return _started[me]
    if not os.path.isdir("/proc/self"):
        return None
    proc = subprocess.Popen([sys.executable, "-m", "oldphoto.reaper", str(me)], stdin=subprocess.DEVNULL,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
                            close_fds=True)
    _started[me] = proc
    return proc


def _stat(pid: int) -> tuple[int, int, str] | None:
    """(parent pid, start time in clock ticks since boot, state letter) of a process, from /proc/PID/stat."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            raw = f.read().decode(errors="replace")
    except OSError:
        return None
    fields = raw[raw.rindex(")") + 2:].split()        # after "pid (comm) ": state ppid ... starttime (22nd)
    return int(fields[1]), int(fields[19]), fields[0]


def descendants(pid: int, exclude: int = -1) -> dict[int, int]:
    """pid -> start time of every living descendant of `pid`, except `exclude` (the reaper itself)."""
    children: dict[int, list[int]] = {}
    starts: dict[int, int] = {}
    for name in os.listdir("/proc"):
        if name.isdigit():
            st = _stat(int(name))
            if st is not None and st[2] != "Z":
                children.setdefault(st[0], []).append(int(name))
                starts[int(name)] = st[1]
    out: dict[int, int] = {}
    todo = list(children.get(pid, []))
    while todo:
        p = todo.pop()
        if p != exclude and p not in out:
            out[p] = starts[p]
            todo += children.get(p, [])
    return out


def alive(known: dict[int, int]) -> list[int]:
    """The processes of `known` still running as the same processes (same start time: a reused pid is not)."""
    out = []
    for pid, started in known.items():
        st = _stat(pid)
        if st is not None and st[1] == started and st[2] != "Z":
            out.append(pid)
    return out


def stop(known: dict[int, int], grace: float = GRACE_S) -> list[int]:
    """SIGTERM the processes of `known` still running, SIGKILL those left after `grace` seconds; returns the
    pids that were signalled."""
    import signal

    targets = alive(known)
    for pid in targets:
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and alive({p: known[p] for p in targets}):
        time.sleep(0.1)
    for pid in alive({p: known[p] for p in targets}):
        with contextlib.suppress(OSError):
            os.kill(pid, signal.SIGKILL)
    return targets


def watch(parent: int, poll: float = POLL_S) -> list[int]:
    """Remember `parent`'s descendants until `parent` ends (this process is re-parented), then stop them."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_IGN)      # the run's Ctrl-C is the run's, not ours
    me = os.getpid()
    known: dict[int, int] = {}
    while os.getppid() == parent:
        known.update(descendants(parent, exclude=me))
        time.sleep(poll)
    return stop(known)


if __name__ == "__main__":
    watch(int(sys.argv[1]))
