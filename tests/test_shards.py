"""Issue 32: sharded corpora (Parquet shards + manifest), written without holding the corpus, streamed for pretraining
(local and from moto S3), read disjointly by torchrun ranks, resumed at shard granularity, refused when damaged."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from conftest import REPO, free_port, run_script
from dlfm.data.layout import dataset_digest
from dlfm.data.shards import ShardWriter, load_sharded_dir
from dlfm.errors import DatasetError
from shard_rank_worker import RecordingStream  # the two-rank worker's pass-through (tests/ is on the path)

BUCKET = "lensing-shards"
S3_BUCKETS = (BUCKET,)  # created by conftest's moto_s3 fixture
SIDE = 32  # px: conv4 takes it, and a corpus of tens of images stays small


def write_corpus(root: Path, n_train: int = 40, shard_images: int = 8, n_eval: int = 8) -> Path:
    """A sharded corpus whose labels are the images' ids (train 0..n_train-1), so a test can tell what was read."""
    rng = np.random.default_rng(0)
    root.mkdir(parents=True)
    writer = ShardWriter(root, shard_images)
    for split, start, count in (("train", 0, n_train), ("val", n_train, n_eval), ("test", n_train + n_eval, n_eval)):
        images = rng.random((count, 1, SIDE, SIDE), dtype=np.float32)
        images[:, :, 12:20, 12:20] += 2.0  # a bright centre: something an encoder can reconstruct
        writer.add(images, np.arange(start, start + count), split)
    writer.finish({"name": root.name, "task": "unlabelled", "class_names": ["unlabelled"]})
    return root


def epoch_ids(stream, epoch: int, rank: int = 0, world: int = 1, skip=(), batch: int = 4, seed: int = 0) -> list[int]:
    """The image ids one rank reads in one epoch, in order."""
    steps = stream.steps(epoch, batch, world, set(skip), seed)
    ids = [label for _, (_, labels, _, _) in zip(range(steps), stream.batches(epoch, batch, rank, world, set(skip), seed, False))
           for label in labels.tolist()]
    return ids


# ----------------------------------------------------------------------------- the format and the import writer

def test_import_streams_a_npy_into_shards_whose_digests_check(tmp_path):
    from dlfm.cli import main

    images = np.random.default_rng(1).random((50, SIDE, SIDE), dtype=np.float32)
    np.save(tmp_path / "stack.npy", images)
    main(["dataset", "import", str(tmp_path / "stack.npy"), "--out", str(tmp_path / "corpus"), "--shard-images", "8"])
    manifest = json.loads((tmp_path / "corpus" / "manifest.json").read_text())
    assert manifest["format"] == "dlfm-shards" and manifest["num_images"] == 50 and manifest["task"] == "unlabelled"
    for entry in manifest["shards"]:
        data = (tmp_path / "corpus" / entry["file"]).read_bytes()
        assert entry["bytes"] == len(data) and entry["sha256"] == hashlib.sha256(data).hexdigest()
        assert entry["num_images"] <= 8
    assert manifest["digest"] == dataset_digest({e["file"]: e["sha256"] for e in manifest["shards"]})
    corpus = load_sharded_dir(tmp_path / "corpus", normalize=False)
    read = np.concatenate([corpus.load_split(split)[0] for split in ("train", "val", "test")])
    assert sorted(map(bytes, read.reshape(50, -1))) == sorted(map(bytes, images[:, None].reshape(50, -1)))  # every image, bit for bit


def test_import_of_an_npz_and_of_class_folders(tmp_path):
    from dlfm.data.shard_import import import_sharded
    from dlfm.data.user_arrays import UserArrays

    rng = np.random.default_rng(2)
    np.savez(tmp_path / "set.npz", images=rng.random((30, 1, SIDE, SIDE)), labels=rng.integers(0, 3, 30))
    corpus = load_sharded_dir(import_sharded(UserArrays(images=str(tmp_path / "set.npz")), tmp_path / "a", 7))
    assert corpus.task == "classification" and corpus.class_names == ("class_0", "class_1", "class_2") and len(corpus) == 30
    for name in ("cdm", "no_sub"):
        (tmp_path / "folders" / name).mkdir(parents=True)
        for k in range(5):
            np.save(tmp_path / "folders" / name / f"{k}.npy", rng.random((SIDE, SIDE)))
    corpus = load_sharded_dir(import_sharded(UserArrays(images=str(tmp_path / "folders")), tmp_path / "b", 4))
    assert corpus.class_names == ("cdm", "no_sub") and len(corpus) == 10


