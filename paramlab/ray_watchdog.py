"""Ends a private Ray instance's processes when the process that started it ends, even by SIGKILL.

`watch()` (called by `paramlab.executors.start_private_ray` after ``ray.init``) starts one small
process, ``python .../paramlab/ray_watchdog.py <driver pid> <fd>``, holding the read end of a pipe whose
write end only the driver holds. While the driver lives the watchdog notes, every half second, every
process descended from it (gcs_server, raylet, its agents and workers). When the pipe reaches EOF
(the driver is gone, however it ended) the watchdog sends SIGTERM to every noted process still
alive (same start time: never a reused pid), and SIGKILL two seconds later. `stop()` after
``ray.shutdown()`` closes the pipe the same way, so the watchdog ends with the instance. Linux only
(/proc); a no-op elsewhere.
"""

from __future__ import annotations

import os
import select
import signal
import subprocess
import sys
import time


def _start_time(pid: int) -> int | None:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return int(f.read().rsplit(")", 1)[1].split()[19])
    except (OSError, ValueError, IndexError):
        return None


def _descendants(root: int) -> list[int]:
    children: dict[int, list[int]] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    ppid = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
            children.setdefault(ppid, []).append(int(d))
    out, todo = [], [root]
    while todo:
        for c in children.get(todo.pop(), []):
            out.append(c)
            todo.append(c)
    return out


def watch() -> subprocess.Popen | None:
    """Start the watchdog of this process (see the module docstring); returns it (None off Linux)."""
    if not sys.platform.startswith("linux"):
        return None
    import fcntl

    r, w = os.pipe()  # both ends close-on-exec: no other child of this process inherits the write end
    high = fcntl.fcntl(r, fcntl.F_DUPFD_CLOEXEC, 10)  # never 0-2 (a process without stdin gets fd 0)
    os.close(r)
    log = os.environ.get("PARAMLAB_WATCHDOG_LOG", os.devnull)  # debugging: where the watchdog writes
    with open(log, "a") as err:
        # the file itself, not `-m paramlab...`: importing the package (torch) would take seconds
        proc = subprocess.Popen([sys.executable, os.path.abspath(__file__), str(os.getpid()), str(high)],
                                stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=err,
                                pass_fds=(high,), start_new_session=True)
    os.close(high)
    proc.stdout.readline()  # its first look at the process tree is done: from now on a kill is covered
    proc.stdout.close()
    watch._fd = w  # the write end stays open for the life of this process: EOF exactly when it is gone
    return proc


def stop() -> None:
    """After ``ray.shutdown()``: close the pipe, so the watchdog ends what is left of the instance and exits."""
    fd = getattr(watch, "_fd", None)
    if fd is not None:
        watch._fd = None
        os.close(fd)


def main(driver: int, fd: int) -> None:
    noted: dict[int, int] = {}
    me = os.getpid()
    first = True
    while True:
        ready, _, _ = select.select([fd], [], [], 0.0 if first else 0.5)
        if ready and not os.read(fd, 1024):
            break  # EOF: the driver is gone
        for pid in _descendants(driver):
            if pid != me and pid not in noted:
                st = _start_time(pid)
                if st is not None:
                    noted[pid] = st
        if first:
            first = False
            print("watching", flush=True)  # the driver waits for this line
    print(f"driver {driver} gone; ending {sorted(noted)}", file=sys.stderr, flush=True)
    for sig in (signal.SIGTERM, signal.SIGKILL):
        alive = [p for p, st in noted.items() if _start_time(p) == st]
        for p in alive:
            try:
                os.kill(p, sig)
            except OSError:
                pass
        if not alive:
            return
        time.sleep(2.0)


if __name__ == "__main__":
    main(int(sys.argv[1]), int(sys.argv[2]))
