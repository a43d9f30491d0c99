"""A private Ray instance listens on loopback only, ignores a stray RAY_ADDRESS and ends with its driver, even a
SIGKILLed one."""

import os
import select
import shutil
import signal
import subprocess
import sys
import time

import pytest

pytest.importorskip("ray", reason="ray is not installed (pip install ray, or the dev extra)")
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")

DRIVER = r'''
import os, sys, time
from paramlab.executors import start_private_ray
start_private_ray({"num_cpus": 1})
import ray

@ray.remote
def f():
    return os.getpid()

print("ready", ray.get(f.remote()), ray.get_runtime_context().gcs_address, flush=True)
time.sleep(600)
'''


def descendants(root: int) -> list[int]:
    from paramlab.ray_watchdog import _descendants

    return _descendants(root)


def alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except OSError:
        return False


def cmd(pid: int) -> str:
    """The program's file name (argv[0]'s last part, never cut: its directory is as long as the checkout's
    path) followed by its arguments, for messages."""
    try:
        with open(f"/proc/{pid}/cmdline") as f:
            argv = f.read().split("\0")
    except OSError:
        return "?"
    return " ".join([os.path.basename(argv[0]), *argv[1:]]).strip()


@pytest.fixture
def driver(tmp_path):
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    env.pop("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", None)  # the driver must set it itself
    env["RAY_ADDRESS"] = "127.0.0.1:1"  # a stray address: the private instance ignores it (else it hangs)
    err = open(tmp_path / "stderr", "w")
    proc = subprocess.Popen([sys.executable, "-c", DRIVER], stdout=subprocess.PIPE, stderr=err, text=True, env=env)
    ready, _, _ = select.select([proc.stdout], [], [], 120)
    line = proc.stdout.readline() if ready else ""
    if not line.startswith("ready"):
        proc.kill()
        pytest.fail("the driver did not start Ray within 120 s: " + (tmp_path / "stderr").read_text()[-2000:])
    assert "RAY_ADDRESS=127.0.0.1:1 is set in the environment and ignored" in (tmp_path / "stderr").read_text()
    proc.gcs_address = line.split()[2]
    time.sleep(2)  # agents up
    yield proc
    err.close()
    if proc.poll() is None:
        proc.kill()
        proc.wait()


@pytest.mark.slow
def test_private_ray_listens_on_loopback_only_and_ends_with_a_killed_driver(driver):
    import socket

    from paramlab.executors import _speaks_http2

    host, port = driver.gcs_address.rsplit(":", 1)
    with socket.create_connection((host, int(port)), timeout=5) as conn:  # what --address checks answers here
        assert _speaks_http2(conn, 5.0), "Ray's GCS did not answer the HTTP/2 preface"
    pids = set(descendants(driver.pid)) | {driver.pid}
    names = {p: cmd(p) for p in pids}
    programs = {n.split(" ", 1)[0] for n in names.values()}
    assert {"gcs_server", "raylet"} <= programs, f"no gcs_server and raylet among the driver's processes: {names}"
    if shutil.which("ss"):
        lines = subprocess.run(["ss", "-ltnpH"], capture_output=True, text=True).stdout.splitlines()
        ours = [ln for ln in lines if any(f"pid={p}," in ln for p in pids)]
        assert ours, "no listening socket found for the Ray processes"
        for ln in ours:
            local = ln.split()[3]
            assert local.startswith(("127.0.0.1:", "[::ffff:127.0.0.1]:", "[::1]:")), ln
    driver.send_signal(signal.SIGKILL)
    driver.wait()
    t0 = time.monotonic()
    while time.monotonic() - t0 < 10 and any(alive(p) for p in pids):
        time.sleep(0.5)
    left = {p: names[p] for p in pids if alive(p)}
    assert not left, f"Ray processes alive 10 s after the driver was killed: {left}"