def test_import_memory_is_bounded_by_a_few_shards(tmp_path):
    """Peak RSS of importing 8000 images (131 MB) exceeds that of importing 500 by less than a few 8 MB shards."""
    def peak_rss_mb(n: int) -> float:
        source = tmp_path / f"stack{n}.npy"
        stack = np.lib.format.open_memmap(source, mode="w+", dtype=np.float32, shape=(n, 64, 64))
        for start in range(0, n, 1000):
            stack[start:start + 1000] = np.random.default_rng(start).random((min(1000, n - start), 64, 64))
        stack.flush()
        del stack
        # VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork and exec, so it would report pytest's own peak
        code = ("import sys; from dlfm.cli import main; main(sys.argv[1:])\n"
                "print('peak', [line.split()[1] for line in open('/proc/self/status') if line.startswith('VmHWM')][0])")
        result = run_script(["-c", code, "dataset", "import", str(source), "--out", str(tmp_path / f"c{n}"),
                             "--shard-images", "500"], cwd=tmp_path)
        assert result.returncode == 0, result.stderr[-2000:]
        return int(result.stdout.split("peak")[-1]) / 1024

    small, large = peak_rss_mb(500), peak_rss_mb(8000)
    assert large - small < 60, f"importing 16x more images raised the peak RSS by {large - small:.0f} MB"


# ----------------------------------------------------------------------------- the stream

def test_each_epoch_reads_every_train_image_once_in_a_seeded_order(tmp_path):
    from dlfm.data.shard_stream import ShardStream

    stream = ShardStream(load_sharded_dir(write_corpus(tmp_path / "c")))
    first, again, second = epoch_ids(stream, 1), epoch_ids(stream, 1), epoch_ids(stream, 2)
    assert sorted(first) == list(range(40)) == sorted(second)
    assert first == again and first != second  # seeded per epoch
    assert first != sorted(first)  # shuffled inside the buffer, not read in file order


def test_two_ranks_read_disjoint_shards_that_cover_the_epoch(tmp_path):
    from dlfm.data.shard_stream import ShardStream

    stream = ShardStream(load_sharded_dir(write_corpus(tmp_path / "c")))
    ranks = [epoch_ids(stream, 1, rank, 2) for rank in (0, 1)]
    assert not set(ranks[0]) & set(ranks[1]) and sorted(ranks[0] + ranks[1]) == list(range(40))
    assert stream.steps(1, 4, 2, set(), 0) == max(len(ids) for ids in ranks) // 4  # every rank takes the longer rank's steps


