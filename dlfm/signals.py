"""Process-level signal set-up for entry points (no torch here: the `dlfm` CLI must start fast)."""

from __future__ import annotations

import signal
import threading


_stopping = threading.Event()  # a stop was requested: later SIGTERMs are the same request, never a second exception


def note_stop_requested() -> None:
    """Record that this process is stopping (graceful_stop's flag was set), so a later SIGTERM cannot interrupt the cleanup."""
    _stopping.set()


def sigterm_raises_keyboard_interrupt() -> None:
    """Make SIGTERM behave like Ctrl-C (KeyboardInterrupt), so runs end KILLED instead of staying RUNNING.

    Only the first SIGTERM raises. One stop often arrives twice (the process group's signal, then the
    launcher's death signal); a second KeyboardInterrupt would land in the middle of the cleanup that ends
    the run KILLED (a "database is locked" traceback, the run left RUNNING and SQLite's lock held).
    """
    if threading.current_thread() is not threading.main_thread():
        return

    def handler(signum, frame):
        if _stopping.is_set():
            return
        _stopping.set()
        raise KeyboardInterrupt(signal.Signals(signum).name)

    signal.signal(signal.SIGTERM, handler)


def stop_when_parent_dies(always: bool = False) -> None:
    """Under ``mlflow run`` (or ``always``: a worker process), get SIGTERM when the parent dies, so the run stops KILLED
    instead of running on orphaned.

    ``mlflow run`` dies at once on SIGTERM (Python's default action) without passing the signal to
    the entry point, which would keep training, unseen, and later end FINISHED. Linux's
    ``PR_SET_PDEATHSIG`` delivers our SIGTERM when the parent goes; elsewhere this does nothing.
    """
    import ctypes
    import os
    import sys

    if not sys.platform.startswith("linux") or not (always or "MLFLOW_RUN_ID" in os.environ):
        return
    try:
        libc = ctypes.CDLL(None, use_errno=True)
        pr_set_pdeathsig = 1
        libc.prctl(pr_set_pdeathsig, int(signal.SIGTERM), 0, 0, 0)
    except (OSError, AttributeError):
        return
    if os.getppid() == 1:  # the launcher died before prctl took effect
        signal.raise_signal(signal.SIGTERM)
