"""Executors: where a sweep's units (one run, or a stacked ensemble of runs) compute.

A unit runs through `execute_unit`, which never touches the store and never raises for a run's own
error: it returns one outcome per config (summary, history, status, runtime), and the sweep process
records them. So a unit can run anywhere.

``local`` (default): in this process, one unit (a run or a stacked ensemble of runs)
after another, with torch's thread count set per unit by the runner's resource request (1 thread for
small models, which on a 2-core machine is faster than 2; all cores for large ones).

``ray``: each unit is a Ray task with ``num_cpus`` / ``num_gpus`` from the runner (fractional GPUs
for small models, so several share a device), results come back to this process as they finish.

* One machine: ``paramlab sweep spec.yaml --executor ray`` starts a local Ray instance.
* An existing cluster: start Ray on the nodes, then run the sweep on the head node (or any node of
  the cluster) with ``--address auto``; or from outside with Ray Client,
  ``--address ray://<head-host>:10001``. Every node needs the same Python environment with paramlab
  (and the module of a custom runner) installed; only the driver writes the store.
* On SLURM (one Ray node per SLURM node)::

      #!/bin/bash
      #SBATCH --nodes=4 --ntasks-per-node=1 --cpus-per-task=32 --gpus-per-task=4 --time=12:00:00
      nodes=($(scontrol show hostnames "$SLURM_JOB_NODELIST"))
      head=${nodes[0]}
      port=6379
      srun --nodes=1 --ntasks=1 -w "$head" ray start --head --port=$port \\
           --num-cpus=$SLURM_CPUS_PER_TASK --num-gpus=4 --block &
      sleep 20
      for node in "${nodes[@]:1}"; do
        srun --nodes=1 --ntasks=1 -w "$node" ray start --address="$head:$port" \\
             --num-cpus=$SLURM_CPUS_PER_TASK --num-gpus=4 --block &
      done
      sleep 20
      paramlab sweep spec.yaml --executor ray --address "$head:$port" --device cuda

  The store (``--root``) is written by this script's process only, on the head node's filesystem.
  If the job is cut off, submit it again: the sweep resumes where it stopped.

Ray is an optional dependency (``pip install ray``); the local executor needs nothing extra.
"""

from __future__ import annotations

import math
import os
import time
import traceback
import warnings
from typing import Any, Callable, Mapping

from . import live
from .runners import Runner
from .io import to_jsonable
from .store import COMPLETE_STATUSES, RESERVED_SUMMARY_KEYS

__all__ = ["check_ray_address", "execute_unit", "failure", "resources", "run_local", "run_ray", "start_private_ray"]

CONNECT_TIMEOUT_S = 10.0  # a Ray address that does not accept a TCP connection in this time is refused
Record = Callable[[list, list], None]  # record(unit, outcomes): the sweep writes the unit's runs
# open(unit) -> one `live` sink per config of the unit, called just before the unit trains (None: no live view)
OpenLive = Callable[[list], list]


def _normalize(result: Any) -> dict:
    if not isinstance(result, Mapping):
        raise TypeError(f"a runner must return a dict (the summary), got {type(result).__name__}")
    result = dict(result)
    history = result.pop("history", None) or []
    status = result.pop("status", "finished")
    if status not in COMPLETE_STATUSES:
        raise ValueError(f"a runner's status must be 'finished' or 'diverged', got {status!r}")
    for key in RESERVED_SUMMARY_KEYS:
        result.pop(key, None)
    return {"summary": to_jsonable(result), "history": to_jsonable(list(history)), "status": status}


def failure(e: BaseException) -> dict:
    return {"summary": {}, "history": [], "status": "failed",
            "error": f"{type(e).__name__}: {e}" if str(e) else type(e).__name__,
            "traceback": "".join(traceback.format_exception(type(e), e, e.__traceback__))[-20_000:]}


def execute_unit(runner: Runner, configs: list[dict], threads: int | None, sinks: list | None = None) -> list[dict]:
    """Run one unit (one config, or several batched); one outcome dict per config, never raises
    for a run's own error (a failed batch falls back to running its configs one by one).
    sinks: one `paramlab.live` sink per config: the runner runs inside `live.sending_to`, so a
    training loop's `live.emit(..., model=k)` reaches config k's sink while it trains."""
    import torch

    sinks = list(sinks) if sinks is not None else []

    old = torch.get_num_threads()
    if threads:
        torch.set_num_threads(int(threads))
    try:
        t0 = time.monotonic()
        if len(configs) > 1:
            try:
                with live.sending_to(sinks):  # [] without a live view: emit does nothing
                    results = runner.batch([dict(c) for c in configs])
                if len(results) != len(configs):
                    raise RuntimeError(f"batch runner returned {len(results)} results for {len(configs)} configs")
                outs = [_normalize(r) for r in results]
                dt = (time.monotonic() - t0) / len(configs)
                for o in outs:
                    o.update(runtime_s=round(dt, 4), ensemble=len(configs), threads=torch.get_num_threads())
                return outs
            except Exception:
                pass  # run them one by one below: each gets its own record (and error)
        outs = []
        for i, c in enumerate(configs):
            t1 = time.monotonic()
            try:
                with live.sending_to(sinks[i:i + 1]):
                    o = _normalize(runner.fn(dict(c)))
            except Exception as e:
                o = failure(e)
            o.update(runtime_s=round(time.monotonic() - t1, 4), ensemble=1, threads=torch.get_num_threads())
            outs.append(o)
        return outs
    finally:
        torch.set_num_threads(old)


