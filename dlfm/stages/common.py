"""What stages share: dataset resolution and the loop's tensors, and the line naming the device.

Dataset resolution lives in ``dlfm.sources`` and the split tensors in ``dlfm.data.tensors`` (so ``dlfm.tune``
workers need not import a stage); they are re-exported here for the stages.
"""

from dlfm.data.tensors import split_tensors
from dlfm.sources import resolve_dataset

__all__ = ["announce_device", "device_line", "resolve_dataset", "split_tensors"]


def device_line(runtime, requested: str) -> str:
    """The device a stage resolved, in one line: ``dlfm: device cuda (NVIDIA H200, bf16)``.

    ``device=auto`` falls back to the CPU when there is no GPU; this line says so at the start,
    rather than only in the run's ``dlfm.device`` tag.
    """
    import torch

    kind = runtime.device.type
    if kind == "cuda":
        what = torch.cuda.get_device_name(runtime.device)
    elif kind == "mps":
        what = "Apple GPU"
    else:
        what = "no CUDA GPU found" if requested == "auto" else "as requested"
    processes = f", {runtime.world_size} processes" if runtime.world_size > 1 else ""
    return f"dlfm: device {kind} ({what}, {runtime.amp_dtype}{processes})"


def announce_device(runtime, requested: str) -> None:
    """Print ``device_line`` once (rank 0)."""
    if runtime.is_main_process:
        print(device_line(runtime, requested), flush=True)
