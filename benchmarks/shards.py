"""Sharded corpora (issue 32): training throughput streamed from shards vs in memory, and peak memory at scale.

Three measurements:

1. ``throughput``: the same ``dlfm.training.fit`` (autoencoder, conv4, 64 px, batch 64 as ``batch_size=auto`` gives on
   the CPU) on the same images, once with the train split in memory and once streamed from Parquet shards, in
   interleaved repeats (a burst of load on a shared machine hits both alike); prints img/s of each and the ratio.
2. ``rss``: a corpus larger than the process may hold (``--images`` of 64 px float32: 100000 = 1.64 GB) written as a
   ``.npy``, imported with ``dlfm dataset import --shard-images``, then one epoch of the train stream alone (every
   shard read, no model), then one pretraining epoch through ``fit`` (``--train-shards`` limits it on a slow CPU);
   each in its own process, whose peak RSS (VmHWM) is printed;
3. ``stream``: the CPU cost of the train stream alone per 1000 images, on the corpus ``rss`` wrote.

    .venv/bin/python benchmarks/shards.py throughput [--n 4096] [--shard-images 1000] [--epochs 1] [--repeats 3]
        [--device cpu|cuda] [--batch-size 64|auto] [--workers 0]
    .venv/bin/python benchmarks/shards.py rss [--images 100000] [--shard-images 1000] [--dir /tmp/dlfm-shards-bench]
        [--train-shards 0]
    .venv/bin/python benchmarks/shards.py stream [--dir /tmp/dlfm-shards-bench] [--train-shards 20]   # after rss
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

import numpy as np  # noqa: E402
import torch  # noqa: E402

SIDE = 64


def write_stack(path: Path, n: int) -> None:
    """An n×64×64 float32 .npy of noisy images with a bright centre, written a block at a time (never held)."""
    stack = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, SIDE, SIDE))
    for start in range(0, n, 2000):
        block = np.random.default_rng(start).random((min(2000, n - start), SIDE, SIDE), dtype=np.float32)
        block[:, 28:36, 28:36] += 2.0
        stack[start:start + len(block)] = block
    stack.flush()


def probe_set():
    from dlfm.training.context import SplitTensors

    rng = np.random.default_rng(3)
    return {split: SplitTensors(torch.from_numpy(rng.random((64, 1, SIDE, SIDE), dtype=np.float32)), torch.arange(64) % 2)
            for split in ("train", "val", "test")}


def fit_images_per_second(splits, epochs: int, seed: int, device: str = "cpu", batch_size="64") -> float:
    from dlfm.training import TrainConfig, fit

    batch = batch_size if batch_size == "auto" else int(batch_size)
    config = TrainConfig(objective="autoencoder", encoder="conv4", epochs=epochs, batch_size=batch, device=device, seed=seed)
    return fit(config, splits, ("a", "b"), progress=False, probe_splits=probe_set()).images_per_second


def epoch_rate(train, seed: int, device: str = "cpu", batch_size="64") -> tuple[float, float]:
    """(img/s, CPU-seconds per 1000 images) of one ``train_one_epoch`` (the loop's epoch, nothing else) on ``train``.

    CPU-seconds count every thread of this process, so reading shards in the training process shows up there;
    on a machine shared with other jobs they move much less than wall time does."""
    from dlfm.training import TrainConfig
    from dlfm.training.epoch import train_one_epoch
    from dlfm.training.loop import build_context
    from dlfm.training.runtime import make_runtime
    from dlfm.training.streaming import steps_per_epoch

    batch = batch_size if batch_size == "auto" else int(batch_size)
    runtime = make_runtime(device)
    config = TrainConfig(objective="autoencoder", encoder="conv4", epochs=1, batch_size=batch, device=device,
                         seed=seed).with_batch_resolved(runtime.device.type, train)
    runtime.channels_last = runtime.device.type == "cpu"
    ctx = build_context(config, 2, steps_per_epoch(train, config.batch_size, 0, 1), runtime, progress=False)
    if device == "cuda":
        torch.cuda.synchronize()
    wall, cpu = time.perf_counter(), time.process_time()
    train_one_epoch(ctx, train, 1)  # reads the sums once at its end: the device has finished
    wall, cpu = time.perf_counter() - wall, time.process_time() - cpu
    return train.num_images / wall, cpu / train.num_images * 1000


def throughput(args) -> None:
    from dlfm.cli import main as dlfm
    from dlfm.data.shards import load_sharded_dir
    from dlfm.data.tensors import split_tensors
    from dlfm.training.context import SplitTensors

    with tempfile.TemporaryDirectory() as tmp:
        write_stack(Path(tmp) / "stack.npy", args.n)
        dlfm(["dataset", "import", str(Path(tmp) / "stack.npy"), "--out", str(Path(tmp) / "corpus"),
              "--shard-images", str(args.shard_images), "--val-fraction", "0.02", "--test-fraction", "0.02"])
        corpus = load_sharded_dir(Path(tmp) / "corpus")
        streamed = {split: split_tensors(corpus, split) for split in ("train", "val", "test")}
        streamed["train"].stream.workers = args.workers
        images, labels = corpus.load_split("train")
        in_memory = {**streamed, "train": SplitTensors(torch.from_numpy(images), torch.from_numpy(labels))}
        if args.device == "cuda":  # the in-memory split on the device, as fit places it when it fits
            in_memory["train"] = in_memory["train"].placed(lambda tensor: tensor.to("cuda"))
        rates = {"in memory": [], "streamed": []}
        cpu = {"in memory": [], "streamed": []}
        for repeat in range(args.repeats):
            for name, splits in (("in memory", in_memory), ("streamed", streamed))[:: 1 if repeat % 2 == 0 else -1]:
                rate, cpu_s = epoch_rate(splits["train"], repeat, args.device, args.batch_size)
                rates[name].append(rate)
                cpu[name].append(cpu_s)
                print(f"repeat {repeat}  {name:9s}  {rate:7.0f} img/s  {cpu_s:6.2f} CPU-s/1000 img", flush=True)
    memory, stream = np.median(rates["in memory"]), np.median(rates["streamed"])
    ratios = [s / m for s, m in zip(rates["streamed"], rates["in memory"])]
    cpu_ratio = np.median(cpu["in memory"]) / np.median(cpu["streamed"])
    print(f"train images {corpus.indices('train').stop}, shards of {args.shard_images}, device {args.device}, batch "
          f"{args.batch_size}, loader workers {args.workers}, torch threads {torch.get_num_threads()}")
    print(f"median img/s: in memory {memory:.0f}, streamed {stream:.0f}; ratio streamed/in-memory {stream / memory:.3f} "
          f"(per repeat {', '.join(f'{r:.3f}' for r in ratios)})")
    print(f"median CPU-s per 1000 images: in memory {np.median(cpu['in memory']):.2f}, streamed {np.median(cpu['streamed']):.2f}; "
          f"throughput ratio they imply (CPU-bound) {cpu_ratio:.3f}")


def peak_rss(code: str, *argv: str) -> tuple[float, float]:
    """(peak RSS in MB (VmHWM), seconds) of ``python -c code argv`` in a fresh process."""
    wrapped = code + "\nprint('VmHWM', [l.split()[1] for l in open('/proc/self/status') if l.startswith('VmHWM')][0])"
    started = time.perf_counter()
    result = subprocess.run([sys.executable, "-c", wrapped, *argv], capture_output=True, text=True,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    if result.returncode:
        sys.exit(result.stderr[-3000:])
    return int(result.stdout.split("VmHWM")[-1].strip().strip("'[]")) / 1024, time.perf_counter() - started


EPOCH = """
import sys, numpy as np, torch
from pathlib import Path
sys.path.insert(0, sys.argv[2])
from benchmarks.shards import fit_images_per_second
from dlfm.data.shards import load_sharded_dir
from dlfm.data.tensors import split_tensors
corpus = load_sharded_dir(Path(sys.argv[1]))
train_shards = int(sys.argv[3])
if train_shards:  # pretrain on the first shards only (a slow CPU): the same stream, fewer steps
    train = corpus.shards("train")[:train_shards]
    corpus.manifest = {**corpus.manifest, "shards": train + corpus.shards("val") + corpus.shards("test")}
splits = {split: split_tensors(corpus, split) for split in ("train", "val", "test")}
print("img/s", fit_images_per_second(splits, 1, 0))
"""

STREAM = """
import sys
from pathlib import Path
from dlfm.data.shards import load_sharded_dir
from dlfm.data.tensors import split_tensors
train = split_tensors(load_sharded_dir(Path(sys.argv[1])), "train")
steps = train.stream.steps(1, 64, 1, set(), 0)
seen = sum(len(labels) for _, (_, labels, _, _) in zip(range(steps), train.stream.batches(1, 64, 0, 1, set(), 0, False)))
print("images", seen)
"""


def rss(args) -> None:
    root = Path(args.dir)
    root.mkdir(parents=True, exist_ok=True)
    source, corpus = root / "stack.npy", root / "corpus"
    if not source.exists():
        write_stack(source, args.images)
    print(f"corpus {source}: {args.images} images of {SIDE}x{SIDE} float32, {source.stat().st_size / 1e9:.2f} GB")
    mb, seconds = peak_rss("import sys; from dlfm.cli import main; main(sys.argv[1:])", "dataset", "import", str(source),
                           "--out", str(corpus), "--shard-images", str(args.shard_images), "--force",
                           "--val-fraction", "0.005", "--test-fraction", "0.005")
    print(f"import --shard-images {args.shard_images}: peak RSS {mb:.0f} MB, {seconds:.0f} s")
    mb, seconds = peak_rss(STREAM, str(corpus))
    print(f"one epoch of the train stream (every shard read, verified, decoded, normalised, shuffled, batched at 64; "
          f"no model): peak RSS {mb:.0f} MB, {seconds:.0f} s")
    what = f"the first {args.train_shards} train shards" if args.train_shards else "the whole train split"
    mb, seconds = peak_rss(EPOCH, str(corpus), str(REPO), str(args.train_shards))
    print(f"one pretraining epoch streamed over {what} (fit: autoencoder conv4, batch 64, CPU): peak RSS {mb:.0f} MB, {seconds:.0f} s")


def stream_cost(args) -> None:
    """CPU-seconds per 1000 images of the train stream alone (read, verify, decode, normalise, shuffle, batch)."""
    from dlfm.data.shard_stream import ShardStream
    from dlfm.data.shards import load_sharded_dir

    corpus = load_sharded_dir(Path(args.dir) / "corpus")  # written by the rss mode
    corpus.manifest = {**corpus.manifest, "shards": corpus.shards("train")[:args.train_shards or None]}
    stream = ShardStream(corpus)
    for repeat in range(args.repeats):
        wall, cpu = time.perf_counter(), time.process_time()
        n = sum(len(labels) for _, labels, _, _ in stream.batches(1, 64, 0, 1, set(), repeat, False))
        print(f"streamed {n} images: {(time.process_time() - cpu) / n * 1000:.3f} CPU-s per 1000 images, "
              f"{n / (time.perf_counter() - wall):.0f} img/s", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="what", required=True)
    one = sub.add_parser("throughput")
    one.add_argument("--n", type=int, default=4096)
    one.add_argument("--shard-images", type=int, default=1000)
    one.add_argument("--epochs", type=int, default=1)
    one.add_argument("--repeats", type=int, default=3)
    one.add_argument("--device", default="cpu")
    one.add_argument("--batch-size", dest="batch_size", default="64", help="an integer, or auto (what batch_size=auto picks)")
    one.add_argument("--workers", type=int, default=0, help="DataLoader processes reading shards")
    two = sub.add_parser("rss")
    two.add_argument("--images", type=int, default=100000)
    two.add_argument("--shard-images", type=int, default=1000)
    two.add_argument("--dir", default="/tmp/dlfm-shards-bench")
    two.add_argument("--train-shards", dest="train_shards", type=int, default=0,
                     help="pretrain on this many train shards only (0 = all; the stream-only epoch always reads all)")
    three = sub.add_parser("stream")
    three.add_argument("--dir", default="/tmp/dlfm-shards-bench")
    three.add_argument("--train-shards", dest="train_shards", type=int, default=20)
    three.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    {"throughput": throughput, "rss": rss, "stream": stream_cost}[args.what](args)


if __name__ == "__main__":
    main()
