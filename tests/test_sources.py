"""The source table (dlfm.sources): one row per kind of dataset spec, each spec claimed by exactly one row."""

from __future__ import annotations

import json

import numpy as np
import pytest

from conftest import REPO
from dlfm.errors import DatasetError
from dlfm.sources import SOURCES, Request, Source, load_dataset, resolve_dataset, source_for
from test_architecture import imports_of

KINDS = {"preset", "corpus", "s3", "shards", "dataset_dir", "multi_dir", "deeplense", "image_folder"}


def test_one_row_per_spec_kind_each_its_own_file():
    names = [row.name for row in SOURCES]
    assert sorted(names) == sorted(KINDS) and len(set(names)) == len(names)
    for row in SOURCES:
        module = row.load.__module__
        assert module == row.claims.__module__ == f"dlfm.sources.{row.name}", row.name
        assert (REPO / "dlfm" / "sources" / f"{row.name}.py").is_file()


@pytest.fixture(scope="module")
def specs(tmp_path_factory, tiny_classification_dir) -> dict[str, str]:
    """One spec of each kind (the local ones built in a temporary folder)."""
    root = tmp_path_factory.mktemp("specs")
    multi = root / "multi"
    multi.mkdir()
    (multi / "manifest.json").write_text(json.dumps({"files": {}, "digest": "0" * 64, "image_sets": [{"name": "model_ii"}]}))
    deeplense = root / "deeplense"
    for folder in ("no", "sphere", "vort"):
        (deeplense / folder).mkdir(parents=True)
        np.save(deeplense / folder / "0.npy", np.zeros((1, 8, 8), np.float32))
    shards = root / "shards"
    shards.mkdir()
    (shards / "manifest.json").write_text(json.dumps({"files": {}, "digest": "0" * 64, "format": "dlfm-shards"}))
    images = root / "images"
    images.mkdir()
    np.save(images / "a.npy", np.zeros((8, 8), np.float32))
    return {"preset": "model_ii", "corpus": "pretrain_multi", "s3": "s3://bucket/tiny",
            "shards": str(shards), "dataset_dir": str(tiny_classification_dir), "multi_dir": str(multi), "deeplense": str(deeplense),
            "image_folder": str(images)}


def test_each_spec_is_claimed_by_exactly_its_row(specs):
    assert set(specs) == KINDS
    for kind, spec in specs.items():
        assert [row.name for row in SOURCES if row.claims(spec)] == [kind], spec
        assert source_for(spec).name == kind


def test_what_no_row_claims(tmp_path):
    (tmp_path / "empty").mkdir()
    (tmp_path / "file.npy").write_bytes(b"x")
    for spec in (str(tmp_path / "empty"), str(tmp_path / "file.npy"), str(tmp_path / "missing"), "model_zz", "a\0b", ""):
        assert source_for(spec) is None, spec
    with pytest.raises(DatasetError, match="neither a preset"):
        resolve_dataset(str(tmp_path / "missing"))
    with pytest.raises(DatasetError, match="neither a dlfm dataset"):
        resolve_dataset(str(tmp_path / "empty"))
    with pytest.raises(DatasetError, match="is a file; pass a dataset directory"):
        resolve_dataset(str(tmp_path / "file.npy"))


def test_local_rows_load_and_names_do_not(specs):
    assert load_dataset(specs["deeplense"]).manifest["format"] == "deeplense-folder"
    assert load_dataset(specs["image_folder"]).task == "unlabelled"
    assert load_dataset(specs["dataset_dir"], normalize=False).normalize is False
    with pytest.raises(DatasetError, match="does not exist"):
        load_dataset("model_ii")  # a path only: a preset's name is resolve_dataset's


def test_a_new_source_is_one_row():
    toy = Source("toy", "a toy:// spec", lambda spec: spec.startswith("toy://"), lambda spec, request: request.seed)
    table = (*SOURCES, toy)
    assert source_for("toy://x", table) is toy and source_for("toy://x") is None
    assert toy.load("toy://x", Request(seed=7)) == 7


@pytest.mark.parametrize("package", ["data", "simulation"])
def test_nothing_below_imports_the_sources(package):
    for path in sorted((REPO / "dlfm" / package).rglob("*.py")):
        upward = sorted(name for name in imports_of(path) if name.startswith("dlfm.sources"))
        assert not upward, f"{path.relative_to(REPO)} imports {upward}"
        if package == "data":
            assert not any(name.startswith("dlfm.simulation") for name in imports_of(path)), path
