"""torchrun/DDP plumbing: launch, process group, rank checks. Only rank 0 logs, checkpoints and registers."""

from __future__ import annotations

import os
import subprocess
import sys

import torch

from dlfm.errors import ConfigError


def world_size() -> int:
    """Processes in this job (1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", 1))


def is_main_rank() -> bool:
    """True on rank 0 (and without torchrun)."""
    return int(os.environ.get("RANK", 0)) == 0


def under_torchrun() -> bool:
    """Whether torchrun started this process."""
    return "LOCAL_RANK" in os.environ and "WORLD_SIZE" in os.environ


def check_nproc(nproc: int, device: str) -> None:
    """nproc ≥ 1, and on CUDA no more processes than visible GPUs."""
    if not isinstance(nproc, int) or nproc < 1:
        raise ConfigError(f"nproc must be a positive integer, got {nproc!r}")
    wants_cuda = device == "cuda" or (device == "auto" and torch.cuda.is_available())
    if wants_cuda and nproc > torch.cuda.device_count():
        raise ConfigError(f"nproc={nproc} but only {torch.cuda.device_count()} CUDA device(s) are visible; "
                          f"use nproc <= {torch.cuda.device_count()} (or device=cpu for gloo processes)")


def relaunch_with_torchrun(nproc: int, script: str, argv: list[str]) -> int:
    """Run ``script argv`` under ``torchrun --standalone --nproc_per_node=nproc``; return its exit code.

    ``--nproc`` is dropped from argv: torchrun's own parser would take it as an abbreviation of
    ``--nproc-per-node``, and the ranks read the world size from the environment anyway.
    """
    kept, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            kept.append(arg)
    argv = kept
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc_per_node={nproc}", script, *argv]
    return subprocess.call(command)


def init_process_group(device: torch.device) -> None:
    """Join the torchrun process group (nccl on CUDA, gloo on the CPU); no-op for one process."""
    if world_size() == 1 or torch.distributed.is_initialized():
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    torch.distributed.init_process_group(backend="nccl" if device.type == "cuda" else "gloo")


def barrier() -> None:
    """Wait for every rank (no-op for one process)."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.barrier()


def destroy_process_group() -> None:
    """Leave the process group at the end of a run."""
    if torch.distributed.is_available() and torch.distributed.is_initialized():
        torch.distributed.destroy_process_group()
