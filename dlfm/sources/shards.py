"""The sharded-corpus source: a directory of Parquet shards with a ``format: dlfm-shards`` manifest
(``dlfm.data.shards``), or the same on S3 (``dlfm.sources.s3`` hands it here once it has read the manifest).
Its train split is streamed shard by shard; nothing is read whole but val and test."""

from __future__ import annotations

from pathlib import Path

from dlfm.data.shards import is_sharded_manifest, load_sharded_dir
from dlfm.sources.base import Request, directory, manifest_of


def claims(spec: str) -> bool:
    """A directory whose manifest.json says ``format: dlfm-shards``."""
    path = directory(spec)
    return path is not None and is_sharded_manifest(manifest_of(path))


def load(spec: str, request: Request):
    """The corpus, its manifest checked and every shard present (each shard's sha256 is checked as it is read)."""
    return load_sharded_dir(Path(spec), normalize=request.normalize)


def load_remote(spec: str, manifest: dict, request: Request):
    """An s3:// corpus whose manifest is sharded: streamed from S3 (through the local cache when one is set)."""
    from dlfm.data.shard_s3 import load_s3_shards

    return load_s3_shards(spec, manifest, normalize=request.normalize)
