"""The sharded corpus format, owned here: Parquet shards (pyarrow) beside one ``manifest.json``, written without
ever holding the corpus, and read shard by shard with every shard's sha256 checked as its bytes arrive.

Why Parquet through pyarrow (pinned in pyproject.toml), not WebDataset tar or LitData: pyarrow is already here
(an MLflow dependency), so no new package; a Parquet file has row groups (``ROW_GROUP_IMAGES`` images), which give
random access to any block of a shard without reading the rest; ``pyarrow.fs`` and boto3 read it from S3 as plain
byte ranges; and it is the most widely used columnar format, read by pandas, Spark, DuckDB and Hugging Face
datasets. Parquet has no shuffle of its own: the streaming reader (``dlfm.data.shard_stream``) shuffles the shard
order per epoch with a seeded generator and the images inside a window of a few shards (its shuffle buffer).

A sharded corpus directory holds ``<split>-<index:05d>.parquet`` shards with two columns, ``image`` (each image's raw
float32 flux, H×W little-endian bytes, a fixed-size binary) and ``label`` (int64), uncompressed (noisy flux does not
compress, and decoding is then a copy), and ``manifest.json`` with ``format: dlfm-shards``, the image size, the
split sizes, the class names, and ``shards`` (file, split, images, bytes, sha256 of each). As for a dataset
directory, ``files`` maps each shard to its sha256 and ``digest`` is one sha256 over them: the corpus's identity in
run inputs and registry tags. A missing or changed shard is one DatasetError line that names it.
"""

from __future__ import annotations

import hashlib
import io
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from dlfm.data.dataset import normalize_images
from dlfm.data.layout import (MANIFEST_FILE, SHARD_FILE, SPLITS, dataset_digest, read_manifest, write_manifest)
from dlfm.errors import DatasetError

SHARDS_FORMAT = "dlfm-shards"  # manifest "format" of a sharded corpus
SHARDS_FORMAT_VERSION = 1
ROW_GROUP_IMAGES = 256  # images per Parquet row group: the unit of random access inside a shard
REWRITE_HINT = "write the corpus again with `dlfm dataset import SRC --out DIR --shard-images K --force`"


def shard_name(split: str, index: int) -> str:
    """The file name of a split's ``index``-th shard."""
    return SHARD_FILE.format(split=split, index=index)


def is_sharded_manifest(manifest: dict | None) -> bool:
    """Whether a parsed manifest describes a sharded corpus."""
    return bool(manifest) and manifest.get("format") == SHARDS_FORMAT


def encode_shard(images: np.ndarray, labels: np.ndarray) -> bytes:
    """One Parquet shard's bytes: ``image`` (raw float32 H×W) and ``label`` columns, uncompressed, in row groups."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    images = np.ascontiguousarray(images, dtype="<f4")
    width = images[0].nbytes
    column = pa.FixedSizeBinaryArray.from_buffers(pa.binary(width), len(images), [None, pa.py_buffer(images)])
    table = pa.table({"image": column, "label": pa.array(np.asarray(labels, dtype=np.int64))})
    sink = io.BytesIO()
    pq.write_table(table, sink, compression="none", row_group_size=ROW_GROUP_IMAGES)
    return sink.getvalue()


def decode_shard(data: bytes, image_size: int, name: str) -> tuple[np.ndarray, np.ndarray]:
    """(raw float32 images N×1×H×H, int64 labels) of a verified shard's bytes; DatasetError naming it if malformed."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        table = pq.read_table(pa.BufferReader(data))
        column = table.column("image").combine_chunks()
        labels = table.column("label").to_numpy()
    except (pa.ArrowException, KeyError, ValueError, OSError) as error:
        raise DatasetError(f"shard {name} is not a readable dlfm shard ({error}); {REWRITE_HINT}") from None
    expected = image_size * image_size * 4
    if column.type != pa.binary(expected):
        raise DatasetError(f"shard {name} holds {column.type} images, expected {image_size}x{image_size} float32; {REWRITE_HINT}")
    images = np.frombuffer(column.buffers()[1], dtype="<f4", count=len(column) * image_size * image_size,
                           offset=column.offset * expected)
    return images.reshape(len(column), 1, image_size, image_size), np.array(labels, dtype=np.int64)  # writable: torch takes it


