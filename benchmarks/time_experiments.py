"""Time every experiment at a size (default: quick) and record wall-clock and CPU seconds.

    python benchmarks/time_experiments.py                      # every experiment, quick size
    python benchmarks/time_experiments.py transfer kernel_limit --size default
    python benchmarks/time_experiments.py --dry-run            # what would run, and what is stored now

Each experiment runs as ``paramlab run NAME --size SIZE --no-wandb --no-progress`` in a fresh process
(its own imports and caches count, as a user's first run would), into a temporary store that is
deleted afterwards. Wall time is the process's elapsed time; CPU time is user + system time of the
process and its children (`resource.getrusage(RUSAGE_CHILDREN)`), so CPU / wall above 1 means it used
more than one core. Results go to ``paramlab/experiment_times.json`` (`paramlab.timings`), which
``paramlab run -h``, ``paramlab run NAME --help`` and docs/experiments.md read; ``--out`` writes
elsewhere instead.

Measure on a quiet machine: other jobs on the same cores inflate the wall time (CPU time less so);
``--note`` records what the machine was doing.
"""

from __future__ import annotations

import argparse
import datetime as dt
import os
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from paramlab.experiments import NAMES  # noqa: E402
from paramlab.timings import TIMES_PATH, describe, load_times, record  # noqa: E402


def time_one(name: str, size: str, threads: int, timeout: float | None) -> tuple[float, float, int]:
    """(wall seconds, CPU seconds, return code) of one ``paramlab run`` in a fresh process."""
    env = {**os.environ, "WANDB_MODE": "offline", "WANDB_SILENT": "true", "OMP_NUM_THREADS": str(threads),
           "PYTHONPATH": str(ROOT) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    with tempfile.TemporaryDirectory(prefix=f"time-{name}-") as store:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "paramlab", "run", name, "--size", size, "--no-wandb",
                               "--no-progress", "--root", store, "--threads", str(threads)],
                              env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                              timeout=timeout)
        wall = time.monotonic() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    if proc.returncode != 0:
        print(f"  {name}: exit {proc.returncode}\n{proc.stderr[-2000:]}", file=sys.stderr)
    return wall, cpu, proc.returncode


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("names", nargs="*", help=f"experiments (default: all): {', '.join(NAMES)}")
    p.add_argument("--size", default="quick", choices=("tiny", "quick", "default"))
    p.add_argument("--threads", type=int, default=1, help="torch threads per run (paramlab run's default is 1)")
    p.add_argument("--timeout", type=float, default=None, help="seconds per experiment before it is stopped")
    p.add_argument("--note", default="", help="what the machine was doing (recorded with each time)")
    p.add_argument("--out", type=Path, default=TIMES_PATH, help=f"JSON to update (default: {TIMES_PATH.name})")
    p.add_argument("--dry-run", action="store_true", help="list what would run and the times stored now")
    a = p.parse_args(argv)
    names = [n.replace("-", "_") for n in a.names] or list(NAMES)
    unknown = [n for n in names if n not in NAMES]
    if unknown:
        p.error(f"unknown experiment(s) {unknown}: known are {', '.join(NAMES)}")
    times = load_times(a.out)
    for n in names:
        print(f"{n:<20} {a.size}: stored {describe(n, a.size, times)}")
    if a.dry_run:
        return 0
    failed = 0
    for n in names:
        wall, cpu, rc = time_one(n, a.size, a.threads, a.timeout)
        if rc != 0:
            failed += 1
            continue
        when = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d")
        times = record(n, a.size, wall, cpu, measured=when, threads=a.threads, note=a.note, path=a.out)
        print(f"{n:<20} {a.size}: {describe(n, a.size, times)}  (CPU/wall {cpu / wall:.2f})", flush=True)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
