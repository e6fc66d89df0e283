"""Reading the user's own DeepLense folders (tiny fixtures in each layout)."""

from __future__ import annotations

import numpy as np
import pytest

from dlfm.data import load_deeplense_folder
from dlfm.sources import load_dataset
from dlfm.errors import ConfigError, DatasetError

SIZE = 8


def _axion_file(image, mass):
    """DeepLenseSim sim_axion.py saved np.array([image, mass]) as an object array."""
    array = np.empty(2, dtype=object)
    array[0], array[1] = image, mass
    return array


def _make_folder(root, folders, n_per_class=10, shape=(1, SIZE, SIZE), axion_objects=True, seed=0):
    rng = np.random.default_rng(seed)
    for k, folder in enumerate(folders):
        (root / folder).mkdir(parents=True)
        for i in range(n_per_class):
            image = rng.random(shape).astype(np.float32) + k
            if k == 2 and axion_objects:
                np.save(root / folder / f"{i}.npy", _axion_file(image.reshape(SIZE, SIZE), 10.0 ** (-23 - i / 10)))
            else:
                np.save(root / folder / f"{i}.npy", image)
    return root


@pytest.mark.parametrize(
    ("folders", "shape"),
    [(("no", "sphere", "vort"), (1, SIZE, SIZE)), (("no_sub", "cdm", "axion"), (SIZE, SIZE))],
)
def test_layouts_load(tmp_path, folders, shape):
    root = _make_folder(tmp_path / "real", folders, shape=shape)
    dataset = load_deeplense_folder(root)
    assert dataset.class_names == ("no_sub", "cdm", "axion") and dataset.task == "classification"
    assert dataset.images.shape == (30, 1, SIZE, SIZE) and dataset.images.dtype == np.float32
    assert dataset.image_size == SIZE
    # stratified: round(10 * 0.15) = 2 val and 2 test images per class
    for split, n in (("train", 6), ("val", 2), ("test", 2)):
        assert np.bincount(dataset.get_labels(split), minlength=3).tolist() == [n, n, n]
    order = {"train": 0, "val": 1, "test": 2}
    assert np.all(np.diff([order[s] for s in dataset.split]) >= 0)  # rows ordered train, val, test
    # pixel values identify the class (image + k): labels follow the folders
    raw = load_deeplense_folder(root)
    raw.normalize = False
    means = raw.get_images("train").mean(axis=(1, 2, 3))
    np.testing.assert_array_equal(np.floor(means).astype(int), raw.get_labels("train"))
    axion = dataset.params[dataset.params["class_name"] == "axion"]["axion_mass"]
    assert axion.notna().all() and axion.between(1e-24, 1e-22).all()
    assert dataset.params[dataset.params["class_name"] != "axion"]["axion_mass"].isna().all()
    assert len(dataset.digest) == 64


def test_split_is_deterministic_and_seeded(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=20)
    a, b = load_deeplense_folder(root, seed=1), load_deeplense_folder(root, seed=1)
    assert list(a.params["file"]) == list(b.params["file"]) and a.digest == b.digest
    c = load_deeplense_folder(root, seed=2)
    assert list(a.params["file"]) != list(c.params["file"]) and a.digest != c.digest
    d = load_deeplense_folder(root, seed=1, val_fraction=0.25, test_fraction=0.25)
    assert d.manifest["split_sizes"] == {"train": 30, "val": 15, "test": 15}


def test_digest_changes_with_file_content(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=4)
    before = load_deeplense_folder(root).digest
    np.save(root / "no" / "0.npy", np.zeros((1, SIZE, SIZE), dtype=np.float32))
    assert load_deeplense_folder(root).digest != before


def test_train_val_folders_are_kept(tmp_path):
    root = tmp_path / "dataset"
    _make_folder(root / "train", ("no", "sphere", "vort"), n_per_class=6)
    _make_folder(root / "val", ("no", "sphere", "vort"), n_per_class=4, seed=1)
    dataset = load_dataset(root)
    assert dataset.manifest["split_sizes"] == {"train": 18, "val": 6, "test": 6}
    train_files = dataset.params.loc[dataset.params["split"] == "train", "file"]
    assert train_files.str.startswith("train/").all()
    assert not dataset.params.loc[dataset.params["split"] != "train", "file"].str.startswith("train/").any()


def test_load_dataset_dispatches_and_normalises(tmp_path):
    root = _make_folder(tmp_path / "real", ("no_sub", "cdm", "axion"), n_per_class=4)
    dataset = load_dataset(root)
    images = dataset.get_images("train")
    assert images.min() == 0.0 and images.max() == 1.0
    assert load_dataset(root, normalize=False).get_images("train").max() > 1.0


def test_corrupt_file_is_named(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=3)
    bad = root / "sphere" / "1.npy"
    bad.write_bytes(bad.read_bytes()[:40])
    with pytest.raises(DatasetError, match=r"sphere/1\.npy"):
        load_deeplense_folder(root)


def test_garbage_file_is_named(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=3)
    (root / "no" / "junk.npy").write_text("this is not numpy")
    with pytest.raises(DatasetError, match=r"no/junk\.npy"):
        load_deeplense_folder(root)


def test_object_array_outside_axion_folder_is_refused(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=3)
    np.save(root / "no" / "obj.npy", _axion_file(np.zeros((SIZE, SIZE)), 1e-23))
    with pytest.raises(DatasetError, match=r"no/obj\.npy"):
        load_deeplense_folder(root)


def test_wrong_shapes_are_named(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=3)
    np.save(root / "vort" / "wide.npy", np.zeros((SIZE, SIZE + 2), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"vort/wide\.npy has shape"):
        load_deeplense_folder(root)
    (root / "vort" / "wide.npy").unlink()
    np.save(root / "vort" / "big.npy", np.zeros((1, 2 * SIZE, 2 * SIZE), dtype=np.float32))
    with pytest.raises(DatasetError, match=r"big\.npy has shape"):
        load_deeplense_folder(root)


def test_empty_class_and_bad_fractions(tmp_path):
    root = _make_folder(tmp_path / "real", ("no", "sphere", "vort"), n_per_class=3)
    for file in (root / "sphere").iterdir():
        file.unlink()
    with pytest.raises(DatasetError, match="no .npy files for class sphere"):
        load_deeplense_folder(root)
    with pytest.raises(ConfigError, match="val_fraction"):
        load_deeplense_folder(root, val_fraction=1.5)
    with pytest.raises(ConfigError, match="no training images"):
        load_deeplense_folder(root, val_fraction=0.5, test_fraction=0.5)