def resources(runner: Runner, configs: list[dict], num_cpus, num_gpus) -> dict:
    res = dict(runner.resources(configs)) if runner.resources is not None else {"num_cpus": 1, "num_gpus": 0}
    if num_cpus is not None:
        res["num_cpus"] = num_cpus
    if num_gpus is not None:
        res["num_gpus"] = num_gpus
    res.setdefault("num_cpus", 1)
    res.setdefault("num_gpus", 0)
    return res


def run_local(runner: Runner, units: list, record: Record, num_cpus, num_gpus, threads,
              open_live: OpenLive | None = None) -> None:
    """Every unit in this process, one after another; torch threads per unit from `threads`, else the
    unit's num_cpus request (capped at this machine's cores). `open_live(unit)`: the unit's live sinks,
    asked for just before it trains."""
    for unit in units:
        cfgs = [c for _, c in unit]
        res = resources(runner, cfgs, num_cpus, num_gpus)
        t = threads or max(1, min(int(math.ceil(res["num_cpus"])), os.cpu_count() or 1))
        record(unit, execute_unit(runner, cfgs, t, open_live(unit) if open_live is not None else None))


def start_private_ray(ray_init: Mapping[str, Any] | None = None) -> None:
    """Start a private Ray instance on this machine: every server on loopback, no dashboard, and its
    processes ended when this process ends (even by SIGKILL).

    Loopback: on Linux Ray resolves ``127.0.0.1`` given as the node address to the machine's
    external IP, and its gRPC servers then listen on all interfaces. With its "no cluster" mode
    (``RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0``, the default on macOS and Windows) the node address is
    loopback and gcs_server, raylet, workers and agents listen on 127.0.0.1 only (checked by the
    tests with ``ss``). The environment variable is set for this process and its children.
    Ending with the driver: Ray fate-shares gcs_server and raylet with the driver, but its agents
    (DashboardAgent, RuntimeEnvAgent) and idle workers notice late (minutes); a watchdog process
    (`paramlab.ray_watchdog`) ends the instance's processes as soon as this process is gone.
    """
    os.environ["RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER"] = "0"
    import ray
    from ray._private import ray_constants

    ray_constants.ENABLE_RAY_CLUSTER = False  # read at call time; ray may have been imported already
    stray = os.environ.get("RAY_ADDRESS")
    if stray:
        warnings.warn(f"RAY_ADDRESS={stray} is set in the environment and ignored: without --address the ray "
                      "executor starts a private instance on loopback; to use that cluster pass "
                      f"--address {stray}", stacklevel=2)
    # address "local": a new instance, never the one RAY_ADDRESS or /tmp/ray/ray_current_cluster names
    kw = {"address": "local", "include_dashboard": False, "log_to_driver": False, "configure_logging": False,
          **dict(ray_init or {})}
    ray.init(**kw)
    from .ray_watchdog import watch

    watch()


