"""Dataset directories on S3 (or MinIO/Ceph): download once into a local cache, verified by digest.

``s3://bucket/prefix`` names a dataset directory uploaded as-is (``manifest.json`` beside
``images.npy``, ``labels.npy``, ``params.csv``). ``fetch_s3_dataset`` reads the remote
manifest, downloads the files it lists into ``<cache_dir>/<bucket>/<prefix>/<digest[:16]>/``
and checks every sha256 before anyone loads them. Keying the cache by digest means a
re-uploaded dataset gets a new directory: a cached copy is never silently overwritten, and
one that still verifies is reused without downloading again.

S3-compatible stores: ``MLFLOW_S3_ENDPOINT_URL`` (as MLflow uses it) or ``AWS_ENDPOINT_URL``
(as boto3 uses it) give the endpoint; credentials come from the usual boto3 chain.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path, PurePosixPath

from dlfm.constants import S3_CACHE_DIR
from dlfm.data.layout import MANIFEST_FILE, verify_dataset_dir
from dlfm.errors import DatasetError
from dlfm.outputs import remove_owned_tree

DEFAULT_CACHE_DIR = S3_CACHE_DIR  # relative to the working directory, beside simulated presets
MANIFEST = MANIFEST_FILE


def s3_endpoint_url(explicit: str | None = None) -> str | None:
    """The S3 endpoint: the explicit one, else MLFLOW_S3_ENDPOINT_URL, else AWS_ENDPOINT_URL, else AWS."""
    return explicit or os.environ.get("MLFLOW_S3_ENDPOINT_URL") or os.environ.get("AWS_ENDPOINT_URL") or None


def s3_client(endpoint_url: str | None = None):
    """A boto3 S3 client for the endpoint (see ``s3_endpoint_url``), with few retries so failures are quick."""
    import boto3
    from botocore.config import Config

    config = Config(retries={"max_attempts": 2, "mode": "standard"}, connect_timeout=5, read_timeout=60)
    return boto3.client("s3", endpoint_url=s3_endpoint_url(endpoint_url), config=config)


def split_s3_uri(uri: str) -> tuple[str, str]:
    """``s3://bucket/a/b/`` → ("bucket", "a/b"); DatasetError for anything else."""
    if not uri.startswith("s3://"):
        raise DatasetError(f"{uri!r} is not an s3:// URI; write s3://bucket/path/to/dataset")
    bucket, _, prefix = uri[len("s3://"):].partition("/")
    if not bucket:
        raise DatasetError(f"{uri!r} names no bucket; write s3://bucket/path/to/dataset")
    return bucket, prefix.strip("/")


