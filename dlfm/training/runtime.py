"""Device, AMP and rank, resolved once up front so the loop has no branches for them."""

from __future__ import annotations

import contextlib
import os
import random
from dataclasses import dataclass
from typing import Callable, ContextManager

import numpy as np
import torch
from torch import nn

from dlfm.errors import ConfigError
from dlfm.training.batching import channels_last_pays
from dlfm.training.config import PRECISIONS  # the `precision` param of every training stage and evaluate


@dataclass
class Runtime:
    device: torch.device
    autocast: Callable[[], ContextManager]  # a fresh autocast context (nullcontext on the CPU)
    scaler: torch.amp.GradScaler  # enabled only for fp16 autocast
    amp_dtype: str  # the resolved precision: "bf16", "fp16" (CUDA without bf16, with a GradScaler) or "fp32"
    rank: int = 0
    world_size: int = 1
    channels_last: bool = False  # convolutional models in NHWC memory format (on CUDA: faster kernels, tensor cores)

    @property
    def is_main_process(self) -> bool:
        """Only rank 0 logs, checkpoints and registers."""
        return self.rank == 0


def resolve_device(requested: str) -> torch.device:
    """auto → cuda, then mps, then cpu; an explicit device that is absent is a ConfigError."""
    if requested == "auto":
        if torch.cuda.is_available():
            return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
        if getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
            return torch.device("mps")
        return torch.device("cpu")
    if requested == "cuda" and not torch.cuda.is_available():
        raise ConfigError("device=cuda was requested but no CUDA GPU is visible; use device=auto or device=cpu")
    if requested == "mps" and not (getattr(torch.backends, "mps", None) and torch.backends.mps.is_available()):
        raise ConfigError("device=mps was requested but MPS is not available; use device=auto or device=cpu")
    if requested == "cuda":
        return torch.device("cuda", int(os.environ.get("LOCAL_RANK", 0)))
    return torch.device(requested)


# /proc/cpuinfo flags of CPUs with bf16 matmul units: Sapphire Rapids AMX tiles, Cooper Lake/Zen 4 AVX-512 BF16.
# Elsewhere CPU bf16 autocast is emulated and slower than fp32, so auto keeps fp32 there.
CPU_BF16_FLAGS = ("amx_bf16", "avx512_bf16")


def cpu_flags(path: str = "/proc/cpuinfo") -> frozenset[str]:
    """The CPU feature flags the kernel reports (empty where there is no /proc/cpuinfo, e.g. macOS)."""
    try:
        with open(path) as handle:
            for line in handle:
                if line.startswith("flags"):
                    return frozenset(line.partition(":")[2].split())
    except OSError:
        pass
    return frozenset()


def cpu_has_bf16(flags: frozenset[str] | None = None) -> bool:
    """Whether the CPU computes bf16 natively (AMX or AVX-512 BF16)."""
    # torch's capability string names the widest kernels it dispatches to (AVX2, AVX512, ...), not bf16
    # itself, so the kernel's flags decide; a build that reports AMX/BF16 there counts too.
    capability = torch.backends.cpu.get_cpu_capability().lower() if flags is None else ""
    flags = cpu_flags() if flags is None else flags
    return any(flag in flags for flag in CPU_BF16_FLAGS) or "bf16" in capability or "amx" in capability


def resolve_precision(requested: str, device: torch.device, flags: frozenset[str] | None = None,
                      cuda_bf16: bool | None = None) -> str:
    """auto | fp32 | bf16 → the precision the stage runs in: "fp32", "bf16" or "fp16".

    auto: bf16 on CUDA GPUs that support it and on CPUs with AMX or AVX-512 BF16; fp16 (with a
    GradScaler, as before this param existed) on older CUDA GPUs; fp32 elsewhere. ``flags`` and
    ``cuda_bf16`` override the probes (tests). An explicit bf16 on a CUDA GPU without it is a ConfigError;
    on a CPU without native bf16 it is honoured (emulated: slower, but the user asked).
    """
    if requested not in PRECISIONS:
        raise ConfigError(f"unknown precision {requested!r}; choose one of {', '.join(PRECISIONS)}")
    if requested == "fp32":
        return "fp32"
    if device.type == "cuda":
        supported = torch.cuda.is_bf16_supported() if cuda_bf16 is None else cuda_bf16
        if requested == "bf16" and not supported:
            raise ConfigError("precision=bf16 was requested but this CUDA GPU has no bf16; use precision=auto or fp32")
        return "bf16" if supported else "fp16"
    if requested == "bf16":
        return "bf16"
    return "bf16" if device.type == "cpu" and cpu_has_bf16(flags) else "fp32"


def autocast_for(device: torch.device, precision: str) -> Callable[[], ContextManager]:
    """A factory of fresh autocast contexts for a resolved precision (nullcontext for fp32)."""
    if precision == "fp32":
        return contextlib.nullcontext
    dtype = torch.bfloat16 if precision == "bf16" else torch.float16
    return lambda: torch.autocast(device.type, dtype=dtype)


def one_blas_thread() -> ContextManager:
    """BLAS on one thread, for the small scikit-learn fits of the probes: threads that spin on a busy 2-core box made
    a 600-label cross-validated fit 30x slower (40 s against 1.3 s, docs/results-log.md 2026-12-04 evening)."""
    from threadpoolctl import threadpool_limits

    return threadpool_limits(1)


def make_runtime(requested_device: str, precision: str = "auto") -> Runtime:
    """Device, precision (autocast + GradScaler for fp16), rank: resolved once, before the loop."""
    device = resolve_device(requested_device)
    rank = int(os.environ.get("RANK", 0))
    world_size = int(os.environ.get("WORLD_SIZE", 1))
    resolved = resolve_precision(precision, device)
    scaler = torch.amp.GradScaler(device.type if device.type == "cuda" else "cpu", enabled=resolved == "fp16")
    # NHWC convolutions where measured to pay (dlfm/training/batching.py): on a 2-core AVX2 CPU (oneDNN) 6-8 % fewer
    # CPU-seconds per ResNet18 train step at batch 64 (docs/results-log.md, issue 20); on CUDA only from batch 1024, which
    # `fit` decides once it knows the batch. MPS keeps NCHW (not measured there).
    return Runtime(device, autocast_for(device, resolved), scaler, resolved, rank, world_size,
                   channels_last=channels_last_pays(device.type, batch_size=0))


CHANNELS_LAST_DEVICES = ("cuda", "cpu")  # where NHWC kernels exist (benchmarks/gpu_throughput.py's rung)


def prefers_channels_last(model: nn.Module) -> bool:
    """Whether the model is convolutional: more than one Conv2d (a ViT has one, its patch embedding)."""
    return sum(isinstance(module, nn.Conv2d) for module in model.modules()) > 1


COMPILE_BACKEND = "inductor"  # torch.compile's default; tests swap in "eager" to check the wiring without codegen


def compile_model(model: nn.Module) -> nn.Module:
    """``torch.compile(model)``: the compiled forward shares the model's parameters and state_dict."""
    return torch.compile(model, backend=COMPILE_BACKEND)


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a CPU generator for shuffling and augmentation."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator
