"""The remote source: ``s3://bucket/prefix``, a dataset directory uploaded as-is, downloaded once into a cache keyed
by its digest and verified (``dlfm.data.remote``), then read like a local one."""

from __future__ import annotations

from dlfm.constants import S3_CACHE_SUBDIR
import dlfm.sources.dataset_dir as dataset_dir
import dlfm.sources.multi_dir as multi_dir
import dlfm.sources.shards as shards
from dlfm.sources.base import Request


def claims(spec: str) -> bool:
    """An s3:// URI."""
    return spec.startswith("s3://")


def load(spec: str, request: Request):
    """Fetch (or reuse) the verified copy, read it, and record the URI so the run input names S3, not the cache.
    A sharded corpus is not fetched: the shards source streams it."""
    from dlfm.data.remote import fetch_s3_dataset, read_s3_manifest  # boto3 costs start-up time that local data does not need
    from dlfm.data.shards import is_sharded_manifest

    manifest = read_s3_manifest(spec)
    if is_sharded_manifest(manifest):
        return shards.load_remote(spec, manifest, request)

    local = str(fetch_s3_dataset(spec, cache_dir=f"{request.data_dir}/{S3_CACHE_SUBDIR}"))
    # The copy was verified as it came down; the directory rows check it again, as they do any directory.
    dataset = (multi_dir if multi_dir.claims(local) else dataset_dir).load(local, request)
    dataset.manifest["source_uri"] = spec
    return dataset