@dataclass
class ShardWriter:
    """Writes images as they come into rolling shards per split; holds at most one unwritten shard per split."""

    directory: Path
    shard_images: int  # images per shard (the last shard of a split may hold fewer)
    pending: dict = field(default_factory=dict)  # split → ([image blocks], [label blocks], images held)
    shards: list = field(default_factory=list)  # manifest entries of written shards
    image_size: int | None = None

    def add(self, images: np.ndarray, labels: np.ndarray, split: str) -> None:
        """Queue ``images`` (n×1×H×H float32) of one split; full shards are written at once."""
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r}; use one of: {', '.join(SPLITS)}")
        if self.image_size is None:
            self.image_size = int(images.shape[-1])
        blocks, label_blocks, held = self.pending.setdefault(split, ([], [], 0))
        blocks.append(np.asarray(images, dtype=np.float32))
        label_blocks.append(np.asarray(labels, dtype=np.int64))
        self.pending[split] = (blocks, label_blocks, held + len(images))
        while self.pending[split][2] >= self.shard_images:
            self._write(split, self.shard_images)

    def _write(self, split: str, count: int) -> None:
        blocks, label_blocks, held = self.pending[split]
        images, labels = np.concatenate(blocks), np.concatenate(label_blocks)
        data = encode_shard(images[:count], labels[:count])
        name = shard_name(split, sum(1 for entry in self.shards if entry["split"] == split))
        (self.directory / name).write_bytes(data)
        self.shards.append({"file": name, "split": split, "num_images": count, "bytes": len(data),
                            "sha256": hashlib.sha256(data).hexdigest()})
        rest = held - count
        self.pending[split] = ([images[count:]] if rest else [], [labels[count:]] if rest else [], rest)

    def finish(self, manifest: dict) -> dict:
        """Write the last partial shards and ``manifest.json`` (``manifest``: the writer's own fields); return it."""
        for split in list(self.pending):
            if self.pending[split][2]:
                self._write(split, self.pending[split][2])
        sizes = {split: sum(e["num_images"] for e in self.shards if e["split"] == split) for split in SPLITS}
        files = {entry["file"]: entry["sha256"] for entry in self.shards}
        manifest = {**manifest, "format": SHARDS_FORMAT, "format_version": SHARDS_FORMAT_VERSION,
                    "shard_format": "parquet", "image_size": self.image_size, "num_images": sum(sizes.values()),
                    "split_sizes": sizes, "shard_images": self.shard_images, "shards": self.shards,
                    "files": files, "digest": dataset_digest(files)}
        write_manifest(self.directory, manifest)
        return manifest


def check_shard_manifest(manifest: dict, where: str) -> None:
    """DatasetError unless a sharded manifest lists well-formed shards whose sha256s give its digest."""
    shards = manifest.get("shards")
    keys = {"file", "split", "num_images", "bytes", "sha256"}
    ok = isinstance(shards, list) and all(isinstance(e, dict) and keys <= set(e) and e["split"] in SPLITS for e in shards)
    # Each file is the name its split and position give: a manifest never points outside the corpus.
    if not ok or any(e["file"] != shard_name(e["split"], [s["file"] for s in shards if s["split"] == e["split"]].index(e["file"]))
                     for e in shards):
        raise DatasetError(f"corpus {where} has malformed shards in manifest.json; {REWRITE_HINT}")
    files = {e["file"]: e["sha256"] for e in shards}
    if files != manifest.get("files") or dataset_digest(files) != manifest.get("digest"):
        raise DatasetError(f"corpus {where} is corrupt (manifest digest mismatch); {REWRITE_HINT}")
    if not isinstance(manifest.get("image_size"), int) or not manifest.get("class_names"):
        raise DatasetError(f"corpus {where} manifest.json has no image_size or class_names; {REWRITE_HINT}")


def check_digest(data: bytes, entry: dict, where: str) -> bytes:
    """``data`` if it is the shard the manifest lists; else one DatasetError line naming the shard."""
    if len(data) != entry["bytes"] or hashlib.sha256(data).hexdigest() != entry["sha256"]:
        raise DatasetError(f"corpus {where} is corrupt (shard {entry['file']} sha256 mismatch); {REWRITE_HINT}")
    return data


