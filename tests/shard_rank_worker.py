"""One torchrun rank of tests/test_shards.py's two-node test: pretrain one epoch on a sharded corpus under DDP (gloo)
and write the ids of the images this rank trained on to ``<out>/rank<RANK>.json``. Not a test module itself."""

import json
import os
import sys
from pathlib import Path

import numpy as np
import torch

from dlfm.data.shards import load_sharded_dir
from dlfm.data.tensors import split_tensors
from dlfm.training import TrainConfig, distributed, fit
from dlfm.training.context import SplitTensors
from dlfm.training.runtime import make_runtime


class RecordingStream:
    """The real ShardStream, passed through, keeping the ids (labels) of the images this rank trained on."""

    def __init__(self, stream):
        self.stream, self.seen = stream, []

    def steps(self, *args):
        return self.stream.steps(*args)

    def batches(self, *args):
        for images, labels, window, last in self.stream.batches(*args):
            self.seen.extend(labels.tolist())
            yield images, labels, window, last


def main(corpus: str, out: str) -> None:
    runtime = make_runtime("cpu")
    distributed.init_process_group(runtime.device)
    dataset = load_sharded_dir(Path(corpus))
    splits = {split: split_tensors(dataset, split) for split in ("train", "val", "test")}
    splits["train"].stream = RecordingStream(splits["train"].stream)
    rng = np.random.default_rng(3)
    side = dataset.image_size
    probe = {split: SplitTensors(torch.from_numpy(rng.random((12, 1, side, side), dtype=np.float32)), torch.arange(12) % 2)
             for split in ("train", "val", "test")}
    config = TrainConfig(objective="autoencoder", encoder="conv4", epochs=1, batch_size=4, device="cpu", seed=0)
    fit(config, splits, ("a", "b"), runtime=runtime, progress=False, probe_splits=probe)
    distributed.destroy_process_group()
    Path(out, f"rank{runtime.rank}.json").write_text(json.dumps({"seen": splits["train"].stream.seen,
                                                                  "world_size": runtime.world_size,
                                                                  "node": os.environ.get("GROUP_RANK")}))


if __name__ == "__main__":
    main(*sys.argv[1:])