def check_ray_address(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Raise RuntimeError naming `address` unless a TCP connection to it opens within `timeout` seconds
    and a gRPC server answers there within `timeout` more.

    Ray itself retries an address that refuses or does not answer for minutes (its GCS client waits
    out several 30 s timeouts); one TCP connect tells a dead address apart at once, and the HTTP/2
    preface every gRPC server answers tells a Ray server from another program on that port. The address is
    resolved the way Ray resolves it before dialing (``auto``: RAY_ADDRESS, then the cluster started
    on this machine; a loopback host: this node's IP), so the check dials what Ray would.
    """
    import socket

    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install ray") from None
    if ray.is_initialized():  # run_ray uses the instance this process holds
        return

    def split(addr):
        host, sep, port = (addr.split("://", 1)[1] if "://" in addr else addr).rpartition(":")
        if not sep or not host.strip("[]") or not port.isdigit():
            raise RuntimeError(f"Ray address {address!r} is not 'auto', 'host:port' or 'ray://host:port'")
        return host.strip("[]"), int(port)

    if address != "auto":
        split(address)
    target = address
    if "://" not in address:  # the address Ray itself dials: "auto" looked up, 127.0.0.1 -> this node's IP
        from ray._private.services import canonicalize_bootstrap_address

        try:
            target = canonicalize_bootstrap_address(address)
        except (ConnectionError, ValueError) as e:
            raise RuntimeError(f"Ray address {address!r}: {e}") from None
        if target is None:
            raise RuntimeError(f"--address {address}: no Ray cluster found on this machine (start one with `ray "
                               "start --head`, or leave --address out for a private instance)")
    host, port = split(target)
    try:
        with socket.create_connection((host, port), timeout=timeout) as conn:
            grpc = _speaks_http2(conn, timeout)
    except OSError as e:
        why = (f"no answer within {timeout:g} s" if isinstance(e, socket.timeout)
               else e.strerror or str(e) or type(e).__name__)
        raise RuntimeError(f"cannot reach the Ray cluster at {address}"
                           + (f" ({target})" if target != address else "")
                           + f": {why}; is Ray running there (`ray status --address "
                           f"{host}:{port}`)? Leave --address out to start a private instance on this "
                           "machine") from None
    if not grpc:
        raise RuntimeError(f"{address}" + (f" ({target})" if target != address else "") + " accepts connections "
                           f"but does not answer as a Ray server (gRPC) within {timeout:g} s: give the Ray head's "
                           "port (6379 by default, 10001 for ray://), or leave --address out to start a private "
                           "instance on this machine")


def _speaks_http2(conn, timeout: float) -> bool:
    """Whether the server on `conn` answers the HTTP/2 connection preface with a SETTINGS frame, as every
    gRPC server (Ray's GCS and its client server) does at once; another server stays silent or answers
    otherwise, and Ray would wait out its own GCS timeouts on it (minutes)."""
    import socket

    conn.sendall(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n" + bytes(3) + b"\x04" + bytes(5))  # preface, empty SETTINGS
    conn.settimeout(timeout)
    head = b""
    try:
        while len(head) < 9:  # a frame header: length (3), type (1: 4 is SETTINGS), flags (1), stream (4)
            chunk = conn.recv(9 - len(head))
            if not chunk:
                break
            head += chunk
    except (socket.timeout, OSError):
        pass
    return len(head) == 9 and head[3] == 4

class _QueueSink:
    """A live sink on a Ray worker: each point goes to the driver through a Ray queue (picklable)."""

    def __init__(self, queue, unit: int, k: int):
        self.queue, self.unit, self.k = queue, unit, k

    def __call__(self, metrics: Mapping[str, Any], step: int) -> None:
        try:
            self.queue.put((self.unit, self.k, to_jsonable(dict(metrics)), int(step), time.time()))
        except Exception:  # the live view is best effort; the returned history is the record
            pass


def _execute_remote(runner: Runner, configs: list[dict], threads: int | None, queue, unit: int) -> list[dict]:
    sinks = [_QueueSink(queue, unit, k) for k in range(len(configs))] if queue is not None else None
    return execute_unit(runner, configs, threads, sinks)


def run_ray(runner: Runner, units: list, record: Record, address, num_cpus, num_gpus, threads,
            ray_init: Mapping[str, Any] | None, open_live: OpenLive | None = None) -> None:
    """Every unit as a Ray task with its resource request; outcomes recorded here as they finish.

    address None starts a private instance on loopback (unless Ray is initialized already).
    open_live: as `run_local`; a unit's live points come back through a Ray queue, polled every 0.1 s,
    with the worker's time of each point (wandb's ``_timestamp``), and reach its sinks here, the unit's
    sinks opened when its first point arrives (when a worker starts it).
    """
    try:
        import ray
    except ImportError:
        raise RuntimeError("the ray executor needs Ray: pip install ray") from None
    started = False
    if not ray.is_initialized():
        if address is None:  # a private instance on this machine: loopback only, ends with this process
            start_private_ray(ray_init)
        else:
            check_ray_address(address)
            ray.init(address=address, **{"include_dashboard": False, "log_to_driver": False, **dict(ray_init or {})})
        started = True
    try:
        queue = None
        if open_live is not None:
            from ray.util.queue import Queue

            queue = Queue(actor_options={"num_cpus": 0})
        sinks: dict[int, list] = {}

        def drain() -> None:
            if queue is None:
                return
            n = queue.qsize()
            for i, k, metrics, step, t in (queue.get_nowait_batch(n) if n else []):
                if i not in sinks:
                    sinks[i] = open_live(units[i])
                sinks[i][k]({**metrics, "_timestamp": t}, step)  # wandb's time of the point: when it was computed

        remote = ray.remote(_execute_remote)
        pending = {}
        for i, unit in enumerate(units):
            cfgs = [c for _, c in unit]
            res = resources(runner, cfgs, num_cpus, num_gpus)
            t = threads or max(1, int(math.ceil(res["num_cpus"])))
            ref = remote.options(num_cpus=res["num_cpus"], num_gpus=res["num_gpus"], max_retries=0).remote(
                runner, cfgs, t, queue, i)
            pending[ref] = i
        while pending:
            done, _ = ray.wait(list(pending), num_returns=1, timeout=0.1 if queue is not None else None)
            drain()  # a finished task's points were all put before it returned
            if not done:
                continue
            i = pending.pop(done[0])
            try:
                outcomes = ray.get(done[0])
            except Exception as e:  # the worker died (OOM, node lost): record the runs as failed
                outcomes = [failure(e) for _ in units[i]]
            record(units[i], outcomes)
    finally:
        if started:
            ray.shutdown()
            if address is None:
                from .ray_watchdog import stop

                stop()
