"""s3:// datasets against moto's S3 server: download once, verify by digest, one-line errors."""

from __future__ import annotations

import json

import pytest

from conftest import free_port
from dlfm.errors import DatasetError

BUCKET = "lensing-datasets"
S3_BUCKETS = (BUCKET,)  # created by the moto_s3 fixture (conftest)


@pytest.fixture(scope="module")
def s3_endpoint(moto_s3) -> str:
    """The endpoint of conftest's moto S3 server (fake credentials in the environment)."""
    return moto_s3.endpoint




@pytest.fixture(scope="module")
def uploaded(s3_endpoint, tiny_classification_dir) -> str:
    """The tiny classification dataset uploaded under s3://lensing-datasets/tiny."""
    from dlfm.data.remote import upload_s3_dataset

    uri = f"s3://{BUCKET}/tiny"
    upload_s3_dataset(tiny_classification_dir, uri)
    return uri


def test_fetch_verifies_and_reuses_the_cache(uploaded, tiny_classification_dir, tmp_path):
    from dlfm.data import verify_dataset_dir
    from dlfm.data.remote import fetch_s3_dataset

    local = fetch_s3_dataset(uploaded, cache_dir=tmp_path)
    expected = verify_dataset_dir(tiny_classification_dir)["digest"]
    assert verify_dataset_dir(local)["digest"] == expected
    assert local.is_relative_to(tmp_path) and local.name == expected[:16]
    stamps = {p.name: p.stat().st_mtime_ns for p in local.iterdir()}

    again = fetch_s3_dataset(uploaded, cache_dir=tmp_path)
    assert again == local
    assert {p.name: p.stat().st_mtime_ns for p in again.iterdir()} == stamps  # reused, not downloaded again


def test_damaged_cache_is_downloaded_again(uploaded, tmp_path):
    from dlfm.data import verify_dataset_dir
    from dlfm.data.remote import fetch_s3_dataset

    local = fetch_s3_dataset(uploaded, cache_dir=tmp_path)
    with open(local / "labels.npy", "r+b") as handle:
        handle.seek(-1, 2)
        handle.write(b"\x7f")
    assert fetch_s3_dataset(uploaded, cache_dir=tmp_path) == local
    verify_dataset_dir(local)


def test_resolve_dataset_routes_s3_and_records_the_uri(uploaded, tmp_path, monkeypatch):
    from dlfm.sources import resolve_dataset, source_for

    monkeypatch.chdir(tmp_path)  # the cache is <DATA_DIR>/s3-cache, relative to the working directory
    assert source_for(uploaded).name == "s3"
    dataset = resolve_dataset(uploaded)
    assert dataset.task == "classification" and len(dataset) > 0
    assert dataset.manifest["source_uri"] == uploaded
    assert (tmp_path / "data" / "s3-cache" / BUCKET / "tiny").is_dir()


def test_missing_bucket_names_it(s3_endpoint, tmp_path):
    from dlfm.data.remote import fetch_s3_dataset

    with pytest.raises(DatasetError, match="bucket 'no-such-bucket' does not exist") as info:
        fetch_s3_dataset("s3://no-such-bucket/tiny", cache_dir=tmp_path)
    assert "\n" not in str(info.value)


def test_missing_dataset_names_the_key(uploaded, tmp_path):
    from dlfm.data.remote import fetch_s3_dataset

    with pytest.raises(DatasetError, match=rf"s3://{BUCKET}/nothing-here/manifest.json does not exist.*not a dlfm dataset"):
        fetch_s3_dataset(f"s3://{BUCKET}/nothing-here", cache_dir=tmp_path)


def test_corrupt_upload_is_refused(s3_endpoint, tiny_classification_dir, tmp_path):
    from dlfm.data.remote import fetch_s3_dataset, s3_client, upload_s3_dataset

    uri = f"s3://{BUCKET}/corrupt"
    upload_s3_dataset(tiny_classification_dir, uri)
    s3_client().put_object(Bucket=BUCKET, Key="corrupt/labels.npy", Body=b"not the labels")
    with pytest.raises(DatasetError, match=r"s3://lensing-datasets/corrupt is corrupt \(labels.npy sha256 mismatch\).*re-upload"):
        fetch_s3_dataset(uri, cache_dir=tmp_path)
    assert not any(p.name.startswith(".download-") for p in (tmp_path / BUCKET / "corrupt").iterdir())


def test_missing_listed_file_names_the_key(s3_endpoint, tiny_classification_dir, tmp_path):
    from dlfm.data.remote import fetch_s3_dataset, s3_client, upload_s3_dataset

    uri = f"s3://{BUCKET}/partial"
    upload_s3_dataset(tiny_classification_dir, uri)
    s3_client().delete_object(Bucket=BUCKET, Key="partial/params.csv")
    with pytest.raises(DatasetError, match=rf"s3://{BUCKET}/partial/params.csv does not exist"):
        fetch_s3_dataset(uri, cache_dir=tmp_path)


def test_unsafe_manifest_names_are_refused(s3_endpoint, tmp_path):
    from dlfm.data.remote import fetch_s3_dataset, s3_client

    manifest = {"files": {"../../escape.npy": "0" * 64}, "digest": "0" * 64}
    s3_client().put_object(Bucket=BUCKET, Key="evil/manifest.json", Body=json.dumps(manifest).encode())
    with pytest.raises(DatasetError, match="unsafe file name"):
        fetch_s3_dataset(f"s3://{BUCKET}/evil", cache_dir=tmp_path)


def test_unreachable_endpoint_is_one_line(tmp_path, monkeypatch):
    from dlfm.data.remote import fetch_s3_dataset

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("MLFLOW_S3_ENDPOINT_URL", f"http://127.0.0.1:{free_port()}")
    with pytest.raises(DatasetError, match="endpoint .* is unreachable"):
        fetch_s3_dataset("s3://any-bucket/tiny", cache_dir=tmp_path)


def test_bad_uri():
    from dlfm.data.remote import split_s3_uri

    assert split_s3_uri("s3://b/a/b/") == ("b", "a/b")
    with pytest.raises(DatasetError, match="names no bucket"):
        split_s3_uri("s3:///x")
