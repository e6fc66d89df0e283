"""Dataset directories: loading, normalisation, splits, verification and corrupt files."""

from __future__ import annotations

import io
import json
import shutil

import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from dlfm.data import REGRESSION_TARGETS, DERIVED_TARGETS, normalize_images, verify_dataset_dir
from dlfm.sources import load_dataset
from dlfm.data.layout import dataset_digest, sha256_file
from dlfm.errors import DatasetError
from dlfm.plots.examples import plot_examples
from dlfm.simulation import SimulationConfig, simulate_dataset


@pytest.fixture(scope="module")
def sim_dir(tmp_path_factory):
    config = SimulationConfig(n_train=9, n_val=4, n_test=3, seed=5)
    return simulate_dataset(config, tmp_path_factory.mktemp("data"), workers=1, progress=False)


@pytest.fixture(scope="module")
def regression_dir(tmp_path_factory):
    config = SimulationConfig(preset="regression", n_train=9, n_val=3, n_test=3, seed=5)
    return simulate_dataset(config, tmp_path_factory.mktemp("reg"), workers=1, progress=False)


@pytest.fixture
def copy_of(tmp_path, sim_dir):
    def make():
        target = tmp_path / sim_dir.name
        shutil.copytree(sim_dir, target)
        return target

    return make


def _rewrite_manifest(path):
    """Re-hash the files after a deliberate edit, so only the content check can fail."""
    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"] = {name: sha256_file(path / name) for name in manifest["files"]}
    manifest["digest"] = dataset_digest(manifest["files"])
    (path / "manifest.json").write_text(json.dumps(manifest))


def test_load_simulated_dataset(sim_dir):
    dataset = load_dataset(sim_dir)
    assert isinstance(dataset.images, np.memmap)
    assert dataset.images.shape == (16, 1, 64, 64) and dataset.images.dtype == np.float32
    assert dataset.image_size == 64
    assert dataset.class_names == ("no_sub", "cdm", "axion") and dataset.task == "classification"
    assert dataset.digest == json.loads((sim_dir / "manifest.json").read_text())["digest"]
    assert list(dataset.split) == ["train"] * 9 + ["val"] * 4 + ["test"] * 3
    # balanced: class k gets n // 3, the first n % 3 classes one more
    assert np.bincount(dataset.get_labels("train"), minlength=3).tolist() == [3, 3, 3]
    assert np.bincount(dataset.get_labels("val"), minlength=3).tolist() == [2, 1, 1]
    assert np.bincount(dataset.get_labels("test"), minlength=3).tolist() == [1, 1, 1]
    assert dataset.get_labels("val").dtype == np.int64

    val = dataset.get_images("val")
    assert val.shape == (4, 1, 64, 64) and val.dtype == np.float32
    flat = val.reshape(4, -1)
    np.testing.assert_allclose(flat.min(axis=1), 0.0)
    np.testing.assert_allclose(flat.max(axis=1), 1.0)

    params = dataset.get_params("test")
    assert len(params) == 3 and list(params.index) == [0, 1, 2]
    assert set(REGRESSION_TARGETS + DERIVED_TARGETS) <= set(params.columns)
    axion = dataset.params[dataset.params["class_name"] == "axion"]
    assert axion["axion_mass"].between(1e-24, 1e-22).all()
    assert (axion["n_subhalo"] == 100).all()
    assert dataset.params.loc[dataset.params["class_name"] != "axion", "axion_mass"].isna().all()


def test_raw_flux_when_not_normalised(sim_dir):
    dataset = load_dataset(sim_dir, normalize=False)
    np.testing.assert_array_equal(dataset.get_images("train"), np.asarray(dataset.images[:9]))
    with pytest.raises(DatasetError, match="unknown split"):
        dataset.get_images("holdout")


def test_normalize_images_constant_image_becomes_zeros():
    images = np.stack([np.full((1, 4, 4), 7.0), np.arange(16.0).reshape(1, 4, 4)]).astype(np.float32)
    out = normalize_images(images)
    assert out.dtype == np.float32
    np.testing.assert_array_equal(out[0], 0.0)
    assert out[1].min() == 0.0 and out[1].max() == 1.0
    assert images[0, 0, 0, 0] == 7.0  # input untouched


def test_verify_returns_manifest(sim_dir):
    assert verify_dataset_dir(sim_dir)["preset"] == "model_ii"


def test_truncated_images_named(copy_of):
    path = copy_of()
    data = (path / "images.npy").read_bytes()
    (path / "images.npy").write_bytes(data[: len(data) // 2])
    with pytest.raises(DatasetError, match=r"images\.npy sha256 mismatch"):
        load_dataset(path)
    with pytest.raises(DatasetError, match=r"images\.npy is refused: .* \(truncated, or the header was edited\)"):
        load_dataset(path, verify=False)


def test_missing_file_named(copy_of):
    path = copy_of()
    (path / "labels.npy").unlink()
    with pytest.raises(DatasetError, match=r"missing labels\.npy"):
        load_dataset(path)


def test_nan_pixels_rejected(copy_of):
    path = copy_of()
    images = np.load(path / "images.npy")
    images[2, 0, 5, 5] = np.nan
    np.save(path / "images.npy", images)
    _rewrite_manifest(path)
    with pytest.raises(DatasetError, match="NaN pixels"):
        load_dataset(path)


def test_labels_out_of_range_rejected(copy_of):
    path = copy_of()
    labels = np.load(path / "labels.npy")
    labels[0] = 7
    np.save(path / "labels.npy", labels)
    _rewrite_manifest(path)
    with pytest.raises(DatasetError, match=r"labels outside 0\.\.2"):
        load_dataset(path)


def test_bad_manifest(copy_of):
    path = copy_of()
    (path / "manifest.json").write_text("{not json")
    with pytest.raises(DatasetError, match="unreadable manifest.json"):
        load_dataset(path)


def test_missing_and_unknown_paths(tmp_path):
    with pytest.raises(DatasetError, match=r"does not exist; pass a preset name \(model_ii, model_i, model_iii, regression, pretrain, .*pretrain_multi\) or a"):
        load_dataset(tmp_path / "nowhere")
    (tmp_path / "empty").mkdir()
    with pytest.raises(DatasetError, match="neither a dlfm dataset"):
        load_dataset(tmp_path / "empty")


def test_regression_dataset_params(regression_dir):
    dataset = load_dataset(regression_dir)
    assert dataset.task == "regression" and dataset.class_names == ("lens",)
    assert (dataset.labels == 0).all()
    params = dataset.get_params("train")
    assert params["theta_E"].between(0.8, 1.6).all() and params["q"].between(0.5, 1.0).all()
    # CSV round-trips floats exactly
    again = pd.read_csv(io.StringIO(dataset.params.to_csv(index=False)))
    np.testing.assert_array_equal(again["theta_E"].to_numpy(), dataset.params["theta_E"].to_numpy())


@pytest.mark.parametrize("which", ["sim_dir", "regression_dir"])
def test_plot_examples_png(which, request, tmp_path):
    dataset = load_dataset(request.getfixturevalue(which))
    figure = plot_examples(dataset)
    assert isinstance(figure, Figure)
    out = tmp_path / "examples.png"
    figure.savefig(out, dpi=50)
    assert out.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
