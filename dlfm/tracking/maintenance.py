"""Runs left RUNNING by processes that died (SIGKILL, OOM killer, power loss): find them, mark them FAILED.

A run's heartbeat is the latest of its start time, the time a process (re)opened it (tag
``dlfm.started_at``) and its last metric timestamp (system metrics tick every few seconds
while a training process lives). A stale run is dead when its process is gone on this host
(tags ``dlfm.pid`` and ``dlfm.host``), or, for another host, when it has been silent for much longer.
"""

from __future__ import annotations

import socket
import time
from dataclasses import dataclass

from dlfm.errors import ConfigError
from dlfm.tracking.runs import ERROR_TAG
from dlfm.tracking.store import configure_tracking

STALE_AFTER_S = 300.0  # same host: silent this long and the pid is gone
OTHER_HOST_STALE_AFTER_S = 3600.0  # another host: we cannot see its processes, so wait much longer
REPAIRED_TAG = "dlfm.repaired"


def _client():
    from mlflow import MlflowClient

    return MlflowClient()


@dataclass
class RunHealth:
    run_id: str
    run_name: str
    experiment: str
    host: str
    pid: int | None
    heartbeat: float  # epoch seconds of the last sign of life
    silent_s: float  # seconds since then
    verdict: str  # "alive" | "dead" | "unknown"
    reason: str


def heartbeat(run, client=None) -> float:
    """Epoch seconds of the run's last sign of life: start, (re)open or its newest metric."""
    client = client or _client()
    times = [run.info.start_time / 1000]
    started = run.data.tags.get("dlfm.started_at")
    if started:
        from dlfm.tracking.runs import parse_time_tag

        parsed = parse_time_tag(started)
        if parsed is not None:
            times.append(parsed)
    for key in run.data.metrics:
        history = client.get_metric_history(run.info.run_id, key)
        if history:
            times.append(max(m.timestamp for m in history) / 1000)
    return max(times)


def process_alive(pid: int, not_after: float) -> bool:
    """Whether ``pid`` runs here and started no later than ``not_after`` (a reused pid is a new process)."""
    import psutil

    try:
        return psutil.Process(pid).create_time() <= not_after + 1.0
    except (psutil.NoSuchProcess, psutil.AccessDenied, ValueError):
        return False


def run_health(run, experiment: str = "", stale_after: float = STALE_AFTER_S,
               other_host_stale_after: float = OTHER_HOST_STALE_AFTER_S, now: float | None = None, client=None) -> RunHealth:
    """Judge one RUNNING run from its heartbeat, pid and host tags."""
    now = time.time() if now is None else now
    beat = heartbeat(run, client)
    silent = now - beat
    host = run.data.tags.get("dlfm.host", "")
    try:
        pid = int(run.data.tags["dlfm.pid"])
    except (KeyError, ValueError):
        pid = None
    here = host == socket.gethostname()
    beat_text = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(beat))
    if here and pid is not None and process_alive(pid, beat):
        verdict, reason = "alive", f"process {pid} is alive"
    elif silent < stale_after:
        verdict, reason = "unknown", f"heartbeat {silent:.0f} s ago (< {stale_after:.0f} s)"
    elif here and pid is not None:
        verdict, reason = "dead", f"process {pid} on {host} is gone and the run is silent since {beat_text}"
    elif silent >= other_host_stale_after:
        where = f"process {pid} on another host ({host})" if host else "its process (no pid/host tags)"
        verdict, reason = "dead", f"{where} is silent since {beat_text} (> {other_host_stale_after:.0f} s)"
    else:
        verdict, reason = "unknown", f"on another host ({host or '?'}), silent {silent:.0f} s (< {other_host_stale_after:.0f} s)"
    return RunHealth(run.info.run_id, run.info.run_name or "", experiment, host, pid, beat, silent, verdict, reason)


def running_runs(experiment_name: str | None = None) -> list[tuple[object, str]]:
    """(run, experiment name) for every RUNNING run, in one experiment or all of them."""
    from mlflow.entities import ViewType

    configure_tracking()
    client = _client()
    if experiment_name:
        experiment = client.get_experiment_by_name(experiment_name)
        if experiment is None:
            names = ", ".join(e.name for e in client.search_experiments()) or "none"
            raise ConfigError(f"no experiment named {experiment_name!r}; existing: {names}")
        experiments = [experiment]
    else:
        experiments = client.search_experiments(view_type=ViewType.ACTIVE_ONLY)
    found = []
    for experiment in experiments:
        runs = client.search_runs([experiment.experiment_id], filter_string="attributes.status = 'RUNNING'",
                                  max_results=5000)
        found.extend((run, experiment.name) for run in runs)
    return found


def find_dead_runs(experiment_name: str | None = None, stale_after: float = STALE_AFTER_S,
                   other_host_stale_after: float = OTHER_HOST_STALE_AFTER_S) -> list[RunHealth]:
    """Every RUNNING run with its verdict (alive, dead or unknown)."""
    client = _client()
    now = time.time()
    return [run_health(run, name, stale_after, other_host_stale_after, now, client)
            for run, name in running_runs(experiment_name)]


def mark_failed(health: RunHealth) -> None:
    """End a dead run FAILED with the reason in ``dlfm.error`` (only if it is still RUNNING)."""
    from dlfm.tracking.trials import terminate_run

    terminate_run(health.run_id, "FAILED", {
        ERROR_TAG: f"{health.reason}; marked FAILED by `dlfm runs repair`",
        REPAIRED_TAG: time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    })
