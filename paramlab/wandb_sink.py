"""The wandb side of a run: a small sink that `paramlab.tracking.Run` mirrors its records into.

OFFLINE unless the user explicitly set ``WANDB_MODE`` (or passed ``mode``). Online, ``wandb.init``
waits at most `ONLINE_INIT_TIMEOUT` seconds for the server (wandb's own default is 90 s, paid by
every run of a sweep when the network is down); the first online start that fails (no network, a
bad key) switches this process to offline for every later run, with one warning: the runs land in
their offline folders, ready for ``paramlab sync``. The sink never crashes a run: if wandb cannot be
imported or started, or fails mid-run, it warns once per cause and process, records the error in the
run's meta, and turns itself off; the local store carries on.

Live points (`live.emit` while a sweep trains, see `paramlab.wandb_live`) go through `live`; the
sink remembers their keys, and the history the sweep replays into `log` afterwards skips those
keys, so wandb holds each point once, at the time it was computed.

What wandb 0.31 writes in an offline run folder (checked, see tests/test_tracking.py)::

    offline-run-<YYYYMMDD_HHMMSS>-<id>/
        run-<id>.wandb          binary record log (config, history, summary, ...): no public reader;
                                `wandb sync <folder>` uploads it, `wandb leet` shows it in a terminal
        files/requirements.txt  `pip freeze` of the environment
        files/media/...         tables (table/<name>_<step>_<hash>.table.json) and images
        files/output.log        console capture (not with console="off", which paramlab uses)
        logs/debug.log          the SDK log; one line ``config: {...}`` holds the init config as a
                                Python repr, which `paramlab.records.find_wandb_offline_runs` parses
        logs/debug-internal.log, logs/debug-core.log, tmp/
    No files/config.yaml, files/wandb-summary.json or files/wandb-metadata.json offline (online
    runs and older wandb versions write them; the reader uses them when present).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Callable

_WARNED: set[str] = set()
ONLINE_INIT_TIMEOUT = 6.0  # seconds wandb.init may wait for the server (wandb's default: 90)
# Why online wandb failed in this process (None: it has not): every later run goes offline at once.
_ONLINE_DOWN: str | None = None
_PROJECT_BAD = re.compile(r"[/\\#?%:&,'\"<>|\s]")  # characters W&B refuses in a project name


def check_project(name: str | None) -> str | None:
    """`name` if W&B accepts it as a project name (1-128 characters, none of ``/ \\ # ? % : & , ' " < > |``
    nor whitespace), else ValueError naming the fault. None passes (the default applies)."""
    if name is None:
        return None
    if not isinstance(name, str) or not name or len(name) > 128 or _PROJECT_BAD.search(name):
        raise ValueError(f"malformed wandb project name {name!r}: use 1-128 letters, digits, '-', '_' or '.' "
                         "(no '/', spaces or '#?%:&,\'\"<>|')")
    return name


def warn_once(key: str, message: str, stacklevel: int = 3) -> None:
    """A RuntimeWarning once per `key` and process (a sweep may start thousands of runs)."""
    if key in _WARNED:
        return
    _WARNED.add(key)
    warnings.warn(message, RuntimeWarning, stacklevel=stacklevel)


def _env_off(name: str) -> bool:
    return os.environ.get(name, "").strip().lower() in ("0", "false", "no", "off")


def wandb_enabled(use_wandb: bool = True) -> bool:
    """Whether a run would use wandb: ``use_wandb`` and not ``PARAMLAB_WANDB=0`` (or false/no/off)
    and not ``WANDB_MODE=disabled`` / ``WANDB_DISABLED=true``."""
    if not use_wandb or _env_off("PARAMLAB_WANDB"):
        return False
    if os.environ.get("WANDB_MODE", "").strip().lower() == "disabled":
        return False
    if os.environ.get("WANDB_DISABLED", "").strip().lower() in ("1", "true", "yes"):
        return False
    return True


def resolve_wandb_mode(explicit: str | None = None) -> str:
    """The mode a run uses: `explicit`, else ``$WANDB_MODE``, else "offline"."""
    return explicit or os.environ.get("WANDB_MODE", "").strip() or "offline"


class WandbSink:
    """One wandb run mirroring one paramlab run; every call is a no-op once wandb is off.

    info: the dict recorded as the run's ``meta["wandb"]`` (enabled, mode, project, group, job_type,
    id, dir, error); the sink keeps it up to date. `run` is the ``wandb.Run`` or None.
    """

    def __init__(self, info: dict):
        self.info = info
        self.run = None
        self._last_step: int | None = None
        self.live_keys: set[str] = set()  # keys sent live: the replayed history skips them

    def start(self, *, run_dir: Path, name: str, group: str, job_type: str, tags: list[str], config: Mapping,
              project: str | None, mode: str, settings: Mapping[str, Any] | None, entity: str | None = None) -> None:
        global _ONLINE_DOWN
        self.info.clear()
        self.info.update(enabled=False, mode=mode)
        try:
            import wandb
        except Exception as e:  # ImportError, or a broken install (protobuf mismatch etc.)
            self.info["error"] = f"import failed: {type(e).__name__}: {e}"
            warn_once("wandb-import", f"paramlab.tracking: cannot import wandb ({e}); local store only", 5)
            return
        entity = entity or os.environ.get("WANDB_ENTITY") or None
        self.info.update(project=project or os.environ.get("WANDB_PROJECT") or "paramlab", group=group,
                         job_type=job_type, **({"entity": entity} if entity else {}))
        if mode == "online" and _ONLINE_DOWN is not None:
            mode = self.info["mode"] = "offline"
            self.info["fallback"] = _ONLINE_DOWN
        # silent + console="off": no banner, no stdout capture (paramlab's stdout stays clean);
        # reinit="create_new": each paramlab Run owns its wandb run, several runs (a stacked unit's)
        # live in one process at once, and a user's own wandb run is never finished behind their back.
        base = {"silent": True, "console": "off"}
        if mode == "online" and not os.environ.get("WANDB_INIT_TIMEOUT"):
            base["init_timeout"] = ONLINE_INIT_TIMEOUT
        kwargs = dict(project=self.info["project"], entity=entity, dir=str(run_dir), name=name, group=group,
                      job_type=job_type, tags=[t[:64] for t in tags], config=dict(config), reinit="create_new")
        try:
            self.run = wandb.init(mode=mode, settings=wandb.Settings(**{**base, **dict(settings or {})}), **kwargs)
        except Exception as e:
            if mode != "online":
                self.info["error"] = f"init failed: {type(e).__name__}: {e}"
                warn_once("wandb-init", f"paramlab.tracking: wandb.init failed ({e}); local store only", 5)
                self.run = None
                return
            # the server is out of reach (no network, a bad key): offline for the rest of this process
            _ONLINE_DOWN = f"{type(e).__name__}: {str(e).splitlines()[0] if str(e) else ''}"[:300]
            warn_once("wandb-online", f"paramlab.tracking: wandb could not start online ({_ONLINE_DOWN}); this "
                                      "process logs offline from now on (upload later: paramlab sync GROUP_DIR)", 5)
            self.info.update(mode="offline", fallback=_ONLINE_DOWN)
            try:
                self.run = wandb.init(mode="offline", settings=wandb.Settings(**{**base, "init_timeout": 90,
                                                                                 **dict(settings or {})}), **kwargs)
            except Exception as e2:
                self.info["error"] = f"init failed: {type(e2).__name__}: {e2}"
                warn_once("wandb-init", f"paramlab.tracking: wandb.init failed ({e2}); local store only", 5)
                self.run = None
                return
        self.info["enabled"] = True
        self.info["id"] = getattr(self.run, "id", None)
        try:
            self.info["dir"] = os.path.relpath(self.run.settings.sync_dir, run_dir)
        except Exception:
            self.info["dir"] = None

    def _call(self, fn: Callable, *args, **kwargs) -> None:
        # Any wandb error mid-run (service died, disk full in its dir...) turns wandb off for this
        # run; the local store keeps going.
        if self.run is None:
            return
        try:
            fn(*args, **kwargs)
        except Exception as e:
            self.info["error"] = f"{type(e).__name__}: {e}"
            warn_once("wandb-call", f"paramlab.tracking: wandb call failed ({e}); local store only")
            run, self.run = self.run, None
            try:
                run.finish(exit_code=1)
            except Exception:
                pass

    def live(self, metrics: Mapping[str, Any], step: int) -> None:
        """A point sent while the run trains (a `paramlab.live` sink): logged now; its keys are not
        replayed by `log` afterwards."""
        if self.run is None:
            return
        if self._last_step is not None and step < self._last_step:
            warn_once("wandb-live-step", f"paramlab.live: a point at step {step} after step {self._last_step} is not "
                                         "sent to wandb (a second training inside one run? wrap it in "
                                         "`with live.sending_to([]):` if its points are not the run's)")
            return
        self.live_keys.update(k for k in metrics if not k.startswith("_"))  # not wandb's own (_timestamp)
        self.log(metrics, step, replay=False)

    def log(self, metrics: Mapping[str, Any], step: int, replay: bool = True) -> None:
        """wandb.log at `step`; wandb drops steps lower than one logged already, so those are skipped.
        replay: a recorded history row; keys already sent live are left out (wandb holds them)."""
        if self.run is None:
            return
        if replay and self.live_keys:
            metrics = {k: v for k, v in metrics.items() if k not in self.live_keys}
            if not metrics:
                return
        if self._last_step is not None and step < self._last_step:
            warn_once("wandb-step", "paramlab.tracking: a step lower than one already logged goes to the local "
                                    "store only (wandb needs non-decreasing steps)")
            return
        self._last_step = step
        self._call(self.run.log, dict(metrics), step=step)

    def summary(self, values: Mapping[str, Any]) -> None:
        if self.run is not None:
            self._call(self.run.summary.update, dict(values))

    def media(self, name: str, step: int, make: Callable[[Any], Any]) -> None:
        """Log `make(wandb)` (a wandb.Table or wandb.Image) under `name` at `step` (or the current row)."""
        if self.run is None:
            return
        import wandb

        if self._last_step is not None and step < self._last_step:
            step = self._last_step  # wandb would drop it; attach to the current row
        self._last_step = step
        try:
            obj = make(wandb)
        except Exception as e:  # e.g. an image format PIL cannot read: the local copy is kept
            warn_once("wandb-media", f"paramlab.tracking: wandb could not wrap {name!r} ({e})")
            return
        self._call(self.run.log, {name: obj}, step=step)

    def finish(self, status: str, error: str | None) -> None:
        """Set the summary's status (and error) and finish: exit code 1 for "failed" (wandb shows it
        failed); "diverged" is a normal outcome."""
        if self.run is None:
            return
        self._call(self.run.summary.update, {"status": status} if error is None else
                   {"status": status, "error": error[-1000:]})
        if self.run is None:
            return
        run, self.run = self.run, None
        try:
            run.finish(exit_code=1 if status == "failed" else 0)
        except Exception as e:
            self.info["error"] = f"finish failed: {type(e).__name__}: {e}"
            warn_once("wandb-finish", f"paramlab.tracking: wandb finish failed ({e})")
