"""What ``batch_size=auto`` resolves to, and where channels_last pays: one table, measured on one H200.

On the CPU (and MPS) ``auto`` is the batch the stages always used, so CPU results do not change. On CUDA the
batch is picked per encoder kind and image size so the card is busy, then capped so an epoch keeps at least
``MIN_STEPS_PER_EPOCH`` optimiser steps (a small dataset is not trained in two giant steps).
"""

from __future__ import annotations

AUTO = "auto"
CPU_BATCH = 64  # the training stages' batch before `auto`: what every CPU result in docs/ was measured at
MIN_STEPS_PER_EPOCH = 16  # auto never shrinks an epoch below this many steps (but never goes under CPU_BATCH)
REFERENCE_SIDE = 64  # (px) the image side the CUDA table was measured at (Model II)
# CUDA batch at REFERENCE_SIDE per encoder kind, measured with benchmarks/gpu_throughput.py on one H200 (issue 29,
# docs/gpus.md; ResNet18, 15360 images of 64 px):
#   cnn  1024: multitask 16.6k img/s at batch 256 vs 24k at 1024 (placement, no-sync), 42-58k at 1024 with
#              channels_last; mae 23.6k at 1024. At 256 the GPU idles between small kernels (SM 51-64 %).
#   vit   256: ViT-small mae ran ~6.9k img/s at batch 256 and at 512 alike with the old block. With the SDPA block
#              (docs/results/gpu-2026-12-04.md): 5.0k at 256 (SM busy 44 %) vs 14.5k at 1024, but at 1024 the MAE
#              recipe had not reached the 0.8 position-only ratio in 26 epochs (256: by epoch 19). Kept at 256 until a
#              run shows 1024 learns as well per epoch.
# Larger images keep the activation memory of the reference: the batch scales with (REFERENCE_SIDE / side)².
CUDA_BATCH = {"cnn": 1024, "vit": 256}
CHANNELS_LAST_MIN_CUDA_BATCH = 1024  # NHWC on CUDA: 42-58k img/s at batch 1024, but 14.3k vs 16.6k (slower) at 256


def power_of_two_at_most(value: float) -> int:
    """The largest power of two not above ``value`` (1 at least)."""
    power = 1
    while power * 2 <= value:
        power *= 2
    return power


def auto_batch_size(encoder_kind: str, image_side: int, device_type: str, n_train: int) -> int:
    """The batch ``auto`` stands for: CPU_BATCH off CUDA; on CUDA the table's, scaled to the image, capped by the data."""
    if device_type != "cuda":
        return CPU_BATCH
    scaled = CUDA_BATCH.get(encoder_kind, CPU_BATCH) * (REFERENCE_SIDE / max(image_side, REFERENCE_SIDE)) ** 2
    capped = min(scaled, n_train / MIN_STEPS_PER_EPOCH)
    return max(CPU_BATCH, power_of_two_at_most(capped))


def channels_last_pays(device_type: str, batch_size: int) -> bool:
    """NHWC convolutions where measured to pay: always on the CPU (oneDNN, 6-8 % fewer CPU-s), on CUDA from batch 1024."""
    if device_type == "cpu":
        return True
    return device_type == "cuda" and batch_size >= CHANNELS_LAST_MIN_CUDA_BATCH