class LocalShards:
    """Shard bytes from a local corpus directory."""

    def __init__(self, root: Path):
        self.root = root
        self.where = str(root)

    def check_present(self, shards: list[dict]) -> None:
        """One DatasetError line naming the first shard that is missing or of the wrong size (a cheap stat each)."""
        for entry in shards:
            path = self.root / entry["file"]
            if not path.is_file():
                raise DatasetError(f"corpus {self.where} is missing shard {entry['file']}; {REWRITE_HINT}")
            if path.stat().st_size != entry["bytes"]:
                raise DatasetError(f"corpus {self.where} is corrupt (shard {entry['file']} has {path.stat().st_size} bytes, "
                                   f"the manifest says {entry['bytes']}); {REWRITE_HINT}")

    def read(self, entry: dict) -> bytes:
        """A shard's verified bytes."""
        try:
            data = (self.root / entry["file"]).read_bytes()
        except OSError:
            raise DatasetError(f"corpus {self.where} is missing shard {entry['file']}; {REWRITE_HINT}") from None
        return check_digest(data, entry, self.where)


@dataclass
class ShardedDataset:
    """A sharded corpus: its manifest and a shard reader; train is streamed, val and test are read whole (small)."""

    manifest: dict
    store: object  # LocalShards or dlfm.data.shard_s3.S3Shards: read(entry) -> verified bytes
    root: Path | None
    normalize: bool = True

    @property
    def digest(self) -> str:
        return self.manifest["digest"]

    @property
    def image_size(self) -> int:
        return int(self.manifest["image_size"])

    @property
    def image_sizes(self) -> tuple[int, ...]:
        return (self.image_size,)

    @property
    def class_names(self) -> tuple[str, ...]:
        return tuple(self.manifest["class_names"])

    @property
    def task(self) -> str:
        return self.manifest.get("task", "unlabelled")

    def shards(self, split: str) -> list[dict]:
        """The manifest entries of a split's shards, in order."""
        return [entry for entry in self.manifest["shards"] if entry["split"] == split]

    def indices(self, split: str) -> range:
        """Row positions of a split (a range: nothing is held)."""
        return range(sum(entry["num_images"] for entry in self.shards(split)))

    def __len__(self) -> int:
        return int(self.manifest["num_images"])

    def get_images(self, split: str):
        """Refused: a sharded corpus is streamed, never read whole (it feeds pretraining, not the in-memory stages)."""
        raise DatasetError(f"{self.manifest.get('source_uri') or self.root} is a sharded corpus: it is streamed as "
                           "pretrain_dataset of autoencoder or mae; pass a dataset directory here "
                           "(dlfm dataset import without --shard-images)")

    get_labels = get_params = get_images

    def read_shard(self, entry: dict) -> tuple[np.ndarray, np.ndarray]:
        """(images, labels) of one shard, verified; images normalised per image if ``normalize``."""
        images, labels = decode_shard(self.store.read(entry), self.image_size, entry["file"])
        return (normalize_images(images) if self.normalize else np.array(images, dtype=np.float32)), labels

    def load_split(self, split: str) -> tuple[np.ndarray, np.ndarray]:
        """Every image and label of a (small) split in memory: val and test."""
        parts = [self.read_shard(entry) for entry in self.shards(split)]
        if not parts:
            return np.zeros((0, 1, self.image_size, self.image_size), np.float32), np.zeros(0, np.int64)
        return np.concatenate([p[0] for p in parts]), np.concatenate([p[1] for p in parts])


def load_sharded_dir(path: Path, normalize: bool = True) -> ShardedDataset:
    """A local sharded corpus: manifest checked, every shard present at its size (each sha256 is checked as it is read)."""
    manifest = read_manifest(path)
    if not is_sharded_manifest(manifest):
        raise DatasetError(f"{path / MANIFEST_FILE} is not a sharded corpus manifest; {REWRITE_HINT}")
    check_shard_manifest(manifest, str(path))
    store = LocalShards(path)
    store.check_present(manifest["shards"])
    return ShardedDataset(manifest, store, path, normalize)
