"""Graceful stops: SIGINT/SIGTERM set a flag that the loop checks after each optimiser step (every few under DDP;
evaluate also between cells).

The loop then raises ``TrainingInterrupted``; the last *completed* epoch is already checkpointed
(the partial epoch is discarded), so a resume continues at the next epoch and reproduces an
uninterrupted run (a streamed corpus instead saves the weights mid-epoch with the shards done: see
``dlfm.training.streaming``). No MLflow here: the stage turns the exception into a KILLED run.
"""

from __future__ import annotations

import contextlib
import signal
import threading
import time
from typing import Iterator

import torch

from dlfm.signals import note_stop_requested

STOP_SIGNALS = (signal.SIGINT, signal.SIGTERM)
DUPLICATE_WINDOW_S = 1.0  # a second stop signal this soon after the first is the same request (s)


class TrainingInterrupted(KeyboardInterrupt):
    """Training stopped on a signal after ``last_epoch`` completed epochs (a KeyboardInterrupt, so nothing swallows it)."""

    def __init__(self, signal_name: str, last_epoch: int):
        self.signal_name = signal_name
        self.last_epoch = last_epoch
        self.signal_number = int(getattr(signal, signal_name, signal.SIGINT))
        super().__init__(f"{signal_name} received; stopped after epoch {last_epoch} (its checkpoint is the last one)")


class GridInterrupted(KeyboardInterrupt):
    """An evaluate grid stopped on a signal at a safe point (between batches or cells); finished cells stay FINISHED."""

    def __init__(self, signal_name: str, done: int, total: int):
        self.signal_name = signal_name
        self.done = done  # cells with a FINISHED child run
        self.total = total  # cells in the grid
        self.signal_number = int(getattr(signal, signal_name, signal.SIGINT))
        super().__init__(f"{signal_name} received; stopped with {done} of {total} cells finished (they are kept)")


class StopRequest:
    """The flag a signal handler sets; ``requested`` agrees across DDP ranks so no rank waits on another."""

    def __init__(self) -> None:
        self.signal_name: str | None = None

    def set(self, signal_name: str) -> None:
        self.signal_name = signal_name

    def check(self, done: int = 0, total: int = 0) -> None:
        """A safe point of an evaluate grid: raise GridInterrupted if a stop was requested."""
        if self.signal_name is not None:
            raise GridInterrupted(self.signal_name, done, total)

    def requested(self, world_size: int = 1, device: torch.device | None = None) -> bool:
        """Whether any rank got a stop signal (one tiny all-reduce under DDP, so the loop asks every few steps there)."""
        local = self.signal_name is not None
        if world_size == 1:
            return local
        flag = torch.tensor([1 if local else 0], device=device)
        torch.distributed.all_reduce(flag, op=torch.distributed.ReduceOp.MAX)
        if flag.item() and not local:
            self.signal_name = "SIGTERM"  # another rank was signalled (torchrun forwards SIGTERM)
        return bool(flag.item())


@contextlib.contextmanager
def graceful_stop(stop: StopRequest) -> Iterator[StopRequest]:
    """While inside, the first SIGINT/SIGTERM sets ``stop``; a second one interrupts at once."""
    if threading.current_thread() is not threading.main_thread():
        yield stop  # signal handlers can only be installed from the main thread
        return

    first_at: list[float] = []

    def handler(signum, frame):
        name = signal.Signals(signum).name
        if stop.signal_name is not None:
            # One stop often arrives twice at once: `kill -TERM -<group>` (timeout, schedulers) reaches us
            # directly and again as the launcher's death signal. Only a later signal means "stop now".
            if time.monotonic() - first_at[0] < DUPLICATE_WINDOW_S:
                return
            raise KeyboardInterrupt(f"second {name}: stopping now")  # the user insists; the last checkpoint stands
        first_at.append(time.monotonic())
        stop.set(name)
        note_stop_requested()  # once this block ends, a late duplicate SIGTERM must not interrupt the cleanup

    previous = {sig: signal.signal(sig, handler) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, old in previous.items():
            signal.signal(sig, old)