def test_a_missing_or_corrupt_shard_is_refused_in_one_line_naming_it(tmp_path):
    from dlfm.data.shard_stream import ShardStream
    from dlfm.sources import load_dataset

    root = write_corpus(tmp_path / "c")
    (root / "train-00003.parquet").rename(tmp_path / "away.parquet")
    with pytest.raises(DatasetError, match=r"missing shard train-00003.parquet") as info:
        load_dataset(root)
    assert "\n" not in str(info.value)
    data = bytearray((tmp_path / "away.parquet").read_bytes())
    data[len(data) // 2] ^= 0xFF  # the same size, one byte changed: found when the stream reaches it
    (root / "train-00003.parquet").write_bytes(bytes(data))
    stream = ShardStream(load_dataset(root))
    with pytest.raises(DatasetError, match=r"corrupt \(shard train-00003.parquet sha256 mismatch\)") as info:
        epoch_ids(stream, 1)
    assert "\n" not in str(info.value)


# ----------------------------------------------------------------------------- pretraining on shards

class StopAfter:
    """The loop's stop flag, set (as SIGTERM would) after ``steps`` optimiser steps."""

    def __init__(self, steps: int):
        from dlfm.training.interrupt import StopRequest

        self.flag, self.left = StopRequest(), steps

    def __getattr__(self, name):
        return getattr(self.flag, name)

    def requested(self, world_size=1, device=None):
        self.left -= 1
        if self.left < 0:
            self.flag.set("SIGTERM")
        return self.flag.requested(world_size, device)


def corpus_splits(root: Path):
    from dlfm.data.tensors import split_tensors

    corpus = load_sharded_dir(root)
    splits = {split: split_tensors(corpus, split) for split in ("train", "val", "test")}
    splits["train"].stream = RecordingStream(splits["train"].stream)
    return splits


def probe_set():
    from dlfm.training.context import SplitTensors

    rng = np.random.default_rng(3)
    return {split: SplitTensors(torch.from_numpy(rng.random((12, 1, SIDE, SIDE), dtype=np.float32)), torch.arange(12) % 2)
            for split in ("train", "val", "test")}


def test_pretraining_streams_the_corpus_and_resumes_mid_epoch_at_shard_granularity(tmp_path):
    from dlfm.training import TrainConfig, fit
    from dlfm.training.interrupt import TrainingInterrupted

    root = write_corpus(tmp_path / "c", n_train=32, shard_images=4)  # 8 shards: 4 windows of 2, one step of 8 each
    config = TrainConfig(objective="autoencoder", encoder="conv4", epochs=1, batch_size=8, device="cpu", seed=0,
                         checkpoint_every_s=0)
    splits = corpus_splits(root)
    result = fit(config, splits, ("a", "b"), progress=False, probe_splits=probe_set())
    assert sorted(splits["train"].stream.seen) == list(range(32))  # one epoch: every image once
    assert np.isfinite(result.history[0]["train/loss_autoencoder"])

    saved = []
    splits = corpus_splits(root)
    with pytest.raises(TrainingInterrupted):
        fit(config, splits, ("a", "b"), on_epoch_end=lambda epoch, metrics, make: saved.append(make()),
            progress=False, stop=StopAfter(2), probe_splits=probe_set())
    state = saved[-1]
    assert state["epoch"] == 0 and state["stream"]["epoch"] == 1 and len(state["stream"]["windows_done"]) == 3
    # the ids of the windows trained on, from the same seeded plan (train shard k holds ids 4k..4k+3)
    windows = splits["train"].stream.stream.windows(1, 0, 1, 0)
    done_ids = {4 * int(entry["file"][6:11]) + i for w in state["stream"]["windows_done"] for entry in windows[w] for i in range(4)}
    state = torch.load(_saved(tmp_path, state), weights_only=True)  # what the stage logs loads weights-only

    splits = corpus_splits(root)
    fit(config, splits, ("a", "b"), resume_state=state, progress=False, probe_splits=probe_set())
    resumed = set(splits["train"].stream.seen)
    assert resumed and not resumed & done_ids and resumed | done_ids == set(range(32))


def _saved(tmp_path: Path, state: dict) -> Path:
    path = tmp_path / "last.pt"
    torch.save(state, path)
    return path


@pytest.mark.slow  # a real subprocess with MLflow: about a minute on the loaded 2-core box
def test_mae_stage_pretrains_on_a_sharded_corpus_through_mlflow_run(tracking_uri, tiny_classification_dir, tmp_path):
    import mlflow

    from dlfm.cli import main

    big = tmp_path / "big"  # 64 px, as the downstream set

    stack = np.random.default_rng(5).random((48, 64, 64), dtype=np.float32)
    np.save(tmp_path / "stack.npy", stack)
    main(["dataset", "import", str(tmp_path / "stack.npy"), "--out", str(big), "--shard-images", "8"])
    result = run_script(["-m", "mlflow", "run", str(REPO), "-e", "mae", "--env-manager", "local", "--experiment-name", "shards",
                         "-P", f"dataset={tiny_classification_dir}", "-P", f"pretrain_dataset={big}",
                         "-P", "encoder=conv4", "-P", "epochs=1", "-P", "batch_size=8"],
                        cwd=tmp_path, env_extra={"PATH": f"{REPO / '.venv' / 'bin'}:" + os.environ["PATH"]})
    assert result.returncode == 0, result.stderr[-3000:]
    client = mlflow.MlflowClient()
    [run] = client.search_runs([e.experiment_id for e in client.search_experiments()], "tags.`dlfm.stage` = 'mae'")
    assert run.info.status == "FINISHED"
    assert run.data.tags["dlfm.pretrain_dataset_digest"] == load_sharded_dir(big).digest
    version = client.get_model_version("dlfm-encoder", run.data.tags["dlfm.registered_version"])
    assert version.tags["dataset_digest"] == load_sharded_dir(big).digest  # registry provenance names the corpus


@pytest.mark.slow  # two torchrun agents and their ranks: about a minute on the loaded 2-core box
def test_two_gloo_nodes_pretrain_on_disjoint_shards_that_cover_the_epoch(tmp_path):
    """Two torchrun agents meet through a c10d rendezvous, as two machines would (one process each, gloo)."""
    root = write_corpus(tmp_path / "c", n_train=40, shard_images=4)
    port = free_port()
    env = {**os.environ, "PYTHONPATH": f"{REPO}{os.pathsep}{REPO / 'tests'}", "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc-per-node=1", "--rdzv-backend=c10d",
               f"--rdzv-endpoint=127.0.0.1:{port}", "--rdzv-id=shards-test", str(REPO / "tests" / "shard_rank_worker.py"),
               str(root), str(tmp_path)]
    nodes = [subprocess.Popen(command, env=env, cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for _ in range(2)]
    outputs = [node.communicate(timeout=600)[0] for node in nodes]
    assert all(node.returncode == 0 for node in nodes), "\n".join(output[-2000:] for output in outputs)
    ranks = [json.loads((tmp_path / f"rank{rank}.json").read_text()) for rank in (0, 1)]
    assert {r["world_size"] for r in ranks} == {2} and {r["node"] for r in ranks} == {"0", "1"}  # two nodes, one rank each
    seen = [set(r["seen"]) for r in ranks]
    assert not seen[0] & seen[1]  # disjoint shards
    assert seen[0] | seen[1] == set(range(40))  # together, the whole epoch
    assert len(ranks[0]["seen"]) == len(ranks[1]["seen"])  # the same steps on both (DDP)


# ----------------------------------------------------------------------------- S3 (moto's server)

def upload(root: Path, client, prefix: str) -> str:
    """A corpus directory uploaded as-is (what `aws s3 cp --recursive` does), the manifest last."""
    for path in [*sorted(root.glob("*.parquet")), root / "manifest.json"]:
        client.upload_file(str(path), BUCKET, f"{prefix}/{path.name}")
    return f"s3://{BUCKET}/{prefix}"


def test_an_s3_corpus_is_streamed_verified_and_cached(moto_s3, tmp_path, monkeypatch):
    from dlfm.data.shard_stream import ShardStream
    from dlfm.sources import resolve_dataset

    uri = upload(write_corpus(tmp_path / "c"), moto_s3.client, "corpus")
    monkeypatch.setenv("DLFM_SHARD_CACHE", str(tmp_path / "cache"))
    corpus = resolve_dataset(uri)
    assert corpus.manifest["source_uri"] == uri and corpus.root is None  # streamed, not downloaded first
    assert not (tmp_path / "cache").exists()
    assert sorted(epoch_ids(ShardStream(corpus), 1)) == list(range(40))
    cached = sorted(p.name for p in (tmp_path / "cache").rglob("*.parquet"))
    assert cached == sorted(e["file"] for e in corpus.shards("train"))
    moto_s3.client.delete_object(Bucket=BUCKET, Key="corpus/train-00002.parquet")
    assert sorted(epoch_ids(ShardStream(corpus), 2)) == list(range(40))  # read from the verified cache


def test_a_damaged_s3_shard_is_refused_in_one_line_naming_it(moto_s3, tmp_path, monkeypatch):
    from dlfm.data.shard_stream import ShardStream
    from dlfm.sources import resolve_dataset

    monkeypatch.delenv("DLFM_SHARD_CACHE", raising=False)
    root = write_corpus(tmp_path / "c")
    uri = upload(root, moto_s3.client, "damaged")
    data = bytearray((root / "train-00001.parquet").read_bytes())
    data[100] ^= 0xFF
    moto_s3.client.put_object(Bucket=BUCKET, Key="damaged/train-00001.parquet", Body=bytes(data))
    with pytest.raises(DatasetError, match=rf"{uri} is corrupt \(shard train-00001.parquet sha256 mismatch\)") as info:
        epoch_ids(ShardStream(resolve_dataset(uri)), 1)
    assert "\n" not in str(info.value)
    moto_s3.client.delete_object(Bucket=BUCKET, Key="damaged/train-00004.parquet")
    with pytest.raises(DatasetError, match=rf"{uri} is missing shard train-00004.parquet"):
        resolve_dataset(uri)


def test_pretraining_streams_a_corpus_from_s3(moto_s3, tmp_path, monkeypatch):
    from dlfm.data.tensors import split_tensors
    from dlfm.sources import resolve_dataset
    from dlfm.training import TrainConfig, fit

    monkeypatch.delenv("DLFM_SHARD_CACHE", raising=False)
    uri = upload(write_corpus(tmp_path / "c", n_train=24), moto_s3.client, "pretrain")
    corpus = resolve_dataset(uri)
    splits = {split: split_tensors(corpus, split) for split in ("train", "val", "test")}
    splits["train"].stream = RecordingStream(splits["train"].stream)
    config = TrainConfig(objective="mae", encoder="conv4", epochs=1, batch_size=4, device="cpu", seed=0)
    result = fit(config, splits, ("a", "b"), progress=False, probe_splits=probe_set())
    assert sorted(splits["train"].stream.seen) == list(range(24))
    assert np.isfinite(result.final_metrics["val/masked_mse"])


# ----------------------------------------------------------------------------- simulate -P shard_images=K

def test_simulate_writes_shards_holding_the_same_images_as_images_npy(tmp_path):
    """Rendered a shard at a time by the pool, each image is bit for bit the row simulate writes into images.npy."""
    from dlfm.data.dataset import load_dataset_dir
    from dlfm.simulation import SimulationConfig, simulate_dataset
    from dlfm.simulation.sharded import simulate_shards

    config = SimulationConfig(preset="pretrain", n_train=20, n_val=6, n_test=6, seed=7)
    sharded = load_sharded_dir(simulate_shards(config, 8, out_dir=tmp_path, workers=2), normalize=False)
    whole = load_dataset_dir(simulate_dataset(config, out_dir=tmp_path, workers=1, progress=False), normalize=False)
    assert [e["num_images"] for e in sharded.shards("train")] == [8, 8, 4]
    assert not list(Path(sharded.root).glob(".staging*"))  # the pool's staging file is gone
    for split in ("train", "val", "test"):
        images, labels = sharded.load_split(split)
        assert np.array_equal(images, whole.get_images(split)) and np.array_equal(labels, whole.get_labels(split))
    assert sharded.manifest["config_digest"] == config.digest()
    again = simulate_shards(config, 8, out_dir=tmp_path)  # reused: verified, not rendered again
    assert load_sharded_dir(again).digest == sharded.digest


def test_a_sharded_corpus_as_the_in_memory_dataset_is_refused_in_one_line(tmp_path):
    from dlfm.stages.train import check_trainable
    from dlfm.training import TrainConfig

    corpus = load_sharded_dir(write_corpus(tmp_path / "c"))
    with pytest.raises(DatasetError, match=r"is a sharded corpus: it is streamed as pretrain_dataset") as info:
        check_trainable(TrainConfig(objective="mae", dataset=str(tmp_path / "c")), corpus)
    assert "\n" not in str(info.value)