def describe_s3_error(error: Exception, bucket: str, key: str | None = None, endpoint_url: str | None = None) -> str:
    """One clause saying what went wrong talking to S3 (missing bucket/key, credentials, endpoint)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError, PartialCredentialsError

    where = f" at {endpoint_url}" if endpoint_url else ""
    if isinstance(error, (NoCredentialsError, PartialCredentialsError)):
        return "no AWS credentials found; set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY (or AWS_PROFILE)"
    if isinstance(error, EndpointConnectionError):
        return f"the S3 endpoint{where or ' (AWS)'} is unreachable; check MLFLOW_S3_ENDPOINT_URL and the network"
    if isinstance(error, ClientError):
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code in ("NoSuchBucket",) or (code in ("404", "NotFound") and key is None):
            return f"bucket {bucket!r} does not exist{where}; create it or fix the bucket name"
        if code in ("NoSuchKey", "404", "NotFound"):
            return f"s3://{bucket}/{key} does not exist{where}"
        if code in ("403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch"):
            return f"access to bucket {bucket!r} was denied ({code}); check the AWS credentials and the bucket policy"
        return f"S3 refused the request ({code or error})"
    return f"S3 request failed ({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})"


def _safe_relative(name: str, uri: str) -> PurePosixPath:
    """A manifest file name as a relative path inside the dataset (no absolute paths, no '..')."""
    path = PurePosixPath(name)
    if path.is_absolute() or ".." in path.parts or not path.parts:
        raise DatasetError(f"dataset {uri} manifest lists an unsafe file name {name!r}; re-upload a dataset made by dlfm")
    return path


def _read_remote_manifest(client, bucket: str, prefix: str, uri: str, endpoint_url: str | None) -> tuple[bytes, dict]:
    key = f"{prefix}/{MANIFEST}" if prefix else MANIFEST
    try:
        body = client.get_object(Bucket=bucket, Key=key)["Body"].read()
    except Exception as error:  # noqa: BLE001 - every boto failure becomes one line naming the bucket or key
        reason = describe_s3_error(error, bucket, key, endpoint_url)
        if "does not exist" in reason and f"s3://{bucket}/{key}" in reason:
            reason += f", so {uri} is not a dlfm dataset directory; upload one with `aws s3 cp --recursive data/<name> {uri}`"
        raise DatasetError(f"cannot read dataset {uri}: {reason}") from None
    try:
        manifest = json.loads(body)
    except ValueError as error:
        raise DatasetError(f"dataset {uri} has an unreadable manifest.json ({error}); re-upload it") from None
    if not isinstance(manifest, dict) or not isinstance(manifest.get("files"), dict) or not isinstance(manifest.get("digest"), str):
        raise DatasetError(f"dataset {uri} has a manifest.json without files/digest; re-upload a dataset made by dlfm")
    return body, manifest


def read_s3_manifest(uri: str, endpoint_url: str | None = None) -> dict:
    """The parsed manifest.json at ``uri`` (a dataset directory or a sharded corpus), or one DatasetError line."""
    bucket, prefix = split_s3_uri(uri)
    endpoint_url = s3_endpoint_url(endpoint_url)
    return _read_remote_manifest(s3_client(endpoint_url), bucket, prefix, uri, endpoint_url)[1]


def _cached_copy_ok(path: Path, digest: str) -> bool:
    if not (path / MANIFEST).is_file():
        return False
    try:
        return verify_dataset_dir(path)["digest"] == digest
    except DatasetError:
        return False


def fetch_s3_dataset(uri: str, cache_dir: str | os.PathLike = DEFAULT_CACHE_DIR, endpoint_url: str | None = None) -> Path:
    """Download the dataset directory at ``uri`` (once) and return its verified local copy."""
    bucket, prefix = split_s3_uri(uri)
    endpoint_url = s3_endpoint_url(endpoint_url)
    client = s3_client(endpoint_url)
    manifest_bytes, manifest = _read_remote_manifest(client, bucket, prefix, uri, endpoint_url)
    digest = manifest["digest"]
    names = {name: _safe_relative(name, uri) for name in manifest["files"]}

    target = Path(cache_dir) / bucket / (prefix or "_root") / digest[:16]
    if _cached_copy_ok(target, digest):
        return target
    if target.exists():
        # Digest-keyed, so a copy here that fails verification is damaged, not another version;
        # only the files its manifest names (dlfm's download) are removed, never anything else.
        remove_owned_tree(target, [*(relative.as_posix() for relative in names.values()), MANIFEST])

    target.parent.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".download-", dir=target.parent))
    try:
        for name, relative in sorted(names.items()):
            key = f"{prefix}/{relative}" if prefix else str(relative)
            local = staging.joinpath(*relative.parts)
            local.parent.mkdir(parents=True, exist_ok=True)
            try:
                client.download_file(bucket, key, str(local))
            except Exception as error:  # noqa: BLE001 - one line naming the key
                raise DatasetError(
                    f"cannot download dataset {uri}: {describe_s3_error(error, bucket, key, endpoint_url)} "
                    "(the manifest lists it); re-upload the whole dataset directory"
                ) from None
        (staging / MANIFEST).write_bytes(manifest_bytes)
        try:
            verify_dataset_dir(staging)
        except DatasetError as error:
            # Name the URI, not the staging dir, and drop the local fix (force=true) that doesn't apply.
            problem = str(error).split(";")[0].replace(str(staging), uri)
            raise DatasetError(f"{problem}; the upload does not match its manifest, re-upload the dataset directory") from None
        staging.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return target


def upload_s3_dataset(path: str | os.PathLike, uri: str, endpoint_url: str | None = None) -> str:
    """Upload a verified dataset directory to ``uri`` (manifest last, so a half upload has no manifest)."""
    path = Path(path)
    manifest = verify_dataset_dir(path)
    bucket, prefix = split_s3_uri(uri)
    endpoint_url = s3_endpoint_url(endpoint_url)
    client = s3_client(endpoint_url)
    try:
        client.head_bucket(Bucket=bucket)
    except Exception as error:  # noqa: BLE001 - one line naming the bucket
        raise DatasetError(f"cannot upload {path} to {uri}: {describe_s3_error(error, bucket, None, endpoint_url)}") from None
    for name in [*sorted(manifest["files"]), MANIFEST]:
        key = f"{prefix}/{name}" if prefix else name
        try:
            client.upload_file(str(path / name), bucket, key)
        except Exception as error:  # noqa: BLE001 - one line naming the bucket or key
            raise DatasetError(f"cannot upload {path} to {uri}: {describe_s3_error(error, bucket, key, endpoint_url)}") from None
    return manifest["digest"]
