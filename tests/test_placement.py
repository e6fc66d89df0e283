"""Where the splits live while training (dlfm/training/placement.py): the choice, and the same batches everywhere."""

from __future__ import annotations

import pytest
import torch

from dlfm.training import TrainConfig, fit
from dlfm.training.batches import batch_indices
from dlfm.training.placement import DEVICE_MEMORY_FRACTION, FEEDERS, PLACEMENTS, choose_placement, split_bytes

from test_training import CLASSES, random_splits

GB = 1 << 30
SPLIT_15000 = 15000 * 64 * 64 * 4 + 15000 * 8  # the GPU-size train split: 245 MB of pixels and its labels


@pytest.mark.parametrize("nbytes, device_type, free, expected", [
    (SPLIT_15000, "cuda", 140 * GB, "device"),  # an idle H200
    (SPLIT_15000, "cuda", int(SPLIT_15000 / DEVICE_MEMORY_FRACTION), "device"),  # exactly the share
    (SPLIT_15000, "cuda", int(SPLIT_15000 / DEVICE_MEMORY_FRACTION) - 1, "pinned"),  # one byte short
    (200 * GB, "cuda", 140 * GB, "pinned"),  # a corpus larger than the card
    (SPLIT_15000, "cuda", None, "pinned"),  # free memory unknown: do not gamble on it
    (SPLIT_15000, "cpu", None, "host"),  # on the CPU the tensors stay as they are
    (SPLIT_15000, "mps", 140 * GB, "host"),
])
def test_placement_follows_free_device_memory(nbytes, device_type, free, expected):
    assert choose_placement(nbytes, device_type, free) == expected
    assert expected in PLACEMENTS and set(PLACEMENTS) == set(FEEDERS)


def test_shared_splits_are_counted_once():
    splits = random_splits(n=10, size=8)
    one = 10 * 8 * 8 * 4 + 10 * 8
    assert split_bytes([splits["train"], splits["train"], splits["val"]]) == 2 * one


def test_device_feeder_gives_the_host_feeders_batches():
    data = random_splits(n=20, size=8)["train"]
    order = batch_indices(20, 6, torch.Generator().manual_seed(0))
    host = list(FEEDERS["host"](data.images, data.labels, torch.device("cpu")).batches(order))
    device = list(FEEDERS["device"](data.images, data.labels, torch.device("cpu")).batches(order))
    assert len(host) == len(device) == 4
    for (i1, x1, y1), (i2, x2, y2) in zip(host, device):
        assert torch.equal(i1, i2) and torch.equal(x1, x2) and torch.equal(y1, y2)


def test_fit_on_device_placed_data_matches_the_host_path_and_reports_it():
    # On the CPU "device" placement runs the device feeder's code (indices moved once, gathers there).
    config = TrainConfig(objective="multitask", encoder="conv4", epochs=2, batch_size=8, seed=2)
    host = fit(config, random_splits(), CLASSES, progress=False)
    device = fit(config, random_splits(), CLASSES, progress=False, placement="device")
    assert host.data_placement == "host" and device.data_placement == "device"
    assert device.history == host.history
    assert device.final_metrics == host.final_metrics


@pytest.mark.cuda
def test_pinned_and_device_placement_on_a_gpu_match_the_host_path():
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA GPU")
    data = random_splits(n=50, size=16)["train"]
    order = batch_indices(50, 8, torch.Generator().manual_seed(0))
    cuda = torch.device("cuda")
    expected = [(x, y) for _, x, y in FEEDERS["host"](data.images, data.labels, torch.device("cpu")).batches(order)]
    for placement in ("pinned", "device"):
        images = data.images.pin_memory() if placement == "pinned" else data.images.to(cuda)
        labels = data.labels.pin_memory() if placement == "pinned" else data.labels.to(cuda)
        got = [(x.cpu(), y.cpu()) for _, x, y in FEEDERS[placement](images, labels, cuda).batches(order)]
        assert all(torch.equal(a, c) and torch.equal(b, d) for (a, b), (c, d) in zip(expected, got))
    config = TrainConfig(objective="multitask", encoder="resnet18", epochs=1, batch_size=16, device="cuda")
    assert fit(config, random_splits(n=48, size=64), CLASSES, progress=False).data_placement == "device"
