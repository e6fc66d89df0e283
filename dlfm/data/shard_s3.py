"""Sharded corpora on S3 (or MinIO/Ceph): each shard fetched when the stream reaches it, verified by its sha256, and
kept in an optional local cache (``DLFM_SHARD_CACHE``: a directory; unset, nothing is written locally).

The cache is keyed by the corpus digest (``<cache>/<bucket>/<prefix>/<digest[:16]>/<shard>``), like the s3://
dataset cache: a shard there is used only when its bytes still give the manifest's sha256, else fetched again.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from dlfm.data.remote import describe_s3_error, s3_client, s3_endpoint_url, split_s3_uri
from dlfm.data.shards import ShardedDataset, check_digest, check_shard_manifest
from dlfm.errors import DatasetError

CACHE_ENV = "DLFM_SHARD_CACHE"  # a local directory that keeps the shards streamed from S3 (optional)


class S3Shards:
    """Shard bytes from s3://bucket/prefix, verified, through the optional local cache."""

    def __init__(self, uri: str, digest: str, cache_dir: str | None = None):
        self.uri, self.where = uri, uri
        self.bucket, self.prefix = split_s3_uri(uri)
        self.endpoint = s3_endpoint_url()
        self.cache = Path(cache_dir) / self.bucket / (self.prefix or "_root") / digest[:16] if cache_dir else None
        self._client = None

    def __getstate__(self):  # DataLoader workers make their own client
        return {**self.__dict__, "_client": None}

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self.endpoint)
        return self._client

    def key(self, name: str) -> str:
        return f"{self.prefix}/{name}" if self.prefix else name

    def check_present(self, shards: list[dict]) -> None:
        """One DatasetError line naming the first listed shard that S3 does not hold at its size (one listing)."""
        sizes: dict[str, int] = {}
        try:
            for page in self.client.get_paginator("list_objects_v2").paginate(Bucket=self.bucket, Prefix=self.key("")):
                sizes.update({item["Key"]: item["Size"] for item in page.get("Contents", ())})
        except Exception as error:  # noqa: BLE001 - one line naming the bucket
            raise DatasetError(f"cannot list corpus {self.uri}: {describe_s3_error(error, self.bucket, None, self.endpoint)}") from None
        for entry in shards:
            size = sizes.get(self.key(entry["file"]))
            if size is None:
                raise DatasetError(f"corpus {self.uri} is missing shard {entry['file']}; upload the whole corpus directory")
            if size != entry["bytes"]:
                raise DatasetError(f"corpus {self.uri} is corrupt (shard {entry['file']} has {size} bytes, the manifest "
                                   f"says {entry['bytes']}); upload the whole corpus directory")

    def read(self, entry: dict) -> bytes:
        """A shard's verified bytes: from the cache when they still verify, else from S3 (then cached)."""
        cached = self.cache / entry["file"] if self.cache else None
        if cached is not None and cached.is_file():
            try:
                return check_digest(cached.read_bytes(), entry, str(self.cache))
            except DatasetError:
                pass  # a damaged cached copy: fetched again below and replaced (the cache is dlfm's own)
        try:
            data = self.client.get_object(Bucket=self.bucket, Key=self.key(entry["file"]))["Body"].read()
        except Exception as error:  # noqa: BLE001 - one line naming the key
            raise DatasetError(f"cannot read shard {entry['file']} of corpus {self.uri}: "
                               f"{describe_s3_error(error, self.bucket, self.key(entry['file']), self.endpoint)}") from None
        check_digest(data, entry, self.uri)
        if cached is not None:
            cached.parent.mkdir(parents=True, exist_ok=True)
            handle, scratch = tempfile.mkstemp(prefix=f".{entry['file']}.", dir=cached.parent)
            with os.fdopen(handle, "wb") as out:
                out.write(data)
            os.replace(scratch, cached)
        return data


def load_s3_shards(uri: str, manifest: dict, normalize: bool = True) -> ShardedDataset:
    """A sharded corpus on S3 (its manifest already read): checked, every shard present, streamed when trained on."""
    check_shard_manifest(manifest, uri)
    store = S3Shards(uri, manifest["digest"], os.environ.get(CACHE_ENV) or None)
    store.check_present(manifest["shards"])
    manifest = {**manifest, "source_uri": uri}
    return ShardedDataset(manifest, store, None, normalize)


__all__ = ["CACHE_ENV", "S3Shards", "load_s3_shards"]
